// A KvMemory with NCCL-like links, for testing the NCCL path's protocol without GPUs: link ids name a
// process-wide channel; open_link waits until both ranks have joined (or fails after a second, as a
// peer that never joins would); send() queues copies of its blocks and recv() takes them in order into
// its blocks. Faults and counters are switches.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "transfer/transfer.h"

namespace tandem::transfer::testing {

class FakeLinkMemory : public KvMemory {
 public:
  FakeLinkMemory(int layers, int blocks, size_t block_bytes, std::string device)
      : host_(create_host_kv_memory(layers, blocks, block_bytes)), device_(std::move(device)) {}
  int num_layers() const override { return host_->num_layers(); }
  int num_blocks() const override { return host_->num_blocks(); }
  size_t block_bytes() const override { return host_->block_bytes(); }
  Status read_block(int layer, int block, std::span<std::byte> out) override { return host_->read_block(layer, block, out); }
  Status write_block(int layer, int block, std::span<const std::byte> in) override { return host_->write_block(layer, block, in); }
  std::string link_device() override { return device_; }
  StatusOr<std::string> make_link_id() override {
    std::lock_guard<std::mutex> lock(mu());
    return "fakelink" + std::to_string(next_id()++);
  }
  StatusOr<std::unique_ptr<KvLink>> open_link(const std::string& link_id, int rank) override {
    ++opens;
    if (fail_open) return Status::Internal("fake: ncclCommInitRank failed");
    std::unique_lock<std::mutex> lock(mu());
    std::shared_ptr<Channel>& channel = channels()[link_id];
    if (!channel) channel = std::make_shared<Channel>();
    std::shared_ptr<Channel> c = channel;
    ++c->joined;
    cv().notify_all();
    if (!cv().wait_for(lock, std::chrono::seconds(1), [&] { return c->joined >= 2; })) {
      return Status::DeadlineExceeded("fake: the peer never joined link " + link_id);
    }
    return std::unique_ptr<KvLink>(new Link(this, c, rank));
  }

  std::atomic<bool> fail_open{false};
  std::atomic<bool> fail_send{false};
  std::atomic<int> opens{0};
  std::atomic<int> sends{0};

 private:
  struct Channel {
    int joined = 0;
    std::deque<std::vector<std::byte>> to[2];  // to[r]: blocks on their way to rank r
  };
  class Link : public KvLink {
   public:
    Link(FakeLinkMemory* owner, std::shared_ptr<Channel> channel, int rank) : owner_(owner), channel_(std::move(channel)), rank_(rank) {}
    Status send(std::span<const BlockRef> blocks, int timeout_ms) override {
      (void)timeout_ms;
      ++owner_->sends;
      if (owner_->fail_send) return Status::Internal("fake: ncclSend failed");
      std::vector<std::byte> bytes(owner_->block_bytes());
      for (const BlockRef& b : blocks) {
        TANDEM_RETURN_IF_ERROR(owner_->read_block(b.layer, b.block, bytes));
        std::lock_guard<std::mutex> lock(mu());
        channel_->to[1 - rank_].push_back(bytes);
      }
      cv().notify_all();
      return Status::Ok();
    }
    Status recv(std::span<const BlockRef> blocks, int timeout_ms) override {
      for (const BlockRef& b : blocks) {
        std::vector<std::byte> bytes;
        {
          std::unique_lock<std::mutex> lock(mu());
          if (!cv().wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return !channel_->to[rank_].empty(); })) {
            return Status::DeadlineExceeded("fake: no block arrived within " + std::to_string(timeout_ms) + " ms");
          }
          bytes = std::move(channel_->to[rank_].front());
          channel_->to[rank_].pop_front();
        }
        TANDEM_RETURN_IF_ERROR(owner_->write_block(b.layer, b.block, bytes));
      }
      return Status::Ok();
    }

   private:
    FakeLinkMemory* owner_;
    std::shared_ptr<Channel> channel_;
    int rank_;
  };
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static std::condition_variable& cv() {
    static std::condition_variable c;
    return c;
  }
  static std::map<std::string, std::shared_ptr<Channel>>& channels() {
    static std::map<std::string, std::shared_ptr<Channel>> c;
    return c;
  }
  static int& next_id() {
    static int id = 0;
    return id;
  }
  std::shared_ptr<KvMemory> host_;
  std::string device_;
};

}  // namespace tandem::transfer::testing
