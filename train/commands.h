// The subcommands of the `tstl` binary. Each takes the arguments after its name and returns the
// process exit code; errors are thrown as tstl::Error and reported by main().
#pragma once

#include <string>
#include <vector>

namespace tstl {

using Args = std::vector<std::string>;

int command_version(const Args& args);
int command_info(const Args& args);
int command_train(const Args& args);
int command_prepare(const Args& args);
int command_tokenizer(const Args& args);

}  // namespace tstl
