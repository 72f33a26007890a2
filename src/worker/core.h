// What every part of the worker shares (worker internals, not a public header): the options, the
// engine, the KV transport, the prefill queue, the load counters and the lifecycle flags.
//
// Ownership: Worker builds one Core and hands a shared_ptr to each part, so a thread that outlives
// Worker::run() (a remote prefill waiting on its peer) keeps the engine it uses alive.
// Thread-safety: the pointers and strings are set in the Worker's constructor and only read after;
// the counters and lifecycle flags are atomics; Lifecycle's mutex and condition variable only pace
// the run loop's waits (no data sits under them).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "cluster/prefill_queue.h"
#include "engine/engine.h"
#include "transfer/transfer.h"
#include "worker/worker.h"

namespace tandem::worker {

using Clock = std::chrono::steady_clock;

inline int64_t steady_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}
inline int64_t unix_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Totals reported in every heartbeat (the frontend's tandem_worker_* metrics).
struct Counters {
  std::atomic<int> prefills_in_flight{0};   // prefill side: accepted remote prefills not yet answered
  std::atomic<int> reservations{0};         // decode side: KV reservations held (KvReservationGuard)
  std::atomic<int64_t> transfer_bytes{0};   // both sides: KV bytes pushed or received
  std::atomic<int64_t> transfers{0};        // prefill side: KV pushes done
  std::atomic<int64_t> transfer_micros{0};  // prefill side: time spent pushing
  std::atomic<int64_t> fallbacks{0};        // decode side: remote prefills that fell back to local
};

// Stop and drain. A first stop request drains (the run loop tells the frontends, then waits until
// the worker holds nothing or drain_timeout_ms passed); `stop` ends everything.
struct Lifecycle {
  // How long a draining worker still takes requests routed before its frontends heard of the drain
  // (counted from the announcement); it does not call itself drained before this has passed, so a
  // request routed late is finished, not cut off by the exit.
  static constexpr int64_t kDrainGraceMs = 2000;

  std::atomic<bool> stop{false};
  std::atomic<int> stop_requests{0};
  std::atomic<int64_t> drain_started_ms{0};  // steady-clock ms when the drain was announced; 0 = not yet

  bool stop_requested() const { return stop_requests.load() > 0; }
  bool drain_grace_over() const {
    const int64_t started = drain_started_ms.load();
    // Not yet announced (a stop was requested, the loop has not told the frontends): inside the grace.
    return started != 0 && steady_now_ms() - started > kDrainGraceMs;
  }
  // Wakes the run loop (a stop request, a lost frontend). The empty critical section orders the
  // caller's flag change before a waiter's predicate check, so the wake-up cannot be missed.
  void wake() {
    { std::lock_guard<std::mutex> lock(mu); }
    cv.notify_all();
  }
  template <typename Predicate>
  void wait_for(std::chrono::milliseconds timeout, Predicate predicate) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, timeout, predicate);
  }

 private:
  std::mutex mu;
  std::condition_variable cv;
};

struct Core {
  WorkerOptions options;
  std::unique_ptr<engine::Engine> engine;
  std::shared_ptr<transfer::KvMemory> kv_memory;
  std::unique_ptr<transfer::TransferBackend> transfer;
  std::unique_ptr<cluster::PrefillQueue> queue;  // --prefill-queue; null without one
  std::string rpc_address;                       // host:port of this worker's request-plane listener
  Counters counters;
  Lifecycle lifecycle;

  bool decodes() const { return options.role != Role::kPrefill; }
  bool prefills() const { return options.role != Role::kDecode; }
};

}  // namespace tandem::worker
