// In-process transfer backend for tests (see transfer.h): copies straight between KvMemory objects.
#include <chrono>
#include <map>
#include <mutex>
#include <vector>

#include "transfer/transfer.h"

namespace tandem::transfer {
namespace {

std::mutex g_mu;
std::map<std::string, std::weak_ptr<KvMemory>> g_endpoints;  // GUARDED_BY(g_mu): address -> memory
int g_next_id = 0;                                           // GUARDED_BY(g_mu)

class MockBackend : public TransferBackend {
 public:
  MockBackend(std::shared_ptr<KvMemory> memory, const std::string& fabric) : memory_(std::move(memory)) {
    std::lock_guard<std::mutex> lock(g_mu);
    address_ = "mock://" + fabric + "/" + std::to_string(g_next_id++);
    g_endpoints[address_] = memory_;
  }
  ~MockBackend() override { shutdown(); }
  std::string name() const override { return "mock"; }
  std::string address() const override { return address_; }
  StatusOr<TransferStats> push(const std::string& peer_address, const std::string&,
                               std::span<const BlockCopy> copies, int) override {
    auto start = std::chrono::steady_clock::now();
    std::shared_ptr<KvMemory> peer;
    {
      std::lock_guard<std::mutex> lock(g_mu);
      auto it = g_endpoints.find(peer_address);
      if (it != g_endpoints.end()) peer = it->second.lock();
    }
    if (!peer) return Status::Unavailable("no transfer endpoint at " + peer_address);
    if (peer->block_bytes() != memory_->block_bytes()) return Status::InvalidArgument("block sizes differ");
    std::vector<std::byte> buffer(memory_->block_bytes());
    TransferStats stats;
    for (const BlockCopy& copy : copies) {
      TANDEM_RETURN_IF_ERROR(memory_->read_block(copy.layer, copy.src_block, buffer));
      TANDEM_RETURN_IF_ERROR(peer->write_block(copy.layer, copy.dst_block, buffer));
      stats.num_bytes += static_cast<int64_t>(buffer.size());
      ++stats.num_blocks;
    }
    stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return stats;
  }
  void shutdown() override {
    std::lock_guard<std::mutex> lock(g_mu);
    g_endpoints.erase(address_);
  }

 private:
  std::shared_ptr<KvMemory> memory_;
  std::string address_;
};

}  // namespace

std::unique_ptr<TransferBackend> create_mock_backend(std::shared_ptr<KvMemory> memory, const std::string& fabric) {
  return std::make_unique<MockBackend>(std::move(memory), fabric);
}

}  // namespace tandem::transfer
