// TCP transfer backend, with the CUDA IPC and NCCL paths on top (see transfer.h): the pusher streams
// (layer, block, bytes) records over a pooled connection to the receiver, which writes each block into
// its memory and acknowledges the whole transfer once every block is in place. On the CUDA IPC path the
// same connection carries only a claim and a release around the pusher's device-to-device copy; on the
// NCCL path a claim naming the pair's link and the blocks in the order they travel, answered once when
// the blocks are claimed and once when they have arrived (the receiver releases the claim itself). So
// the receiver's expect/forget barrier holds on every path; the completion the decode worker acts on is
// the request plane's RemotePrefillResult, sent after push() returns.
//
// Wire format (integers in network order):
//   push:    "TKV1" u32 | id_len u32 | num_blocks u32 | block_bytes u64 | id bytes |
//            num_blocks x (layer i32 | block i32 | block_bytes bytes)
//   claim:   "TKC1" u32 | id_len u32 | num_blocks u32 | id bytes | num_blocks x block i32
//   release: "TKR1" u32 | id_len u32 | id bytes
//   nccl:    "TKN1" u32 | id_len u32 | num_blocks u32 | link_len u32 | timeout_ms u32 | id bytes | link id bytes |
//            num_blocks x (layer i32 | block i32)          (two acks: claimed, then received)
//   ack:     "TKA1" u32 | status_code u32 | msg_len u32 | msg bytes      (after each of the above)
// Every connection is first secured as the process is set up (security/cluster_channel.h): TLS with
// cluster certificates, then the cluster key's handshake with a key; the frames then travel inside.
#include <arpa/inet.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/socket.h"
#include "common/byte_stream.h"
#include "security/cluster_channel.h"
#include "transfer/expectations.h"
#include "transfer/transfer.h"
#include "transfer/transport_choice.h"

namespace tandem::transfer {
namespace {

constexpr uint32_t kPushMagic = 0x544b5631;  // "TKV1"
constexpr uint32_t kAckMagic = 0x544b4131;   // "TKA1"
constexpr uint32_t kClaimMagic = 0x544b4331;   // "TKC1"
constexpr uint32_t kReleaseMagic = 0x544b5231; // "TKR1"
constexpr uint32_t kNcclMagic = 0x544b4e31;    // "TKN1"
constexpr uint32_t kMaxLinkIdBytes = 512;
constexpr uint32_t kMaxClaimBlocks = 1u << 24;
constexpr uint32_t kMaxIdBytes = 1024;

uint64_t hton64(uint64_t v) { return (static_cast<uint64_t>(htonl(v & 0xffffffffu)) << 32) | htonl(v >> 32); }
uint64_t ntoh64(uint64_t v) { return hton64(v); }

// A control message in one buffer, so that it goes out in one write and wakes the receiver once: the
// header words, the transfer id, then the payload words (all already in network order).
std::vector<std::byte> control_message(std::span<const uint32_t> header, const std::string& transfer_id,
                                       std::span<const uint32_t> payload = {}) {
  std::vector<std::byte> out(header.size_bytes() + transfer_id.size() + payload.size_bytes());
  std::byte* at = out.data();
  std::memcpy(at, header.data(), header.size_bytes());
  at += header.size_bytes();
  std::memcpy(at, transfer_id.data(), transfer_id.size());
  at += transfer_id.size();
  if (!payload.empty()) std::memcpy(at, payload.data(), payload.size_bytes());
  return out;
}

Status send_ack(net::ByteStream& stream, const Status& result) {
  uint32_t ack[3] = {htonl(kAckMagic), htonl(static_cast<uint32_t>(result.code())),
                     htonl(static_cast<uint32_t>(result.message().size()))};
  TANDEM_RETURN_IF_ERROR(stream.write_full(ack, sizeof(ack)));
  return stream.write_full(result.message().data(), result.message().size());
}

// Reads an ack into *verdict (the receiver's answer); the returned status is the connection's.
Status read_ack(net::ByteStream& stream, Status* verdict) {
  uint32_t ack[3];
  TANDEM_RETURN_IF_ERROR(stream.read_full(ack, sizeof(ack)));
  if (ntohl(ack[0]) != kAckMagic) return Status::Corruption("bad KV transfer ack from " + stream.peer());
  std::string message(std::min<uint32_t>(ntohl(ack[2]), 4096), '\0');
  TANDEM_RETURN_IF_ERROR(stream.read_full(message.data(), message.size()));
  auto code = static_cast<StatusCode>(ntohl(ack[1]));
  *verdict = code == StatusCode::kOk ? Status::Ok() : Status(code, message);
  return Status::Ok();
}

// A pusher's connection to a receiver: the socket and the stream (plain or TLS) over it, pooled between
// pushes. Dropping it closes the socket.
class Channel {
 public:
  Channel(int fd, std::unique_ptr<net::ByteStream> stream) : fd_(fd), stream_(std::move(stream)) {}
  ~Channel() {
    stream_.reset();  // borrows the socket
    ::close(fd_);
  }
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;
  int fd() const { return fd_; }
  net::ByteStream& stream() { return *stream_; }

 private:
  const int fd_;
  std::unique_ptr<net::ByteStream> stream_;
};
using ChannelPtr = std::unique_ptr<Channel>;

// Receiver side state, used by the connection threads. The backend joins every connection thread
// on shutdown: a thread left running past the backend (they were detached once) could drop the last
// reference to the KV memory after the process had begun exiting, and ASan saw it free memory whose
// registry static destructors had already torn down.
struct Receiver {
  std::shared_ptr<KvMemory> memory;
  Expectations expectations;
  std::mutex mu;
  std::map<int, std::thread> connections;  // GUARDED_BY(mu): one thread per open incoming connection, by fd
  std::vector<std::thread> finished;  // GUARDED_BY(mu): ended connection threads, joined by the next accept
  bool stopped = false;  // GUARDED_BY(mu)
  // NCCL links opened by pushers, by link id. A pusher sends one transfer at a time on its link, so a link
  // is used by one connection thread at a time.
  std::mutex links_mu;
  std::map<std::string, std::shared_ptr<KvLink>> links;  // GUARDED_BY(links_mu)

  // Called from the accept thread for each new connection.
  void accept(int fd, const std::string& peer) {
    std::vector<std::thread> ended;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopped) {
        ::close(fd);
        return;
      }
      ended.swap(finished);
      // Started under the lock, so the thread finds its own entry when it ends.
      connections.emplace(fd, std::thread([this, fd, peer] { serve(fd, peer); }));
    }
    for (auto& t : ended) t.join();
  }

  // Wakes every connection thread and joins them; no thread runs after it returns.
  void stop() {
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> lock(mu);
      stopped = true;
      for (auto& [fd, thread] : connections) {
        ::shutdown(fd, SHUT_RDWR);
        threads.push_back(std::move(thread));
      }
      connections.clear();
      for (auto& t : finished) threads.push_back(std::move(t));
      finished.clear();
    }
    for (auto& t : threads) t.join();
  }

  void serve(int fd, const std::string& peer) {
    std::vector<std::byte> buffer(memory->block_bytes());
    std::vector<std::string> claimed;  // device-path claims of this connection, released if it drops
    // Nothing is read from a peer (no frame, no block) before it has passed TLS and the cluster key, as
    // far as the process uses them.
    auto secured = security::secure_accepted(fd, "kv_transfer", peer);
    while (secured.ok()) {
      net::ByteStream& s = **secured;
      uint32_t magic;
      if (!s.read_full(&magic, sizeof(magic)).ok()) break;
      magic = ntohl(magic);
      bool ok = false;
      if (magic == kPushMagic) {
        ok = serve_push(s, buffer);
      } else if (magic == kClaimMagic) {
        ok = serve_claim(s, claimed);
      } else if (magic == kReleaseMagic) {
        ok = serve_release(s, claimed);
      } else if (magic == kNcclMagic) {
        ok = serve_nccl(s);
      } else {
        spdlog::warn("event=kv_transfer_bad_frame peer={}", peer);
      }
      if (!ok) break;
    }
    for (const auto& id : claimed) expectations.release(id);
    if (secured.ok()) secured->reset();  // the stream borrows fd
    std::lock_guard<std::mutex> lock(mu);
    ::close(fd);
    auto self = connections.find(fd);
    if (self != connections.end()) {  // else stop() has taken this thread to join it
      finished.push_back(std::move(self->second));
      connections.erase(self);
    }
  }

  // One TKV1 frame after its magic; false when the connection is unusable.
  bool serve_push(net::ByteStream& s, std::vector<std::byte>& buffer) {
    uint32_t header[4];
    if (!s.read_full(header, sizeof(header)).ok()) return false;
    uint32_t id_len = ntohl(header[0]);
    uint32_t num_blocks = ntohl(header[1]);
    uint64_t block_bytes;
    std::memcpy(&block_bytes, &header[2], 8);
    block_bytes = ntoh64(block_bytes);
    if (id_len > kMaxIdBytes || block_bytes > (1u << 30)) return false;
    std::string id(id_len, '\0');
    if (!s.read_full(id.data(), id_len).ok()) return false;
    // A geometry mismatch still drains the records so the connection stays usable.
    Status result = block_bytes == memory->block_bytes()
                        ? Status::Ok()
                        : Status::InvalidArgument("block size " + std::to_string(block_bytes) + " != receiver's " +
                                                  std::to_string(memory->block_bytes()));
    // `buffer` holds one of the receiver's blocks; records of another size are drained through it, never
    // allocated: the header alone could otherwise make the receiver zero 1 GiB (tests/fuzz/kv_transfer_fuzz).
    for (uint32_t i = 0; i < num_blocks; ++i) {
      int32_t where[2];
      if (!s.read_full(where, sizeof(where)).ok()) return false;
      if (!result.ok()) {
        for (uint64_t left = block_bytes; left > 0;) {
          const size_t n = static_cast<size_t>(std::min<uint64_t>(left, buffer.size()));
          if (n == 0 || !s.read_full(buffer.data(), n).ok()) return false;
          left -= n;
        }
        continue;
      }
      if (!s.read_full(buffer.data(), block_bytes).ok()) return false;
      result = expectations.write(*memory, id, static_cast<int32_t>(ntohl(where[0])),
                                  static_cast<int32_t>(ntohl(where[1])), buffer);
    }
    if (!send_ack(s, result).ok()) return false;
    spdlog::debug("event=kv_transfer_received transfer_id={} num_blocks={} status={}", id, num_blocks,
                  result.ok() ? "ok" : result.to_string());
    return true;
  }

  bool serve_claim(net::ByteStream& s, std::vector<std::string>& claimed) {
    uint32_t header[2];
    if (!s.read_full(header, sizeof(header)).ok()) return false;
    uint32_t id_len = ntohl(header[0]);
    uint32_t num_blocks = ntohl(header[1]);
    if (id_len > kMaxIdBytes || num_blocks > kMaxClaimBlocks) return false;
    std::string id(id_len, '\0');
    std::vector<int32_t> blocks(num_blocks);
    if (!s.read_full(id.data(), id_len).ok() ||
        !s.read_full(blocks.data(), blocks.size() * sizeof(int32_t)).ok()) {
      return false;
    }
    for (auto& b : blocks) b = static_cast<int32_t>(ntohl(static_cast<uint32_t>(b)));
    Status result = expectations.claim(id, blocks);
    if (result.ok()) claimed.push_back(id);
    return send_ack(s, result).ok();
  }

  // One TKN1 frame after its magic: claim, ack, join the link on first use, receive in order, release, ack.
  bool serve_nccl(net::ByteStream& s) {
    uint32_t header[4];
    if (!s.read_full(header, sizeof(header)).ok()) return false;
    const uint32_t id_len = ntohl(header[0]), num_blocks = ntohl(header[1]), link_len = ntohl(header[2]);
    const int timeout_ms = static_cast<int>(std::min<uint32_t>(ntohl(header[3]), 3600u * 1000u));
    if (id_len > kMaxIdBytes || link_len > kMaxLinkIdBytes || num_blocks > kMaxClaimBlocks) return false;
    std::string id(id_len, '\0'), link_id(link_len, '\0');
    std::vector<int32_t> where(2ull * num_blocks);
    if (!s.read_full(id.data(), id_len).ok() || !s.read_full(link_id.data(), link_len).ok() ||
        !s.read_full(where.data(), where.size() * sizeof(int32_t)).ok()) {
      return false;
    }
    std::vector<BlockRef> refs(num_blocks);
    std::vector<int32_t> blocks;
    for (uint32_t i = 0; i < num_blocks; ++i) {
      refs[i] = {static_cast<int32_t>(ntohl(static_cast<uint32_t>(where[2 * i]))),
                 static_cast<int32_t>(ntohl(static_cast<uint32_t>(where[2 * i + 1])))};
      blocks.push_back(refs[i].block);
    }
    std::sort(blocks.begin(), blocks.end());
    blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
    Status claimed = memory->link_device().empty() ? Status::Unsupported("the receiver has no NCCL path")
                                                   : expectations.claim(id, blocks);
    if (!send_ack(s, claimed).ok()) {
      if (claimed.ok()) expectations.release(id);
      return false;
    }
    if (!claimed.ok()) return true;
    Status result = receive_on_link(link_id, refs, timeout_ms);
    expectations.release(id);
    spdlog::debug("event=kv_transfer_received transfer_id={} num_blocks={} transport=nccl status={}", id, num_blocks,
                  result.ok() ? "ok" : result.to_string());
    return send_ack(s, result).ok();
  }

  Status receive_on_link(const std::string& link_id, std::span<const BlockRef> refs, int timeout_ms) {
    std::shared_ptr<KvLink> link;
    {
      std::lock_guard<std::mutex> lock(links_mu);
      auto it = links.find(link_id);
      if (it != links.end()) link = it->second;
    }
    if (!link) {
      // Joined outside the lock: it waits for the pusher, which joins once it reads our claim's ack.
      auto opened = memory->open_link(link_id, 1);
      if (!opened.ok()) return opened.status();
      link = std::move(*opened);
      std::lock_guard<std::mutex> lock(links_mu);
      links[link_id] = link;
    }
    Status received = link->recv(refs, timeout_ms);
    if (!received.ok()) {
      // A broken link fails every later call; the pusher makes a new one (or falls back to TCP).
      std::lock_guard<std::mutex> lock(links_mu);
      links.erase(link_id);
    }
    return received;
  }

  bool serve_release(net::ByteStream& s, std::vector<std::string>& claimed) {
    uint32_t id_len;
    if (!s.read_full(&id_len, sizeof(id_len)).ok()) return false;
    id_len = ntohl(id_len);
    if (id_len > kMaxIdBytes) return false;
    std::string id(id_len, '\0');
    if (!s.read_full(id.data(), id_len).ok()) return false;
    auto it = std::find(claimed.begin(), claimed.end(), id);
    if (it != claimed.end()) {
      claimed.erase(it);
      expectations.release(id);
    }
    return send_ack(s, Status::Ok()).ok();
  }
};

class TcpBackend : public TransferBackend {
 public:
  // device_path: offer and use CUDA IPC (REQUIRES: memory exports device handles). nccl: offer and use
  // NCCL links (REQUIRES: memory has a link_device); nccl_first: before CUDA IPC (--kv-transfer nccl).
  TcpBackend(std::shared_ptr<KvMemory> memory, const std::string& host, uint16_t port, bool device_path, bool nccl = false,
             bool nccl_first = false)
      : memory_(memory),
        receiver_(std::make_unique<Receiver>()),
        transports_(local_host_id(), LocalPaths{.cuda_ipc = device_path,
                                                .nccl_device = nccl ? memory->link_device() : std::string(),
                                                .nccl_first = nccl_first}) {
    receiver_->memory = std::move(memory);
    auto listener = net::Listener::bind(host, port);
    if (!listener.ok()) throw Error("KV transfer: " + listener.status().message());
    listener_ = std::move(*listener);
    std::string advertised = host.empty() || host == "0.0.0.0" ? "127.0.0.1" : host;
    std::string handles;
    if (device_path) {
      auto exported = memory_->export_device_handles();
      if (!exported.ok()) throw Error("KV transfer: the CUDA IPC path needs device memory: " + exported.status().message());
      handles = *exported;
    }
    device_path_ = device_path;
    const std::string link_device = nccl ? memory_->link_device() : std::string();
    if (nccl && link_device.empty()) throw Error("KV transfer: the NCCL path needs device memory with NCCL available");
    nccl_ = nccl;
    address_ = format_address(advertised + ":" + std::to_string(listener_->port()), local_host_id(), handles, link_device);
    listener_->start([receiver = receiver_.get()](int fd, std::string peer) { receiver->accept(fd, peer); });
  }
  ~TcpBackend() override {
    shutdown();
    std::lock_guard<std::mutex> lock(pool_mu_);
    pool_.clear();
  }

  std::string name() const override { return nccl_ && !device_path_ ? "nccl" : device_path_ ? "cuda_ipc" : "tcp"; }
  std::string address() const override { return address_; }

  StatusOr<TransferStats> push(const std::string& peer_address, const std::string& transfer_id,
                               std::span<const BlockCopy> copies, int timeout_ms) override {
    if (transfer_id.size() > kMaxIdBytes) return Status::InvalidArgument("transfer id too long");
    const PeerAddress target = parse_peer_address(peer_address);
    const std::string& peer = target.tcp;
    auto start = std::chrono::steady_clock::now();
    const Transport transport = transports_.choose(peer_address, target, *memory_).transport;
    if (transport != Transport::kTcp) {
      bool fall_back = false;
      auto stats = transport == Transport::kCudaIpc ? push_device(target, transfer_id, copies, timeout_ms, &fall_back)
                                                    : push_nccl(peer_address, target, transfer_id, copies, timeout_ms, &fall_back);
      if (!fall_back) {
        if (stats.ok()) stats->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        return stats;
      }
      if (transport == Transport::kCudaIpc) {
        transports_.mark_failed(peer_address, stats.status().message());
      } else {
        transports_.mark_link_failed(peer_address, stats.status().message());
      }
    }
    // A pooled connection may have gone stale (the peer restarted): one retry on a fresh one.
    for (int attempt = 0;; ++attempt) {
      bool pooled = false;
      auto channel = take_connection(peer, timeout_ms, &pooled);
      if (!channel.ok()) return channel.status();
      (*channel)->stream().set_timeout(std::max(1, timeout_ms));
      auto stats = push_on((*channel)->stream(), peer, transfer_id, copies);
      if (stats.ok()) {
        stats->transport = "tcp";
        give_back(peer, std::move(*channel));
        stats->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        return stats;
      }
      channel->reset();
      if (stats.status().code() != StatusCode::kUnavailable || !pooled || attempt > 0) {
        if (std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(timeout_ms)) {
          return Status::DeadlineExceeded("KV push to " + peer + " took over " + std::to_string(timeout_ms) + " ms");
        }
        return stats.status();
      }
    }
  }

  void expect(const std::string& transfer_id, std::vector<int32_t> dst_blocks) override {
    receiver_->expectations.expect(transfer_id, dst_blocks);
  }
  void forget(const std::string& transfer_id) override { receiver_->expectations.forget(transfer_id); }

  void shutdown() override {
    if (listener_) listener_->close();  // joins the accept thread: no connection starts after this
    receiver_->stop();
  }

 private:
  // The device path: claim the destination blocks over the TCP connection, copy device to device,
  // release. *fall_back is set (with the reason as the error) when the peer's handles cannot be
  // opened, so that the caller pushes over TCP instead.
  StatusOr<TransferStats> push_device(const PeerAddress& target, const std::string& transfer_id,
                                      std::span<const BlockCopy> copies, int timeout_ms, bool* fall_back) {
    const std::string& peer = target.tcp;
    // The distinct destination blocks, in one linear pass (a std::set here cost ~0.1 ms for a
    // 4,096-token prompt's 8,192 copies, a fifth of the device copy itself).
    int32_t max_block = -1;
    for (const BlockCopy& c : copies) {
      if (c.dst_block < 0) return Status::InvalidArgument("negative destination block in a KV push");
      max_block = std::max(max_block, c.dst_block);
    }
    std::vector<uint8_t> seen(static_cast<size_t>(max_block + 1), 0);
    std::vector<uint32_t> blocks;
    for (const BlockCopy& c : copies) {
      if (seen[c.dst_block]) continue;
      seen[c.dst_block] = 1;
      blocks.push_back(htonl(static_cast<uint32_t>(c.dst_block)));
    }
    // The whole claim in one write: sent as header, id and blocks it could wake the receiver three times,
    // and the handshake is already a fifth of a 4,096-token prompt's push on an H200 (0.1 of 0.45 ms).
    const uint32_t header[3] = {htonl(kClaimMagic), htonl(static_cast<uint32_t>(transfer_id.size())),
                                htonl(static_cast<uint32_t>(blocks.size()))};
    const std::vector<std::byte> claim = control_message(header, transfer_id, blocks);
    Status verdict;
    auto claimed = send_claim(peer, claim, timeout_ms, &verdict);
    if (!claimed.ok()) return claimed.status();
    if (!verdict.ok()) return Status(verdict.code(), "KV claim at " + peer + " refused: " + verdict.message());
    ChannelPtr channel = std::move(*claimed);
    Status copied = memory_->copy_to_peer(target.device_handles, copies);
    // Release whatever the copy did: the receiver's forget() waits for it. Its ack is read by the
    // connection's next user (take_connection), not waited for here: the bytes are already in place.
    const uint32_t release_header[2] = {htonl(kReleaseMagic), htonl(static_cast<uint32_t>(transfer_id.size()))};
    const std::vector<std::byte> release = control_message(release_header, transfer_id);
    Status released = channel->stream().write_full(release.data(), release.size());
    if (released.ok()) {
      give_back(peer, std::move(channel), /*ack_pending=*/true);
    } else {
      channel.reset();  // the receiver releases the claim when the connection drops
    }
    if (copied.code() == StatusCode::kUnavailable) {
      *fall_back = true;
      return copied;
    }
    if (!copied.ok()) return copied;
    TransferStats stats;
    stats.num_blocks = static_cast<int>(copies.size());
    stats.num_bytes = static_cast<int64_t>(copies.size()) * static_cast<int64_t>(memory_->block_bytes());
    stats.transport = "cuda_ipc";
    return stats;
  }

  // The NCCL path: one transfer at a time on this peer's link (the receiver matches blocks by order). The
  // claim names the link (a fresh id on first use, when both sides then join it) and the destination
  // blocks in the order they travel; after its first ack the blocks are sent, and the second ack says they
  // arrived. *fall_back is set (with the reason as the error) when the peer has no NCCL path or the link
  // cannot be made or breaks, so that the caller pushes over TCP instead.
  StatusOr<TransferStats> push_nccl(const std::string& peer_address, const PeerAddress& target, const std::string& transfer_id,
                                    std::span<const BlockCopy> copies, int timeout_ms, bool* fall_back) {
    const std::string& peer = target.tcp;
    std::shared_ptr<PeerLink> link;
    {
      std::lock_guard<std::mutex> lock(links_mu_);
      auto& slot = links_[peer_address];
      if (!slot) slot = std::make_shared<PeerLink>();
      link = slot;
    }
    std::lock_guard<std::mutex> serialized(link->mu);
    const bool fresh = link->link == nullptr;
    if (fresh) {
      auto id = memory_->make_link_id();
      if (!id.ok()) {
        *fall_back = true;
        return id.status();
      }
      link->id = *id;
    }
    const uint32_t header[5] = {htonl(kNcclMagic), htonl(static_cast<uint32_t>(transfer_id.size())),
                                htonl(static_cast<uint32_t>(copies.size())), htonl(static_cast<uint32_t>(link->id.size())),
                                htonl(static_cast<uint32_t>(std::max(1, timeout_ms)))};
    std::vector<uint32_t> where;
    where.reserve(2 * copies.size());
    std::vector<BlockRef> sources;
    sources.reserve(copies.size());
    for (const BlockCopy& c : copies) {
      where.push_back(htonl(static_cast<uint32_t>(c.layer)));
      where.push_back(htonl(static_cast<uint32_t>(c.dst_block)));
      sources.push_back({c.layer, c.src_block});
    }
    std::vector<std::byte> claim = control_message(header, transfer_id + link->id, where);
    Status verdict;
    auto claimed = send_claim(peer, claim, timeout_ms, &verdict);
    if (!claimed.ok()) return claimed.status();
    if (!verdict.ok()) {
      *fall_back = verdict.code() == StatusCode::kUnsupported;
      return Status(verdict.code(), "KV claim at " + peer + " refused: " + verdict.message());
    }
    ChannelPtr channel = std::move(*claimed);
    // The receiver now joins the link (first use) and waits for the blocks; a failure here leaves it to
    // its receive timeout, after which it releases the claim and answers.
    if (fresh) {
      auto opened = memory_->open_link(link->id, 0);
      if (!opened.ok()) {
        channel.reset();
        *fall_back = true;
        return opened.status();
      }
      link->link = std::move(*opened);
    }
    Status sent = link->link->send(sources, timeout_ms);
    if (!sent.ok()) link->link.reset();
    Status acked = read_ack(channel->stream(), &verdict);  // the second ack: the blocks arrived
    if (acked.ok()) {
      give_back(peer, std::move(channel));
    } else {
      channel.reset();
    }
    if (!sent.ok()) {
      *fall_back = true;
      return sent;
    }
    TANDEM_RETURN_IF_ERROR(acked);
    if (!verdict.ok()) return Status(verdict.code(), "KV push to " + peer + " over NCCL: " + verdict.message());
    TransferStats stats;
    stats.num_blocks = static_cast<int>(copies.size());
    stats.num_bytes = static_cast<int64_t>(copies.size()) * static_cast<int64_t>(memory_->block_bytes());
    stats.transport = "nccl";
    return stats;
  }

  StatusOr<TransferStats> push_on(net::ByteStream& stream, const std::string& peer, const std::string& transfer_id,
                                  std::span<const BlockCopy> copies) {
    const size_t block_bytes = memory_->block_bytes();
    uint32_t header[5] = {htonl(kPushMagic), htonl(static_cast<uint32_t>(transfer_id.size())),
                          htonl(static_cast<uint32_t>(copies.size())), 0, 0};
    uint64_t bytes_be = hton64(block_bytes);
    std::memcpy(&header[3], &bytes_be, 8);
    // [8 + block_bytes] per record, host: the record header and the block's bytes in one write.
    std::vector<std::byte> record(8 + block_bytes);
    TANDEM_RETURN_IF_ERROR(stream.write_full(header, sizeof(header)));
    TANDEM_RETURN_IF_ERROR(stream.write_full(transfer_id.data(), transfer_id.size()));
    TransferStats stats;
    for (const BlockCopy& copy : copies) {
      TANDEM_RETURN_IF_ERROR(memory_->read_block(copy.layer, copy.src_block, std::span(record).subspan(8)));
      int32_t where[2] = {static_cast<int32_t>(htonl(static_cast<uint32_t>(copy.layer))),
                          static_cast<int32_t>(htonl(static_cast<uint32_t>(copy.dst_block)))};
      std::memcpy(record.data(), where, 8);
      TANDEM_RETURN_IF_ERROR(stream.write_full(record.data(), record.size()));
      stats.num_bytes += static_cast<int64_t>(block_bytes);
      ++stats.num_blocks;
    }
    Status verdict;
    TANDEM_RETURN_IF_ERROR(read_ack(stream, &verdict));
    if (!verdict.ok()) return Status(verdict.code(), "KV push to " + peer + " refused: " + verdict.message());
    return stats;
  }

  // Sends `claim` and reads its ack, on a pooled connection or a fresh one; a pooled connection gone
  // stale (the peer restarted) gets one retry on a fresh one. Returns the connection with *verdict set
  // to the receiver's answer; a refused claim's connection is already given back (the caller must not
  // use it). An error: no answer could be had, the connection is closed.
  StatusOr<ChannelPtr> send_claim(const std::string& peer, const std::vector<std::byte>& claim, int timeout_ms,
                                  Status* verdict) {
    for (int attempt = 0;; ++attempt) {
      bool pooled = false;
      auto dialed = take_connection(peer, timeout_ms, &pooled);
      if (!dialed.ok()) return dialed.status();
      ChannelPtr channel = std::move(*dialed);
      net::ByteStream& stream = channel->stream();
      stream.set_timeout(std::max(1, timeout_ms));
      Status sent = stream.write_full(claim.data(), claim.size());
      if (sent.ok()) sent = read_ack(stream, verdict);
      if (sent.ok()) {
        if (!verdict->ok()) give_back(peer, std::move(channel));
        return channel;
      }
      channel.reset();
      if (!pooled || attempt > 0) return sent;
    }
  }

  StatusOr<ChannelPtr> take_connection(const std::string& peer, int timeout_ms, bool* pooled) {
    while (true) {
      Idle idle;
      {
        std::lock_guard<std::mutex> lock(pool_mu_);
        auto& list = pool_[peer];
        if (list.empty()) break;
        idle = std::move(list.back());
        list.pop_back();
      }
      if (idle.ack_pending) {
        idle.channel->stream().set_timeout(std::max(1, timeout_ms));
        Status verdict;
        if (!read_ack(idle.channel->stream(), &verdict).ok()) continue;  // dropping it closes it
      }
      *pooled = true;
      return std::move(idle.channel);
    }
    *pooled = false;
    auto fd = net::dial(peer, timeout_ms);
    if (!fd.ok()) return fd.status();
    auto stream = security::secure_dialed(*fd, "kv_transfer", peer);
    if (!stream.ok()) {
      ::close(*fd);
      return stream.status();
    }
    return std::make_unique<Channel>(*fd, std::move(*stream));
  }

  // ack_pending: a release was sent on the channel and its ack not yet read.
  void give_back(const std::string& peer, ChannelPtr channel, bool ack_pending = false) {
    std::lock_guard<std::mutex> lock(pool_mu_);
    prune_closed_locked();
    pool_[peer].push_back(Idle{std::move(channel), ack_pending});
  }

  // Closes the idle connections whose peer has hung up and forgets peers left with none. A receiver
  // that restarts comes back on a new port, so its old connections would never be taken again: without
  // this each restart of a decode worker left one socket per pooled connection open here for good
  // (found by bench/chaos_soak.py). A live receiver never half-closes, so POLLRDHUP means it is gone;
  // an unread ack (ack_pending) is data, not a hang-up.
  void prune_closed_locked() {
    std::vector<pollfd> fds;
    for (const auto& [peer, idle] : pool_) {
      for (const Idle& i : idle) fds.push_back(pollfd{i.channel->fd(), POLLRDHUP, 0});
    }
    if (fds.empty() || ::poll(fds.data(), fds.size(), 0) <= 0) return;
    size_t k = 0;
    for (auto it = pool_.begin(); it != pool_.end();) {
      auto& idle = it->second;
      std::vector<Idle> kept;
      for (Idle& i : idle) {
        // A hung-up one is dropped, which closes it.
        if (!(fds[k++].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))) kept.push_back(std::move(i));
      }
      idle = std::move(kept);
      it = idle.empty() ? pool_.erase(it) : std::next(it);
    }
  }

  std::shared_ptr<KvMemory> memory_;
  std::unique_ptr<Receiver> receiver_;
  std::unique_ptr<net::Listener> listener_;
  std::string address_;
  bool device_path_ = false;
  bool nccl_ = false;
  PeerTransports transports_;
  // The NCCL link to each peer (by address) and the lock that keeps one transfer at a time on it.
  struct PeerLink {
    std::mutex mu;
    std::string id;                 // GUARDED_BY(mu)
    std::unique_ptr<KvLink> link;   // GUARDED_BY(mu); null until first used, and after it broke
  };
  std::mutex links_mu_;
  std::map<std::string, std::shared_ptr<PeerLink>> links_;  // GUARDED_BY(links_mu_)
  std::mutex pool_mu_;
  struct Idle {
    ChannelPtr channel;
    bool ack_pending = false;
  };
  std::map<std::string, std::vector<Idle>> pool_;  // GUARDED_BY(pool_mu_): idle connections per peer
};

}  // namespace

std::unique_ptr<TransferBackend> create_tcp_backend(std::shared_ptr<KvMemory> memory, const std::string& host,
                                                    uint16_t port) {
  return std::make_unique<TcpBackend>(std::move(memory), host, port, false);
}

std::unique_ptr<TransferBackend> create_transfer_backend(const std::string& kind, std::shared_ptr<KvMemory> memory,
                                                         const std::string& host, uint16_t port) {
  if (kind == "tcp") return std::make_unique<TcpBackend>(std::move(memory), host, port, false);
  if (kind == "cuda_ipc") return std::make_unique<TcpBackend>(std::move(memory), host, port, true);
  if (kind == "nccl") {
    if (memory->link_device().empty()) {
      throw Error("--kv-transfer nccl: this worker's KV memory has no NCCL path (a CUDA device with NCCL installed, one GPU a worker)");
    }
    const bool ipc = memory->export_device_handles().ok();
    return std::make_unique<TcpBackend>(std::move(memory), host, port, ipc, true, true);
  }
  if (kind == "auto") {
    auto exported = memory->export_device_handles();
    const bool nccl = !memory->link_device().empty();
    if (!exported.ok() && !nccl) {
      spdlog::info("event=kv_transfer_backend transport=tcp reason=\"{}\"", exported.status().message());
      return std::make_unique<TcpBackend>(std::move(memory), host, port, false);
    }
    return std::make_unique<TcpBackend>(std::move(memory), host, port, exported.ok(), nccl);
  }
  throw Error("--kv-transfer: unknown transport '" + kind + "' (use auto, tcp, cuda_ipc or nccl)");
}

}  // namespace tandem::transfer
