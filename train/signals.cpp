#include "train/signals.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace tstl {

namespace {
std::atomic<int> g_stop{0};  // 0: none; -1: request_stop(); else the signal number
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs a lock-free flag");

void on_stop_signal(int sig) {
  int expected = 0;
  if (!g_stop.compare_exchange_strong(expected, sig)) {  // second signal: die the default way
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  static const char message[] =
      "\ntstl: stop requested; saving a checkpoint at the end of this step (signal again to exit now)\n";
  const ssize_t ignored = ::write(STDERR_FILENO, message, sizeof message - 1);  // async-signal-safe
  (void)ignored;
}
}  // namespace

void install_stop_handlers() {
  struct sigaction action;
  std::memset(&action, 0, sizeof action);
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // interrupted reads and writes resume
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

bool stop_requested() { return g_stop.load() != 0; }
int stop_signal() { return g_stop.load() > 0 ? g_stop.load() : 0; }
void request_stop() {
  int expected = 0;
  g_stop.compare_exchange_strong(expected, -1);
}
void clear_stop_request() { g_stop.store(0); }

}  // namespace tstl
