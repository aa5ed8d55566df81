// `tstl train --config FILE [--section.key value ...]`.
#include <cstdio>

#include "train/commands.h"
#include "train/config.h"
#include "train/trainer.h"

namespace tstl {

int command_train(const Args& args) {
  std::string path;
  std::vector<std::string> overrides;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      std::printf("usage: tstl train --config FILE [--section.key value ...]\n\n"
                  "Trains the model of the config on its token file (docs/training.md). Any config key can be\n"
                  "overridden on the command line. Keys:\n\n%s",
                  config_help().c_str());
      return 0;
    }
    if (args[i] == "--config") {
      TSTL_CHECK(i + 1 < args.size(), "--config needs a file name");
      path = args[++i];
    } else if (args[i].rfind("--config=", 0) == 0) {
      path = args[i].substr(9);
    } else {
      overrides.push_back(args[i]);
    }
  }
  TSTL_CHECK(!path.empty(), "tstl train needs --config FILE (see configs/)");
  return run_training(load_config(path, overrides));
}

}  // namespace tstl
