// In-process transfer backend for tests (see transfer.h): copies straight between KvMemory objects.
#include <chrono>
#include <map>
#include <mutex>
#include <vector>

#include "transfer/expectations.h"
#include "transfer/transfer.h"

namespace tandem::transfer {
namespace {

std::mutex g_mu;
struct Endpoint {
  std::weak_ptr<KvMemory> memory;
  std::shared_ptr<Expectations> expectations;
};
std::map<std::string, Endpoint> g_endpoints;  // GUARDED_BY(g_mu): address -> receiving side
int g_next_id = 0;                                           // GUARDED_BY(g_mu)

class MockBackend : public TransferBackend {
 public:
  MockBackend(std::shared_ptr<KvMemory> memory, const std::string& fabric) : memory_(std::move(memory)) {
    std::lock_guard<std::mutex> lock(g_mu);
    address_ = "mock://" + fabric + "/" + std::to_string(g_next_id++);
    g_endpoints[address_] = Endpoint{memory_, expectations_};
  }
  ~MockBackend() override { shutdown(); }
  std::string name() const override { return "mock"; }
  std::string address() const override { return address_; }
  StatusOr<TransferStats> push(const std::string& peer_address, const std::string& transfer_id,
                               std::span<const BlockCopy> copies, int) override {
    auto start = std::chrono::steady_clock::now();
    std::shared_ptr<KvMemory> peer;
    std::shared_ptr<Expectations> expectations;
    {
      std::lock_guard<std::mutex> lock(g_mu);
      auto it = g_endpoints.find(peer_address);
      if (it != g_endpoints.end()) {
        peer = it->second.memory.lock();
        expectations = it->second.expectations;
      }
    }
    if (!peer) return Status::Unavailable("no transfer endpoint at " + peer_address);
    if (peer->block_bytes() != memory_->block_bytes()) return Status::InvalidArgument("block sizes differ");
    std::vector<std::byte> buffer(memory_->block_bytes());
    TransferStats stats;
    stats.transport = "mock";
    for (const BlockCopy& copy : copies) {
      TANDEM_RETURN_IF_ERROR(memory_->read_block(copy.layer, copy.src_block, buffer));
      TANDEM_RETURN_IF_ERROR(expectations->write(*peer, transfer_id, copy.layer, copy.dst_block, buffer));
      stats.num_bytes += static_cast<int64_t>(buffer.size());
      ++stats.num_blocks;
    }
    stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return stats;
  }
  void expect(const std::string& transfer_id, std::vector<int32_t> dst_blocks) override {
    expectations_->expect(transfer_id, dst_blocks);
  }
  void forget(const std::string& transfer_id) override { expectations_->forget(transfer_id); }
  void shutdown() override {
    std::lock_guard<std::mutex> lock(g_mu);
    g_endpoints.erase(address_);
  }

 private:
  std::shared_ptr<KvMemory> memory_;
  std::shared_ptr<Expectations> expectations_ = std::make_shared<Expectations>();
  std::string address_;
};

}  // namespace

std::unique_ptr<TransferBackend> create_mock_backend(std::shared_ptr<KvMemory> memory, const std::string& fabric) {
  return std::make_unique<MockBackend>(std::move(memory), fabric);
}

}  // namespace tandem::transfer
