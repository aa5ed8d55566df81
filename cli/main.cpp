// tstl: train short, test long. The command-line entry point: dispatches to a subcommand and
// turns every error into a message on stderr and a non-zero exit.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "core/comm.h"
#include "core/dist.h"
#include "core/error.h"
#include "cli/commands.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const tstl::Args&);
};

const Command kCommands[] = {
    {"prepare", "tokenize text (or convert Megatron/flat token files) into an HDF5 token file", tstl::command_prepare},
    {"tokenizer", "train a SentencePiece tokenizer; show or try one", tstl::command_tokenizer},
    {"train", "train a model: tstl train --config FILE [--section.key value ...]", tstl::command_train},
    {"eval", "evaluate a checkpoint: eval ppl | eval passkey | eval attention", tstl::command_eval},
    {"generate", "continue a prompt with a checkpoint (KV cache, seeded sampling)", tstl::command_generate},
    {"report", "tables and plots of eval results: tstl report RUN_OR_JSON... --output DIR", tstl::command_report},
    {"export", "a rope checkpoint as a Hugging Face GPT-NeoX model: tstl export hf --checkpoint PATH --output DIR",
     tstl::command_export},
    {"info", "parameter counts, FLOPs per token and training memory of a config", tstl::command_info},
    {"bench", "measure this machine: bench peak (the sgemm peak that MFU divides by, cached)", tstl::command_bench},
    {"version", "print the version and the backends this binary was built with", tstl::command_version},
};

void print_usage(FILE* out) {
  std::fprintf(out, "usage: tstl COMMAND [options]   (tstl COMMAND --help for its options)\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-12s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    print_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  for (const Command& c : kCommands) {
    if (name != c.name) continue;
    try {
      return c.run(tstl::Args(argv + 2, argv + argc));
    } catch (const std::exception& e) {
      const tstl::DistEnv& env = tstl::dist_env();
      if (env.distributed()) {
        // The other ranks may be waiting in a collective for this one: end the whole job now.
        std::fprintf(stderr, "tstl %s: error on rank %d: %s\n", c.name, env.rank, e.what());
        std::fflush(stderr);
        tstl::abort_job(1);
      }
      std::fprintf(stderr, "tstl %s: error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "tstl: unknown command '%s'\n\n", name.c_str());
  print_usage(stderr);
  return 2;
}
