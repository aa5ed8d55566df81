// `tstl eval ppl|passkey|attention`: the dispatcher and `tstl eval ppl`.
#include <boost/program_options.hpp>

#include <cstdio>

#include "cli/options.h"
#include "eval/ppl.h"

namespace po = boost::program_options;

namespace tstl {

namespace {

struct PplArguments {
  std::string checkpoint, data, split, lengths, json;
  ScalingArguments scaling;
  DeviceArguments device;
  int64_t stride = 0, batch_tokens = 0;
  bool non_overlapping = false, by_position = false;
  DocumentSelection selection;
};

// False when --help was shown.
bool parse_ppl_arguments(const Args& args, PplArguments& a) {
  po::options_description desc("tstl eval ppl options");
  desc.add_options()("help,h", "show this help")
      ("checkpoint", po::value(&a.checkpoint)->required(), "a checkpoint file")
      ("data", po::value(&a.data)->required(), "a token file written by tstl prepare with the checkpoint's tokenizer")
      ("split", po::value(&a.split)->default_value("val"), "train | val")
      ("lengths", po::value(&a.lengths)->required(), "window lengths, comma-separated: 128,256,512")
      ("stride", po::value(&a.stride)->default_value(0), "stride S of the sliding window (0: = the window)")
      ("non-overlapping", po::bool_switch(&a.non_overlapping), "S = the window (the default)")
      ("max-docs", po::value(&a.selection.max_docs)->default_value(0), "evaluate the first N documents (0: all)")
      ("max-doc-tokens", po::value(&a.selection.max_doc_tokens)->default_value(0), "cut each document to T tokens (0: all)")
      ("doc-offset", po::value(&a.selection.doc_offset)->default_value(0), "skip O tokens at the start of each document");
  add_scaling_options(desc, a.scaling,
                      "METHOD:FACTOR: pi, ntk, dynamic-ntk, yarn, alibi-interp, ntk-alibi, dynamic-ntk-alibi");
  add_device_options(desc, a.device);
  desc.add_options()
      ("by-position", po::bool_switch(&a.by_position), "also record the mean loss by position within the window")
      ("batch-tokens", po::value(&a.batch_tokens)->default_value(16384), "tokens per forward (windows batched)")
      ("json", po::value(&a.json)->required(), "write the results here");
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm,
                          "usage: tstl eval ppl --checkpoint PATH --data FILE.h5 [--split val] --lengths 128,256,... "
                          "[--stride S | --non-overlapping] [--max-docs N] [--max-doc-tokens T] [--doc-offset O] "
                          "[--scaling METHOD:FACTOR] [--logn] [--device cpu|cuda] [--dtype f32|bf16] [--by-position] --json OUT"))
    return false;
  TSTL_CHECK(!(a.non_overlapping && a.stride > 0), "give --stride or --non-overlapping, not both");
  TSTL_CHECK(vm["stride"].defaulted() || a.stride >= 1, "--stride must be >= 1, got ", a.stride,
             " (leave it out, or give --non-overlapping, for windows that do not overlap)");
  TSTL_CHECK(a.batch_tokens >= 1, "--batch-tokens must be >= 1, got ", a.batch_tokens);
  return true;
}

}  // namespace

int command_eval_ppl(const Args& args) {
  PplArguments a;
  if (!parse_ppl_arguments(args, a)) return 0;
  const std::vector<int64_t> lengths = parse_int_list(a.lengths, "--lengths");
  for (int64_t l : lengths) TSTL_CHECK(a.stride <= l, "--stride ", a.stride, " is longer than the window ", l);

  const InferenceModel model = load_for_inference(a.checkpoint, a.scaling, a.device);
  const TokenFile file = TokenFile::open_file(a.data);
  check_tokenizer_matches(file, *model.tokenizer);
  const std::vector<std::vector<int32_t>> docs = select_documents(file.split(a.split), a.selection);

  std::printf("eval ppl: %s, %zu documents of %s/%s, stride %s\n", describe(model).c_str(), docs.size(), a.data.c_str(),
              a.split.c_str(), a.stride > 0 ? std::to_string(a.stride).c_str() : "= window");
  std::printf("%8s %8s %10s %10s %10s\n", "length", "windows", "tokens", "mean NLL", "PPL");
  std::vector<PplResult> results;
  for (int64_t l : lengths) {
    results.push_back(with_memory_message(l, model.config(), [&] {
      return evaluate_ppl(*model.loaded.model, docs, l, a.stride, model.forward, a.batch_tokens, a.by_position);
    }));
    const PplResult& r = results.back();
    std::printf("%8lld %8lld %10lld %10.4f %10.3f\n", static_cast<long long>(l), static_cast<long long>(r.windows),
                static_cast<long long>(r.tokens), r.mean_nll, r.ppl);
    std::fflush(stdout);
  }
  write_ppl_json(a.json, model, {a.data, a.split, static_cast<int64_t>(docs.size()), a.selection}, results);
  std::printf("wrote %s\n", a.json.c_str());
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
