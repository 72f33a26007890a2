// PostGate: how threads that may outlive the frontend (connection readers, dialers, the etcd watcher,
// the NATS poller, an admin call to etcd) hand work to the frontend's I/O thread. Once the frontend
// closes the gate, posts are dropped instead of reaching a destroyed executor.
//
// Ownership: shared (std::shared_ptr) by the frontend and every such thread; `io` is not owned.
// Thread-safety: post() and close() may be called from any thread.
#pragma once

#include <functional>
#include <mutex>

#include "frontend/http.h"

namespace tandem::frontend {

struct PostGate {
  std::mutex mu;
  bool open = true;        // GUARDED_BY(mu)
  Executor* io = nullptr;  // GUARDED_BY(mu)

  void post(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu);
    if (open && io) io->post(std::move(fn));
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu);
    open = false;
  }
};

}  // namespace tandem::frontend
