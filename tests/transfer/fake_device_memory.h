// A KvMemory that pretends to be device memory, for testing the CUDA IPC path without a GPU: its
// "handles" name it in a process-wide table, and copy_to_peer writes straight into the named memory
// (as a device copy through an IPC mapping would, bypassing the receiver's code). Faults are switches.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "transfer/transfer.h"

namespace tandem::transfer::testing {

class FakeDeviceMemory : public KvMemory {
 public:
  FakeDeviceMemory(int layers, int blocks, size_t block_bytes)
      : host_(create_host_kv_memory(layers, blocks, block_bytes)) {
    std::lock_guard<std::mutex> lock(table_mu());
    name_ = "fakedev" + std::to_string(next_id()++);
    table()[name_] = host_;
  }
  ~FakeDeviceMemory() override {
    std::lock_guard<std::mutex> lock(table_mu());
    table().erase(name_);
  }
  int num_layers() const override { return host_->num_layers(); }
  int num_blocks() const override { return host_->num_blocks(); }
  size_t block_bytes() const override { return host_->block_bytes(); }
  Status read_block(int layer, int block, std::span<std::byte> out) override { return host_->read_block(layer, block, out); }
  Status write_block(int layer, int block, std::span<const std::byte> in) override { return host_->write_block(layer, block, in); }
  StatusOr<std::string> export_device_handles() override { return name_; }
  bool can_reach(const std::string& peer) override { return reachable && peer.rfind("fakedev", 0) == 0; }
  Status copy_to_peer(const std::string& peer_handles, std::span<const BlockCopy> copies) override {
    ++copy_calls;
    if (unopenable) return Status::Unavailable("fake: cudaIpcOpenMemHandle failed");
    std::shared_ptr<KvMemory> peer;
    {
      std::lock_guard<std::mutex> lock(table_mu());
      auto it = table().find(peer_handles);
      if (it != table().end()) peer = it->second;
    }
    if (!peer) return Status::Unavailable("fake: no memory named " + peer_handles);
    std::vector<std::byte> buffer(block_bytes());
    for (const auto& c : copies) {
      TANDEM_RETURN_IF_ERROR(host_->read_block(c.layer, c.src_block, buffer));
      TANDEM_RETURN_IF_ERROR(peer->write_block(c.layer, c.dst_block, buffer));
    }
    return Status::Ok();
  }

  std::atomic<bool> reachable{true};
  std::atomic<bool> unopenable{false};
  std::atomic<int> copy_calls{0};

 private:
  static std::mutex& table_mu() {
    static std::mutex mu;
    return mu;
  }
  static std::map<std::string, std::shared_ptr<KvMemory>>& table() {
    static std::map<std::string, std::shared_ptr<KvMemory>> t;
    return t;
  }
  static int& next_id() {
    static int id = 0;
    return id;
  }
  std::shared_ptr<KvMemory> host_;
  std::string name_;
};

}  // namespace tandem::transfer::testing
