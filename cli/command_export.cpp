// `tstl export hf --checkpoint PATH --output DIR [--tokenizer SPEC]`: a rope checkpoint as a
// Hugging Face GPT-NeoX model directory (train/hf_export.h).
#include <boost/program_options.hpp>

#include <cstdio>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/error.h"
#include "train/hf_export.h"

namespace po = boost::program_options;

namespace tstl {

int command_export(const Args& args) {
  const char* usage = "usage: tstl export hf --checkpoint PATH --output DIR [--tokenizer SPEC]";
  TSTL_CHECK(!args.empty(), "missing the export format\n", usage);
  if (args[0] == "--help" || args[0] == "-h") {
    std::printf("%s\n", usage);
    return 0;
  }
  TSTL_CHECK(args[0] == "hf", "unknown export format '", args[0], "' (tstl exports hf: Hugging Face GPT-NeoX)\n", usage);
  HfExportOptions options;
  po::options_description desc("tstl export hf options");
  desc.add_options()("help,h", "show this help")
      ("checkpoint", po::value(&options.checkpoint)->required(), "a rope checkpoint (runs/NAME/checkpoints/step_*.h5)")
      ("output", po::value(&options.output_dir)->required(), "the model directory to write (created when missing)")
      ("tokenizer", po::value(&options.tokenizer), "spm:MODEL | hf:tokenizer.json instead of the run's data.tokenizer "
       "(a moved file, or the text form of an external:NAME run)");
  po::variables_map vm;
  if (!parse_command_line(Args(args.begin() + 1, args.end()), desc, vm, usage)) return 0;
  for (const std::string& file : export_hf(options)) std::printf("wrote %s\n", file.c_str());
  return 0;
}

}  // namespace tstl
