// The receiving side's table of expected transfers (TransferBackend::expect/forget), shared by
// the backends. Writes happen under the table's lock, so forget() is a barrier: after it returns no
// block of that transfer is written any more.
// Thread-safety: all methods are thread-safe.
#pragma once

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
  void expect(const std::string& id, const std::vector<int32_t>& blocks) {
    std::lock_guard<std::mutex> lock(mu_);
    expected_[id] = std::set<int32_t>(blocks.begin(), blocks.end());
  }
  void forget(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    expected_.erase(id);
  }
  // Writes one block of transfer `id` if it is expected and the block is one of its destinations.
  Status write(KvMemory& memory, const std::string& id, int layer, int block, std::span<const std::byte> bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = expected_.find(id);
    if (it == expected_.end()) return Status::NotFound("no transfer '" + id + "' is expected (it may have timed out)");
    if (!it->second.count(block)) {
      return Status::InvalidArgument("block " + std::to_string(block) + " is not a destination of transfer '" + id + "'");
    }
    return memory.write_block(layer, block, bytes);
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::set<int32_t>> expected_;  // GUARDED_BY(mu_)
};

}  // namespace tandem::transfer
