// Transport choice per peer (see transport_choice.h).
#include "transfer/transport_choice.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <fstream>

namespace tandem::transfer {

namespace {
constexpr const char* kTcpScheme = "tcp://";
constexpr const char* kIpcKey = "cuda_ipc=";
constexpr const char* kNcclKey = "nccl=";

// "HOST/VALUE" into its two non-empty halves; false when malformed.
bool split_host_value(const std::string& text, std::string* host, std::string* value) {
  const size_t slash = text.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 >= text.size()) return false;
  *host = text.substr(0, slash);
  *value = text.substr(slash + 1);
  return true;
}
}  // namespace

PeerAddress parse_peer_address(const std::string& address) {
  PeerAddress out;
  const size_t semi = address.find(';');
  out.tcp = address.substr(0, semi);
  if (out.tcp.rfind(kTcpScheme, 0) == 0) out.tcp = out.tcp.substr(std::string(kTcpScheme).size());
  size_t pos = semi;
  while (pos != std::string::npos) {
    const size_t next = address.find(';', pos + 1);
    const std::string part = address.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
    if (part.rfind(kIpcKey, 0) == 0) {
      std::string host, handles;
      if (split_host_value(part.substr(std::string(kIpcKey).size()), &host, &handles)) {
        out.host_id = host;
        out.device_handles = handles;
      }
    } else if (part.rfind(kNcclKey, 0) == 0) {
      std::string host, device;
      if (split_host_value(part.substr(std::string(kNcclKey).size()), &host, &device)) {
        out.nccl_host = host;
        out.nccl_device = device;
      }
    }
    pos = next;
  }
  return out;
}

std::string format_address(const std::string& tcp_host_port, const std::string& host_id, const std::string& device_handles,
                           const std::string& nccl_device) {
  std::string out = kTcpScheme + tcp_host_port;
  if (!device_handles.empty()) out += std::string(";") + kIpcKey + host_id + "/" + device_handles;
  if (!nccl_device.empty()) out += std::string(";") + kNcclKey + host_id + "/" + nccl_device;
  return out;
}

std::string local_host_id() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  if (in && std::getline(in, id) && !id.empty()) return id;
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) == 0 && name[0]) return name;
  return "unknown-host";
}

const char* transport_name(Transport t) {
  switch (t) {
    case Transport::kCudaIpc: return "cuda_ipc";
    case Transport::kNccl: return "nccl";
    case Transport::kTcp: break;
  }
  return "tcp";
}

TransportChoice choose_transport(const PeerAddress& peer, const std::string& local_host, bool local_device_path,
                                 KvMemory& memory, bool failed) {
  if (!local_device_path) return {Transport::kTcp, "no_local_device_path"};
  if (peer.device_handles.empty()) return {Transport::kTcp, "peer_has_no_device_path"};
  if (peer.host_id != local_host) return {Transport::kTcp, "other_host"};
  if (failed) return {Transport::kTcp, "device_handles_failed_before"};
  if (!memory.can_reach(peer.device_handles)) return {Transport::kTcp, "device_not_reachable"};
  return {Transport::kCudaIpc, "same_host_device_reachable"};
}

TransportChoice choose_transport(const PeerAddress& peer, const std::string& local_host, const LocalPaths& local,
                                 KvMemory& memory, bool ipc_failed, bool nccl_failed) {
  const bool both_nccl = !local.nccl_device.empty() && !peer.nccl_device.empty();
  const bool one_gpu = peer.nccl_host == local_host && peer.nccl_device == local.nccl_device;
  const bool nccl_usable = both_nccl && !one_gpu && !nccl_failed;
  if (local.nccl_first && nccl_usable) return {Transport::kNccl, "nccl_requested"};
  TransportChoice ipc = choose_transport(peer, local_host, local.cuda_ipc, memory, ipc_failed);
  if (ipc.transport == Transport::kCudaIpc) return ipc;
  // CUDA IPC cannot serve this peer (ipc.reason says why); NCCL can when both sides offer it.
  if (nccl_usable) return {Transport::kNccl, ipc.reason + "_nccl"};
  if (both_nccl && nccl_failed) return {Transport::kTcp, "nccl_failed_before"};
  if (both_nccl && one_gpu && local.nccl_first) return {Transport::kTcp, "same_gpu_no_nccl"};
  return ipc;
}

TransportChoice PeerTransports::choose(const std::string& address, const PeerAddress& peer, KvMemory& memory) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = chosen_.find(address);
    if (it != chosen_.end()) return it->second.choice;
  }
  // can_reach may call into the driver: outside the lock. Two threads may both decide; same answer. A
  // failed path is recorded with its entry (mark), so a first decision knows of no failure.
  TransportChoice choice = choose_transport(peer, local_host_, local_, memory, false, false);
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = chosen_.emplace(address, Peer{choice});
  if (inserted) {
    // Only workers that could use a device path say which path each peer gets.
    spdlog::log(device_paths() ? spdlog::level::info : spdlog::level::debug, "event=kv_transport_chosen peer={} transport={} reason={}",
                peer.tcp, transport_name(choice.transport), choice.reason);
  }
  return it->second.choice;
}

void PeerTransports::mark_failed(const std::string& address, const std::string& reason) { mark(address, reason, false); }

void PeerTransports::mark_link_failed(const std::string& address, const std::string& reason) { mark(address, reason, true); }

void PeerTransports::mark(const std::string& address, const std::string& reason, bool nccl) {
  std::lock_guard<std::mutex> lock(mu_);
  Peer& slot = chosen_[address];
  bool& failed = nccl ? slot.nccl_failed : slot.ipc_failed;
  if (failed) return;  // warned once already
  failed = true;
  const PeerAddress peer = parse_peer_address(address);
  // The next path: NCCL after a CUDA IPC failure where both sides offer it (no driver call is needed to
  // decide that: can_reach only matters for CUDA IPC, which has failed), else TCP.
  const bool nccl_next = !nccl && !slot.nccl_failed && !local_.nccl_device.empty() && !peer.nccl_device.empty() &&
                         !(peer.nccl_host == local_host_ && peer.nccl_device == local_.nccl_device);
  if (nccl_next) {
    slot.choice = {Transport::kNccl, "device_handles_failed_before_nccl"};
  } else {
    slot.choice = {Transport::kTcp, nccl ? "nccl_failed_before" : "device_handles_failed_before"};
  }
  spdlog::warn("event=kv_transfer_fallback peer={} from={} to={} reason=\"{}\"", peer.tcp, nccl ? "nccl" : "cuda_ipc",
               transport_name(slot.choice.transport), reason);
}

}  // namespace tandem::transfer
