// The NATS prefill queue's depth for the router (see prefill_queue_depth.h).
#include "frontend/prefill_queue_depth.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <string>

namespace tandem::frontend {

PrefillQueueDepth::PrefillQueueDepth(std::unique_ptr<cluster::PrefillQueue> queue, std::shared_ptr<PostGate> gate)
    : queue_(std::move(queue)), gate_(std::move(gate)) {}

PrefillQueueDepth::~PrefillQueueDepth() { stop(); }

void PrefillQueueDepth::start() {
  poller_ = std::thread([this, g = gate_] {
    while (!stop_.load()) {
      auto depth = queue_->depth();
      const bool up = depth.ok();
      const int64_t n = up ? *depth : 0;
      std::string reason = up ? "" : depth.status().message();
      g->post([this, up, n, reason] { on_reading(up, n, reason); });
      // Short sleeps, so that stop() does not wait out a whole period.
      for (int i = 0; i < 10 && !stop_.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
}

void PrefillQueueDepth::stop() {
  stop_.store(true);
  if (poller_.joinable()) poller_.join();
}

void PrefillQueueDepth::on_reading(bool up, int64_t depth, const std::string& reason) {
  if (up != up_) {
    if (up) {
      spdlog::info("event=prefill_queue_reachable stream={} depth={}", queue_->stream_name(), depth);
    } else {
      spdlog::warn("event=prefill_queue_unavailable reason=\"{}\"; remote prefills fall back to local prefill "
                   "until it returns", reason);
    }
  }
  up_ = up;
  depth_ = depth;
  routed_since_read_ = 0;
}

}  // namespace tandem::frontend
