// The data subcommands of `tstl`: prepare (text -> token file) and tokenizer (train / info / encode).
#include <boost/program_options.hpp>

#include <cstdio>

#include "core/error.h"
#include "data/prepare.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "cli/options.h"

namespace po = boost::program_options;

namespace tstl {

namespace {

void print_split(const char* name, const PrepareSplitSummary& s) {
  std::printf("  %-5s %9lld %13lld %13lld %13.3f\n", name, static_cast<long long>(s.documents),
              static_cast<long long>(s.tokens), static_cast<long long>(s.text_bytes),
              s.tokens > 0 ? static_cast<double>(s.text_bytes) / static_cast<double>(s.tokens - s.documents) : 0.0);
}

}  // namespace

int command_prepare(const Args& args) {
  PrepareOptions options;
  std::string tokenizer_spec;
  po::options_description desc("tstl prepare options");
  desc.add_options()("help,h", "show this help")
      ("input", po::value(&options.inputs)->multitoken()->required(),
       ".txt files (one document each), .jsonl files (one {\"text\": ...} per line), directories of them; .gz allowed")
      ("tokenizer", po::value(&tokenizer_spec)->default_value("byte"), "byte | spm:MODEL_FILE")
      ("output", po::value(&options.output)->required(), "the token file to write (.h5)")
      ("val-fraction", po::value(&options.val_fraction)->default_value(0.05), "fraction of documents for validation, every k-th")
      ("val-documents", po::value(&options.val_documents)->multitoken(), "names of the validation documents (instead of --val-fraction)")
      ("max-documents", po::value(&options.max_documents)->default_value(0), "stop after N documents (0: all)")
      ("token-dtype", po::value(&options.token_dtype)->default_value("auto"), "auto | uint16 | uint32");
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm,
                          "usage: tstl prepare --input PATH... --tokenizer byte|spm:FILE --output FILE.h5 "
                          "[--val-fraction F | --val-documents NAME...] [--max-documents N]"))
    return 0;
  TSTL_CHECK(!(vm.count("val-documents") && !vm["val-fraction"].defaulted()),
             "give --val-fraction or --val-documents, not both");
  const auto tokenizer = make_tokenizer(tokenizer_spec);
  const PrepareSummary s = prepare_token_file(options, *tokenizer, stderr);
  std::printf("wrote %s: tokenizer %s, %s tokens, EOS %d after each document\n", options.output.c_str(),
              tokenizer->identity().c_str(), s.token_dtype.c_str(), tokenizer->eos_id());
  std::printf("  split documents        tokens    text bytes  bytes/token\n");
  print_split("train", s.train);
  print_split("val", s.val);
  if (s.skipped_empty > 0) std::printf("  (%lld empty documents skipped)\n", static_cast<long long>(s.skipped_empty));
  return 0;
}

namespace {

const char* kTokenizerUsage =
    "usage: tstl tokenizer train --input PATH... --vocab-size N --output tok.model [--model-type bpe|unigram]\n"
    "                            [--normalization identity|nmt_nfkc] [--max-sentences N] [--seed S]\n"
    "       tstl tokenizer info --tokenizer byte|spm:FILE\n"
    "       tstl tokenizer encode --tokenizer byte|spm:FILE --text TEXT\n"
    "       tstl tokenizer check --tokenizer byte|spm:FILE --tokens FILE.h5   (fails unless the file was written with it)";

int tokenizer_train(const Args& args) {
  SpmTrainOptions options;
  std::string output;
  po::options_description desc("tstl tokenizer train options");
  desc.add_options()("help,h", "show this help")
      ("input", po::value(&options.inputs)->multitoken()->required(), "text inputs, as for tstl prepare")
      ("vocab-size", po::value(&options.vocab_size)->required(), "number of pieces (> 260)")
      ("output", po::value(&output)->required(), "the .model file to write")
      ("model-type", po::value(&options.model_type)->default_value("bpe"), "bpe | unigram")
      ("normalization", po::value(&options.normalization)->default_value("identity"), "identity | nmt_nfkc")
      ("max-sentences", po::value(&options.max_sentences)->default_value(2000000), "lines sampled for training")
      ("seed", po::value(&options.seed)->default_value(1), "SentencePiece's random seed");
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm, kTokenizerUsage)) return 0;
  const std::string identity = train_spm(options, output);
  std::printf("wrote %s: %s\n", output.c_str(), identity.c_str());
  return 0;
}

// info, encode and check.
int tokenizer_inspect(const std::string& action, const Args& args) {
  std::string spec, text, tokens;
  po::options_description desc("tstl tokenizer info/encode options");
  desc.add_options()("help,h", "show this help")
      ("tokenizer", po::value(&spec)->required(), "byte | spm:FILE")
      ("text", po::value(&text), "text to encode")
      ("tokens", po::value(&tokens), "token file to check against the tokenizer");
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm, kTokenizerUsage)) return 0;
  const auto tok = make_tokenizer(spec);
  if (action == "check") {
    TSTL_CHECK(!tokens.empty(), "tokenizer check needs --tokens FILE.h5");
    const TokenFile file = TokenFile::open_file(tokens);
    check_tokenizer_matches(file, *tok);
    std::printf("%s matches tokenizer %s\n", tokens.c_str(), tok->identity().c_str());
  } else if (action == "info") {
    std::printf("identity %s\nvocab_size %lld\nbos_id %d\neos_id %d\npad_id %d\n", tok->identity().c_str(),
                static_cast<long long>(tok->vocab_size()), tok->bos_id(), tok->eos_id(), tok->pad_id());
  } else {
    const auto ids = tok->encode(text);
    for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? " " : "", ids[i]);
    std::printf("\n");
  }
  return 0;
}

}  // namespace

int command_tokenizer(const Args& args) {
  TSTL_CHECK(!args.empty(), "missing action\n", kTokenizerUsage);
  const std::string action = args[0];
  const Args rest(args.begin() + 1, args.end());
  if (action == "--help" || action == "-h") {
    std::printf("%s\n", kTokenizerUsage);
    return 0;
  }
  if (action == "train") return tokenizer_train(rest);
  if (action == "info" || action == "encode" || action == "check") return tokenizer_inspect(action, rest);
  TSTL_FAIL("unknown action '", action, "'\n", kTokenizerUsage);
}

}  // namespace tstl
