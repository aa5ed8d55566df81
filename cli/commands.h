// The subcommands of the `tstl` binary. Each takes the arguments after its name and returns the
// process exit code; errors are thrown as tstl::Error and reported by main().
#pragma once

#include <string>
#include <vector>

namespace tstl {

using Args = std::vector<std::string>;

int command_version(const Args& args);
int command_bench(const Args& args);  // tstl bench peak
int command_info(const Args& args);
int command_train(const Args& args);
int command_prepare(const Args& args);
int command_tokenizer(const Args& args);
int command_eval(const Args& args);  // dispatches to the three below: tstl eval ppl|passkey|attention
int command_eval_ppl(const Args& args);
int command_eval_passkey(const Args& args);
int command_eval_attention(const Args& args);
int command_generate(const Args& args);
int command_report(const Args& args);
int command_export(const Args& args);  // tstl export hf

}  // namespace tstl
