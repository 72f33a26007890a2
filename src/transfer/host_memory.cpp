// KvMemory over plain host memory (see transfer.h).
#include <cstring>
#include <vector>

#include "transfer/transfer.h"

namespace tandem::transfer {
namespace {

class HostKvMemory : public KvMemory {
 public:
  HostKvMemory(int num_layers, int num_blocks, size_t block_bytes)
      : num_layers_(num_layers), num_blocks_(num_blocks), block_bytes_(block_bytes),
        bytes_(static_cast<size_t>(num_layers) * num_blocks * block_bytes) {}
  int num_layers() const override { return num_layers_; }
  int num_blocks() const override { return num_blocks_; }
  size_t block_bytes() const override { return block_bytes_; }
  Status read_block(int layer, int block, std::span<std::byte> out) override {
    TANDEM_RETURN_IF_ERROR(check(layer, block, out.size()));
    std::memcpy(out.data(), at(layer, block), block_bytes_);
    return Status::Ok();
  }
  Status write_block(int layer, int block, std::span<const std::byte> in) override {
    TANDEM_RETURN_IF_ERROR(check(layer, block, in.size()));
    std::memcpy(at(layer, block), in.data(), block_bytes_);
    return Status::Ok();
  }

 private:
  Status check(int layer, int block, size_t size) const {
    if (layer < 0 || layer >= num_layers_ || block < 0 || block >= num_blocks_) {
      return Status::InvalidArgument("block (layer " + std::to_string(layer) + ", block " + std::to_string(block) +
                                     ") is out of range");
    }
    if (size != block_bytes_) return Status::InvalidArgument("buffer is not one block");
    return Status::Ok();
  }
  std::byte* at(int layer, int block) {
    return bytes_.data() + (static_cast<size_t>(layer) * num_blocks_ + block) * block_bytes_;
  }
  const int num_layers_;
  const int num_blocks_;
  const size_t block_bytes_;
  std::vector<std::byte> bytes_;  // [num_layers, num_blocks, block_bytes], host
};

}  // namespace

std::shared_ptr<KvMemory> create_host_kv_memory(int num_layers, int num_blocks, size_t block_bytes) {
  return std::make_shared<HostKvMemory>(num_layers, num_blocks, block_bytes);
}

}  // namespace tandem::transfer
