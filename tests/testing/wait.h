// Waiting on what a test can see instead of sleeping a fixed time: a fixed sleep is too short on a
// loaded or sanitized run and wastes time on a fast one.
// Thread-safety: wait_until calls the predicate from the calling thread only.
#pragma once

#include <chrono>
#include <thread>

namespace tandem::testing {

// Calls `done` until it returns true or `timeout` has passed, pausing `poll` between calls; returns the
// last result, so a caller asserts on it and a timeout fails the test instead of hanging it.
template <typename Predicate>
bool wait_until(Predicate&& done, std::chrono::milliseconds timeout = std::chrono::seconds(10),
                std::chrono::milliseconds poll = std::chrono::milliseconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return done();
    std::this_thread::sleep_for(poll);
  }
  return true;
}

}  // namespace tandem::testing
