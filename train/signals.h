// Graceful stops: SIGINT and SIGTERM set a flag that the training loop polls at every step
// boundary (it then saves a checkpoint and exits 0). A second signal while a stop is pending
// restores the default action and re-raises it, so a second Ctrl-C ends the process at once.
#pragma once

namespace tstl {

void install_stop_handlers();  // SIGINT and SIGTERM; idempotent
bool stop_requested();
int stop_signal();  // the signal that requested the stop; 0 for none or request_stop()
void request_stop();  // the same flag, set programmatically (train.stop_at, tests)
void clear_stop_request();

}  // namespace tstl
