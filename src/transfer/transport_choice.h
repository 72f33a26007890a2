// Which path a push takes to a peer (TCP or CUDA IPC), and the address form that carries what the
// choice needs: a receiver with device memory advertises
//   tcp://HOST:PORT;cuda_ipc=<host id>/<descriptor of its KV memory>
// and a pusher uses CUDA IPC when it has device memory itself, the peer is on the same host (same
// host id), and its device can reach the peer's (KvMemory::can_reach); TCP otherwise. A peer whose
// handles fail to open is marked, and later pushes to it go over TCP.
//
// Thread-safety: the free functions are pure; PeerTransports is thread-safe.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "transfer/transfer.h"

namespace tandem::transfer {

struct PeerAddress {
  std::string tcp;             // "HOST:PORT" (scheme stripped)
  std::string host_id;         // empty when the peer offers no device path
  std::string device_handles;  // the peer's KvMemory::export_device_handles()
};

// Splits an address as TransferBackend::address() writes it; anything unknown after ';' is ignored.
PeerAddress parse_peer_address(const std::string& address);
// "tcp://HOST:PORT", plus ";cuda_ipc=HOST_ID/HANDLES" when device_handles is not empty.
std::string format_address(const std::string& tcp_host_port, const std::string& host_id, const std::string& device_handles);

// This host's identity for "same host" decisions: the kernel's boot id (processes in containers on one
// host share it), else the host name.
std::string local_host_id();

enum class Transport { kTcp, kCudaIpc };
const char* transport_name(Transport t);

struct TransportChoice {
  Transport transport = Transport::kTcp;
  std::string reason;  // why, for the log: "same_host_device_reachable", "other_host", ...
};

// The rule of the header comment, for one peer. `failed`: this peer's handles failed to open before.
TransportChoice choose_transport(const PeerAddress& peer, const std::string& local_host, bool local_device_path,
                                 KvMemory& memory, bool failed);

// The choice per peer address, remembered so that can_reach runs once per peer and the decision is
// logged once (info), and a failed open warns once and sends the peer to TCP for good.
class PeerTransports {
 public:
  PeerTransports(std::string local_host, bool local_device_path)
      : local_host_(std::move(local_host)), local_device_path_(local_device_path) {}
  TransportChoice choose(const std::string& address, const PeerAddress& peer, KvMemory& memory);
  // The device copy to `address` failed with `reason` (handles would not open): one warning line,
  // TCP from now on.
  void mark_failed(const std::string& address, const std::string& reason);

 private:
  const std::string local_host_;
  const bool local_device_path_;
  std::mutex mu_;
  std::map<std::string, TransportChoice> chosen_;  // GUARDED_BY(mu_): by full peer address
};

}  // namespace tandem::transfer
