// The receiving side's table of expected transfers (TransferBackend::expect/forget), shared by
// the backends. Writes happen under the table's lock, so forget() is a barrier: after it returns no
// block of that transfer is written any more. The device path writes from another process, so it
// claims the transfer first (checked like a write) and releases it when its copy is done; forget()
// waits for outstanding claims.
// Thread-safety: all methods are thread-safe.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "transfer/transfer.h"

namespace tandem::transfer {

class Expectations {
 public:
  // How long forget() waits for a claimed device copy to finish (a copy takes milliseconds; a pusher
  // that dies mid-copy drops its connection, which releases the claim).
  static constexpr int kClaimWaitMs = 30000;

  void expect(const std::string& id, const std::vector<int32_t>& blocks) {
    std::lock_guard<std::mutex> lock(mu_);
    expected_[id] = std::set<int32_t>(blocks.begin(), blocks.end());
  }
  void forget(const std::string& id) {
    std::unique_lock<std::mutex> lock(mu_);
    expected_.erase(id);
    bool released = cv_.wait_for(lock, std::chrono::milliseconds(kClaimWaitMs), [&] { return claims_.count(id) == 0; });
    if (!released) spdlog::error("event=kv_transfer_claim_stuck transfer_id={} wait_ms={}", id, kClaimWaitMs);
  }
  // Writes one block of transfer `id` if it is expected and the block is one of its destinations.
  Status write(KvMemory& memory, const std::string& id, int layer, int block, std::span<const std::byte> bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    TANDEM_RETURN_IF_ERROR(check(id, block));
    return memory.write_block(layer, block, bytes);
  }
  // Device path: the pusher may write `blocks` of transfer `id` until release(id). Refused as write()
  // refuses (NotFound, InvalidArgument).
  Status claim(const std::string& id, std::span<const int32_t> blocks) {
    std::lock_guard<std::mutex> lock(mu_);
    for (int32_t block : blocks) TANDEM_RETURN_IF_ERROR(check(id, block));
    ++claims_[id];
    return Status::Ok();
  }
  // REQUIRES: a successful claim(id) not yet released.
  void release(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = claims_.find(id);
    if (it == claims_.end()) return;
    if (--it->second == 0) claims_.erase(it);
    cv_.notify_all();
  }

 private:
  Status check(const std::string& id, int32_t block) const {
    auto it = expected_.find(id);
    if (it == expected_.end()) return Status::NotFound("no transfer '" + id + "' is expected (it may have timed out)");
    if (!it->second.count(block)) {
      return Status::InvalidArgument("block " + std::to_string(block) + " is not a destination of transfer '" + id + "'");
    }
    return Status::Ok();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::set<int32_t>> expected_;  // GUARDED_BY(mu_)
  std::map<std::string, int> claims_;                  // GUARDED_BY(mu_): outstanding device-path claims
};

}  // namespace tandem::transfer
