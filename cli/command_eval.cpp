// `tstl eval ppl|passkey|attention`: the dispatcher and `tstl eval ppl`.
#include <boost/program_options.hpp>

#include <cstdio>

#include "cli/options.h"
#include "core/json.h"
#include "eval/ppl.h"

namespace po = boost::program_options;

namespace tstl {

int command_eval_ppl(const Args& args) {
  std::string checkpoint, data, split_name, lengths_text, json_path;
  ScalingArguments scaling_args;
  int64_t stride = 0, batch_tokens = 0;
  bool non_overlapping = false, by_position = false;
  DocumentSelection selection;
  po::options_description desc("tstl eval ppl options");
  desc.add_options()("help,h", "show this help")
      ("checkpoint", po::value(&checkpoint)->required(), "a checkpoint file")
      ("data", po::value(&data)->required(), "a token file written by tstl prepare with the checkpoint's tokenizer")
      ("split", po::value(&split_name)->default_value("val"), "train | val")
      ("lengths", po::value(&lengths_text)->required(), "window lengths, comma-separated: 128,256,512")
      ("stride", po::value(&stride)->default_value(0), "stride S of the sliding window (0: = the window)")
      ("non-overlapping", po::bool_switch(&non_overlapping), "S = the window (the default)")
      ("max-docs", po::value(&selection.max_docs)->default_value(0), "evaluate the first N documents (0: all)")
      ("max-doc-tokens", po::value(&selection.max_doc_tokens)->default_value(0), "cut each document to T tokens (0: all)")
      ("doc-offset", po::value(&selection.doc_offset)->default_value(0), "skip O tokens at the start of each document");
  add_scaling_options(desc, scaling_args,
                      "METHOD:FACTOR: pi, ntk, dynamic-ntk, yarn, alibi-interp, ntk-alibi, dynamic-ntk-alibi");
  desc.add_options()
      ("by-position", po::bool_switch(&by_position), "also record the mean loss by position within the window")
      ("batch-tokens", po::value(&batch_tokens)->default_value(16384), "tokens per forward (windows batched)")
      ("json", po::value(&json_path)->required(), "write the results here");
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm,
                          "usage: tstl eval ppl --checkpoint PATH --data FILE.h5 [--split val] --lengths 128,256,... "
                          "[--stride S | --non-overlapping] [--max-docs N] [--max-doc-tokens T] [--doc-offset O] "
                          "[--scaling METHOD:FACTOR] [--logn] [--by-position] --json OUT"))
    return 0;
  TSTL_CHECK(!(non_overlapping && stride > 0), "give --stride or --non-overlapping, not both");
  TSTL_CHECK(stride >= 0, "--stride must be >= 0, got ", stride);
  TSTL_CHECK(batch_tokens >= 1, "--batch-tokens must be >= 1, got ", batch_tokens);
  const std::vector<int64_t> lengths = parse_int_list(lengths_text, "--lengths");
  for (int64_t l : lengths) TSTL_CHECK(stride <= l, "--stride ", stride, " is longer than the window ", l);

  const InferenceModel model = load_for_inference(checkpoint, scaling_args);
  const TokenFile file = TokenFile::open_file(data);
  check_tokenizer_matches(file, *model.tokenizer);
  const std::vector<std::vector<int32_t>> docs = select_documents(file.split(split_name), selection);

  std::printf("eval ppl: %s, %zu documents of %s/%s, stride %s\n", describe(model).c_str(), docs.size(), data.c_str(),
              split_name.c_str(), stride > 0 ? std::to_string(stride).c_str() : "= window");
  std::printf("%8s %8s %10s %10s %10s\n", "length", "windows", "tokens", "mean NLL", "PPL");
  std::vector<PplResult> results;
  for (int64_t l : lengths) {
    results.push_back(evaluate_ppl(*model.loaded.model, docs, l, stride, model.forward, batch_tokens, by_position));
    const PplResult& r = results.back();
    std::printf("%8lld %8lld %10lld %10.4f %10.3f\n", static_cast<long long>(l), static_cast<long long>(r.windows),
                static_cast<long long>(r.tokens), r.mean_nll, r.ppl);
    std::fflush(stdout);
  }

  JsonWriter json;
  json.begin_object();
  json.field("kind", "ppl");
  write_model_fields(json, model);
  json.field("data", data);
  json.field("split", split_name);
  json.field("documents", static_cast<double>(docs.size()));
  json.field("doc_offset", static_cast<double>(selection.doc_offset));
  json.field("max_doc_tokens", static_cast<double>(selection.max_doc_tokens));
  json.key("results");
  json.begin_array();
  for (const PplResult& r : results) {
    json.begin_object();
    json.field("length", static_cast<double>(r.length));
    json.field("stride", static_cast<double>(r.stride));
    json.field("windows", static_cast<double>(r.windows));
    json.field("tokens", static_cast<double>(r.tokens));
    json.field("nll", r.mean_nll);
    json.field("ppl", r.ppl);
    if (!r.position_loss.empty()) {
      json.key("position_loss");
      json.number_array(r.position_loss);
    }
    json.end_object();
  }
  json.end_array();
  json.end_object();
  write_text_file(json_path, json.str() + "\n");
  std::printf("wrote %s\n", json_path.c_str());
  return 0;
}

int command_eval(const Args& args) {
  const char* usage =
      "usage: tstl eval ppl ...        sliding-window perplexity by length\n"
      "       tstl eval passkey ...    passkey retrieval accuracy by length\n"
      "       tstl eval attention ...  attention scores and probabilities of chosen layers\n"
      "(tstl eval ACTION --help for its options)";
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::printf("%s\n", usage);
    return args.empty() ? 2 : 0;
  }
  const Args rest(args.begin() + 1, args.end());
  if (args[0] == "ppl") return command_eval_ppl(rest);
  if (args[0] == "passkey") return command_eval_passkey(rest);
  if (args[0] == "attention") return command_eval_attention(rest);
  TSTL_FAIL("unknown action '", args[0], "'\n", usage);
}

}  // namespace tstl
