// The engine backend's KV pools as the transfer layer's KvMemory (backend_kv_memory in worker.h).
#include <map>
#include <mutex>

#include "worker/worker.h"

namespace tandem::worker {
namespace {

// The device path goes through the backend's export/copy methods; descriptors are KvExports in their
// text form (backend::encode_kv_export), parsed once per peer.
class BackendKvMemory : public transfer::KvMemory {
 public:
  explicit BackendKvMemory(backend::Backend& backend) : backend_(backend) {}
  int num_layers() const override { return backend_.kv_cache_spec().num_layers; }
  int num_blocks() const override { return backend_.kv_cache_spec().num_blocks; }
  size_t block_bytes() const override { return backend_.kv_cache_spec().block_bytes(); }
  Status read_block(int layer, int block, std::span<std::byte> out) override {
    return backend_.read_kv_block(layer, block, out);
  }
  Status write_block(int layer, int block, std::span<const std::byte> in) override {
    return backend_.write_kv_block(layer, block, in);
  }
  StatusOr<std::string> export_device_handles() override {
    auto exported = backend_.export_kv_handles();
    if (!exported.ok()) return exported.status();
    return backend::encode_kv_export(*exported);
  }
  bool can_reach(const std::string& peer_handles) override {
    auto peer = parse(peer_handles);
    return peer.ok() && backend_.can_reach_peer(**peer);
  }
  // Copies arrive layer-major with the same blocks in every layer (PrefillServer::run_push): runs of layers
  // with identical block lists go in one backend call, so all layers of a prompt move in one launch.
  Status copy_to_peer(const std::string& peer_handles, std::span<const transfer::BlockCopy> copies) override {
    auto peer = parse(peer_handles);
    if (!peer.ok()) return peer.status();
    std::vector<std::vector<int32_t>> local(num_layers()), remote(num_layers());
    for (const auto& c : copies) {
      if (c.layer < 0 || c.layer >= num_layers()) return Status::InvalidArgument("KV copy names layer " + std::to_string(c.layer));
      local[c.layer].push_back(c.src_block);
      remote[c.layer].push_back(c.dst_block);
    }
    int begin = 0;
    while (begin < num_layers()) {
      int end = begin + 1;
      while (end < num_layers() && local[end] == local[begin] && remote[end] == remote[begin]) ++end;
      if (!local[begin].empty()) {
        TANDEM_RETURN_IF_ERROR(backend_.copy_blocks_to_peer(**peer, local[begin], remote[begin], begin, end));
      }
      begin = end;
    }
    return Status::Ok();
  }
  // NCCL links: the backend's, with the transfer layer's block names.
  std::string link_device() override { return backend_.kv_link_device(); }
  StatusOr<std::string> make_link_id() override { return backend_.make_kv_link_id(); }
  StatusOr<std::unique_ptr<transfer::KvLink>> open_link(const std::string& link_id, int rank) override {
    auto link = backend_.open_kv_link(link_id, rank, kLinkJoinTimeoutMs);
    if (!link.ok()) return link.status();
    return std::unique_ptr<transfer::KvLink>(new Link(std::move(*link)));
  }

 private:
  // How long a side waits for its peer to join a new link (the peer joins as soon as the claim is acked).
  static constexpr int kLinkJoinTimeoutMs = 30000;

  class Link : public transfer::KvLink {
   public:
    explicit Link(std::unique_ptr<backend::KvLink> link) : link_(std::move(link)) {}
    Status send(std::span<const transfer::BlockRef> blocks, int timeout_ms) override { return link_->send(convert(blocks), timeout_ms); }
    Status recv(std::span<const transfer::BlockRef> blocks, int timeout_ms) override { return link_->recv(convert(blocks), timeout_ms); }

   private:
    static std::vector<backend::KvBlockRef> convert(std::span<const transfer::BlockRef> blocks) {
      std::vector<backend::KvBlockRef> out(blocks.size());
      for (size_t i = 0; i < blocks.size(); ++i) out[i] = {blocks[i].layer, blocks[i].block};
      return out;
    }
    std::unique_ptr<backend::KvLink> link_;
  };

  StatusOr<const backend::KvExport*> parse(const std::string& text) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(text);
    if (it == peers_.end()) {
      auto decoded = backend::decode_kv_export(text);
      if (!decoded.ok()) return decoded.status();
      it = peers_.emplace(text, std::move(*decoded)).first;
    }
    return &it->second;  // std::map nodes stay put; entries are never erased
  }

  backend::Backend& backend_;
  std::mutex mu_;
  std::map<std::string, backend::KvExport> peers_;  // GUARDED_BY(mu_): parsed peer descriptors
};

}  // namespace

std::shared_ptr<transfer::KvMemory> backend_kv_memory(backend::Backend& backend) {
  return std::make_shared<BackendKvMemory>(backend);
}

}  // namespace tandem::worker
