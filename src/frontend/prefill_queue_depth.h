// The NATS prefill queue's depth as the frontend weighs it (--prefill-queue): a poller thread reads
// the stream's message count every ~100 ms and hands it to the I/O thread, where the router adds the
// remote prefills routed since that read (so that a burst between two reads still counts). Logs when
// NATS becomes unreachable and when it returns; while it is away, remote prefill is off.
//
// Ownership: owns the queue connection and the poller thread (stop() joins it).
// Thread-safety: start() and stop() from the owner's thread; every other method on the I/O thread,
// where the poller's readings land through the PostGate.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "cluster/prefill_queue.h"
#include "frontend/post_gate.h"

namespace tandem::frontend {

class PrefillQueueDepth {
 public:
  PrefillQueueDepth(std::unique_ptr<cluster::PrefillQueue> queue, std::shared_ptr<PostGate> gate);
  ~PrefillQueueDepth();
  void start();
  void stop();

  // The depth for --max-prefill-queue: the last reading plus what was routed since.
  int depth_for_routing() const { return static_cast<int>(depth_) + routed_since_read_; }
  // The last reading alone (the tandem_prefill_queue_depth gauge).
  int64_t depth() const { return depth_; }
  // Whether the last read reached NATS.
  bool up() const { return up_; }
  // A remote prefill was sent through the queue.
  void routed() { ++routed_since_read_; }

 private:
  void on_reading(bool up, int64_t depth, const std::string& reason);

  std::unique_ptr<cluster::PrefillQueue> queue_;
  std::shared_ptr<PostGate> gate_;
  std::thread poller_;
  std::atomic<bool> stop_{false};
  // I/O thread only.
  int64_t depth_ = 0;
  int routed_since_read_ = 0;
  bool up_ = false;
};

}  // namespace tandem::frontend
