// `tstl train --config FILE [--section.key value ...]`.
#include <cstdio>

#include "cli/options.h"
#include "train/config.h"
#include "train/trainer.h"

namespace tstl {

int command_train(const Args& args) {
  const ConfigArguments parsed = parse_config_arguments(args);
  if (parsed.help_requested) {
    std::printf("usage: tstl train --config FILE [--section.key value ...]\n\n"
                "Trains the model of the config on its token file (docs/training.md). Any config key can be\n"
                "overridden on the command line. Keys:\n\n%s",
                config_help().c_str());
    return 0;
  }
  TSTL_CHECK(!parsed.path.empty(), "tstl train needs --config FILE (see configs/)");
  return run_training(load_config(parsed.path, parsed.overrides));
}

}  // namespace tstl
