// Termination signals (SIGINT, SIGTERM) delivered to a callback on a thread of their own, so that
// the callback may take locks and notify condition variables (a signal handler may not).
#pragma once

#include <functional>

namespace tandem::cli {

// Blocks SIGINT/SIGTERM in the calling thread and every thread it starts afterwards, and starts a
// thread that calls `on_signal(signo)` for each one received. REQUIRES: called before any thread
// is started, once per process.
void handle_termination_signals(std::function<void(int)> on_signal);

}  // namespace tandem::cli
