// TCP transfer backend (see transfer.h): the pusher streams (layer, block, bytes) records over a
// pooled connection to the receiver, which writes each block into its memory and acknowledges the
// whole transfer once every block is in place.
//
// Wire format (integers in network order):
//   push:  "TKV1" u32 | id_len u32 | num_blocks u32 | block_bytes u64 | id bytes |
//          num_blocks x (layer i32 | block i32 | block_bytes bytes)
//   ack:   "TKA1" u32 | status_code u32 | msg_len u32 | msg bytes
#include <arpa/inet.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/socket.h"
#include "transfer/expectations.h"
#include "transfer/transfer.h"

namespace tandem::transfer {
namespace {

constexpr uint32_t kPushMagic = 0x544b5631;  // "TKV1"
constexpr uint32_t kAckMagic = 0x544b4131;   // "TKA1"
constexpr uint32_t kMaxIdBytes = 1024;

uint64_t hton64(uint64_t v) { return (static_cast<uint64_t>(htonl(v & 0xffffffffu)) << 32) | htonl(v >> 32); }
uint64_t ntoh64(uint64_t v) { return hton64(v); }

void set_timeouts(int fd, int timeout_ms) {
  timeval tv{};
  tv.tv_sec = timeout_ms / 1000;
  tv.tv_usec = (timeout_ms % 1000) * 1000;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

std::string strip_scheme(const std::string& address) {
  const std::string scheme = "tcp://";
  return address.rfind(scheme, 0) == 0 ? address.substr(scheme.size()) : address;
}

// Receiver side state shared with the connection threads, which may outlive the backend object.
struct Receiver {
  std::shared_ptr<KvMemory> memory;
  Expectations expectations;
  std::mutex mu;
  std::set<int> fds;  // GUARDED_BY(mu): open incoming connections, shut down on shutdown()
  bool stopped = false;  // GUARDED_BY(mu)

  void serve(int fd, const std::string& peer) {
    std::vector<std::byte> buffer(memory->block_bytes());
    while (true) {
      uint32_t header[5];
      if (!net::read_full(fd, header, sizeof(header), peer).ok()) break;
      if (ntohl(header[0]) != kPushMagic) {
        spdlog::warn("event=kv_transfer_bad_frame peer={}", peer);
        break;
      }
      uint32_t id_len = ntohl(header[1]);
      uint32_t num_blocks = ntohl(header[2]);
      uint64_t block_bytes;
      std::memcpy(&block_bytes, &header[3], 8);
      block_bytes = ntoh64(block_bytes);
      if (id_len > kMaxIdBytes || block_bytes > (1u << 30)) break;
      std::string id(id_len, '\0');
      if (!net::read_full(fd, id.data(), id_len, peer).ok()) break;
      // A geometry mismatch still drains the records so the connection stays usable.
      Status result = block_bytes == memory->block_bytes()
                          ? Status::Ok()
                          : Status::InvalidArgument("block size " + std::to_string(block_bytes) + " != receiver's " +
                                                    std::to_string(memory->block_bytes()));
      buffer.resize(block_bytes);
      bool lost = false;
      for (uint32_t i = 0; i < num_blocks; ++i) {
        int32_t where[2];
        if (!net::read_full(fd, where, sizeof(where), peer).ok() ||
            !net::read_full(fd, buffer.data(), block_bytes, peer).ok()) {
          lost = true;
          break;
        }
        if (result.ok()) {
          result = expectations.write(*memory, id, static_cast<int32_t>(ntohl(where[0])),
                                      static_cast<int32_t>(ntohl(where[1])), buffer);
        }
      }
      if (lost) break;
      uint32_t ack[3] = {htonl(kAckMagic), htonl(static_cast<uint32_t>(result.code())),
                         htonl(static_cast<uint32_t>(result.message().size()))};
      if (!net::write_full(fd, ack, sizeof(ack), peer).ok() ||
          !net::write_full(fd, result.message().data(), result.message().size(), peer).ok()) {
        break;
      }
      spdlog::debug("event=kv_transfer_received transfer_id={} num_blocks={} status={}", id, num_blocks,
                    result.ok() ? "ok" : result.to_string());
    }
    std::lock_guard<std::mutex> lock(mu);
    fds.erase(fd);
    ::close(fd);
  }
};

class TcpBackend : public TransferBackend {
 public:
  TcpBackend(std::shared_ptr<KvMemory> memory, const std::string& host, uint16_t port)
      : memory_(memory), receiver_(std::make_shared<Receiver>()) {
    receiver_->memory = std::move(memory);
    auto listener = net::Listener::bind(host, port);
    if (!listener.ok()) throw Error("KV transfer: " + listener.status().message());
    listener_ = std::move(*listener);
    std::string advertised = host.empty() || host == "0.0.0.0" ? "127.0.0.1" : host;
    address_ = "tcp://" + advertised + ":" + std::to_string(listener_->port());
    listener_->start([receiver = receiver_](int fd, std::string peer) {
      {
        std::lock_guard<std::mutex> lock(receiver->mu);
        if (receiver->stopped) {
          ::close(fd);
          return;
        }
        receiver->fds.insert(fd);
      }
      std::thread([receiver, fd, peer] { receiver->serve(fd, peer); }).detach();
    });
  }
  ~TcpBackend() override {
    shutdown();
    std::lock_guard<std::mutex> lock(pool_mu_);
    for (auto& [peer, fds] : pool_) {
      for (int fd : fds) ::close(fd);
    }
  }

  std::string name() const override { return "tcp"; }
  std::string address() const override { return address_; }

  StatusOr<TransferStats> push(const std::string& peer_address, const std::string& transfer_id,
                               std::span<const BlockCopy> copies, int timeout_ms) override {
    if (transfer_id.size() > kMaxIdBytes) return Status::InvalidArgument("transfer id too long");
    const std::string peer = strip_scheme(peer_address);
    auto start = std::chrono::steady_clock::now();
    // A pooled connection may have gone stale (the peer restarted): one retry on a fresh one.
    for (int attempt = 0;; ++attempt) {
      bool pooled = false;
      auto fd = take_connection(peer, timeout_ms, &pooled);
      if (!fd.ok()) return fd.status();
      set_timeouts(*fd, std::max(1, timeout_ms));
      auto stats = push_on(*fd, peer, transfer_id, copies);
      if (stats.ok()) {
        give_back(peer, *fd);
        stats->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        return stats;
      }
      ::close(*fd);
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
    if (listener_) listener_->close();
    std::lock_guard<std::mutex> lock(receiver_->mu);
    receiver_->stopped = true;
    for (int fd : receiver_->fds) ::shutdown(fd, SHUT_RDWR);
  }

 private:
  StatusOr<TransferStats> push_on(int fd, const std::string& peer, const std::string& transfer_id,
                                  std::span<const BlockCopy> copies) {
    const size_t block_bytes = memory_->block_bytes();
    uint32_t header[5] = {htonl(kPushMagic), htonl(static_cast<uint32_t>(transfer_id.size())),
                          htonl(static_cast<uint32_t>(copies.size())), 0, 0};
    uint64_t bytes_be = hton64(block_bytes);
    std::memcpy(&header[3], &bytes_be, 8);
    // [8 + block_bytes] per record, host: the record header and the block's bytes in one write.
    std::vector<std::byte> record(8 + block_bytes);
    TANDEM_RETURN_IF_ERROR(net::write_full(fd, header, sizeof(header), peer));
    TANDEM_RETURN_IF_ERROR(net::write_full(fd, transfer_id.data(), transfer_id.size(), peer));
    TransferStats stats;
    for (const BlockCopy& copy : copies) {
      TANDEM_RETURN_IF_ERROR(memory_->read_block(copy.layer, copy.src_block, std::span(record).subspan(8)));
      int32_t where[2] = {static_cast<int32_t>(htonl(static_cast<uint32_t>(copy.layer))),
                          static_cast<int32_t>(htonl(static_cast<uint32_t>(copy.dst_block)))};
      std::memcpy(record.data(), where, 8);
      TANDEM_RETURN_IF_ERROR(net::write_full(fd, record.data(), record.size(), peer));
      stats.num_bytes += static_cast<int64_t>(block_bytes);
      ++stats.num_blocks;
    }
    uint32_t ack[3];
    TANDEM_RETURN_IF_ERROR(net::read_full(fd, ack, sizeof(ack), peer));
    if (ntohl(ack[0]) != kAckMagic) return Status::Corruption("bad KV transfer ack from " + peer);
    std::string message(std::min<uint32_t>(ntohl(ack[2]), 4096), '\0');
    TANDEM_RETURN_IF_ERROR(net::read_full(fd, message.data(), message.size(), peer));
    auto code = static_cast<StatusCode>(ntohl(ack[1]));
    if (code != StatusCode::kOk) return Status(code, "KV push to " + peer + " refused: " + message);
    return stats;
  }

  StatusOr<int> take_connection(const std::string& peer, int timeout_ms, bool* pooled) {
    {
      std::lock_guard<std::mutex> lock(pool_mu_);
      auto& idle = pool_[peer];
      if (!idle.empty()) {
        int fd = idle.back();
        idle.pop_back();
        *pooled = true;
        return fd;
      }
    }
    *pooled = false;
    return net::dial(peer, timeout_ms);
  }

  void give_back(const std::string& peer, int fd) {
    std::lock_guard<std::mutex> lock(pool_mu_);
    pool_[peer].push_back(fd);
  }

  std::shared_ptr<KvMemory> memory_;
  std::shared_ptr<Receiver> receiver_;
  std::unique_ptr<net::Listener> listener_;
  std::string address_;
  std::mutex pool_mu_;
  std::map<std::string, std::vector<int>> pool_;  // GUARDED_BY(pool_mu_): idle connections per peer
};

}  // namespace

std::unique_ptr<TransferBackend> create_tcp_backend(std::shared_ptr<KvMemory> memory, const std::string& host,
                                                    uint16_t port) {
  return std::make_unique<TcpBackend>(std::move(memory), host, port);
}

}  // namespace tandem::transfer
