// Which path a push takes to a peer (TCP, CUDA IPC or NCCL), and the address form that carries what the
// choice needs: a receiver with device memory advertises
//   tcp://HOST:PORT;cuda_ipc=<host id>/<descriptor of its KV memory>;nccl=<host id>/<its GPU's PCI bus id>
// (each device part only when it has that path). A pusher uses CUDA IPC when it has device memory
// itself, the peer is on the same host (same host id), and its device can reach the peer's
// (KvMemory::can_reach). Otherwise NCCL when both sides offer it and they are not one GPU (NCCL cannot
// link two ranks on one GPU): workers that cannot map each other's memory (one GPU per container or pod,
// other hosts). TCP otherwise. With --kv-transfer nccl, NCCL comes first wherever both sides offer it. A
// peer whose handles fail to open, or whose NCCL link fails, is marked, and later pushes to it go over
// the next path (TCP in the end).
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
  std::string nccl_host = {};  // empty when the peer offers no NCCL path
  std::string nccl_device = {};  // the peer's KvMemory::link_device()
};

// Splits an address as TransferBackend::address() writes it; anything unknown after ';' is ignored.
PeerAddress parse_peer_address(const std::string& address);
// "tcp://HOST:PORT", plus ";cuda_ipc=HOST_ID/HANDLES" when device_handles is not empty, plus
// ";nccl=HOST_ID/NCCL_DEVICE" when nccl_device is not empty.
std::string format_address(const std::string& tcp_host_port, const std::string& host_id, const std::string& device_handles,
                           const std::string& nccl_device = "");

// This host's identity for "same host" decisions: the kernel's boot id (processes in containers on one
// host share it), else the host name.
std::string local_host_id();

enum class Transport { kTcp, kCudaIpc, kNccl };
const char* transport_name(Transport t);

struct TransportChoice {
  Transport transport = Transport::kTcp;
  std::string reason;  // why, for the log: "same_host_device_reachable", "other_host", ...
};

// What this side can use.
struct LocalPaths {
  bool cuda_ipc = false;    // it exports device handles
  std::string nccl_device;  // its KvMemory::link_device(); empty: no NCCL path
  bool nccl_first = false;  // --kv-transfer nccl: NCCL even where CUDA IPC would do
};

// The rule of the header comment, for one peer. `ipc_failed` / `nccl_failed`: that path to this peer
// failed before.
TransportChoice choose_transport(const PeerAddress& peer, const std::string& local_host, const LocalPaths& local,
                                 KvMemory& memory, bool ipc_failed, bool nccl_failed);
// The CUDA IPC / TCP rule alone (no NCCL path here). `failed`: this peer's handles failed to open before.
TransportChoice choose_transport(const PeerAddress& peer, const std::string& local_host, bool local_device_path,
                                 KvMemory& memory, bool failed);

// The choice per peer address, remembered so that can_reach runs once per peer and the decision is
// logged once (info), and a failed open warns once and sends the peer to TCP for good.
class PeerTransports {
 public:
  PeerTransports(std::string local_host, bool local_device_path)
      : local_host_(std::move(local_host)), local_{.cuda_ipc = local_device_path, .nccl_device = {}, .nccl_first = false} {}
  PeerTransports(std::string local_host, LocalPaths local) : local_host_(std::move(local_host)), local_(std::move(local)) {}
  TransportChoice choose(const std::string& address, const PeerAddress& peer, KvMemory& memory);
  // The device copy to `address` failed with `reason` (handles would not open): one warning line, the
  // next path (NCCL where both sides offer it, else TCP) from now on.
  void mark_failed(const std::string& address, const std::string& reason);
  // The NCCL link to `address` failed with `reason`: one warning line, TCP from now on.
  void mark_link_failed(const std::string& address, const std::string& reason);

 private:
  struct Peer {
    TransportChoice choice;
    bool ipc_failed = false;
    bool nccl_failed = false;
  };
  void mark(const std::string& address, const std::string& reason, bool nccl);
  bool device_paths() const { return local_.cuda_ipc || !local_.nccl_device.empty(); }

  const std::string local_host_;
  const LocalPaths local_;
  std::mutex mu_;
  std::map<std::string, Peer> chosen_;  // GUARDED_BY(mu_): by full peer address
};

}  // namespace tandem::transfer
