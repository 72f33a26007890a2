// Termination signals on a thread of their own (see signals.h).
#include "cli/signals.h"

#include <pthread.h>
#include <signal.h>

#include <thread>

namespace tandem::cli {

void handle_termination_signals(std::function<void(int)> on_signal) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set, on_signal = std::move(on_signal)] {
    while (true) {
      int signo = 0;
      if (sigwait(&set, &signo) == 0) on_signal(signo);
    }
  }).detach();
}

}  // namespace tandem::cli
