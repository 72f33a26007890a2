// Transport choice per peer (see transport_choice.h).
#include "transfer/transport_choice.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <fstream>

namespace tandem::transfer {

namespace {
constexpr const char* kTcpScheme = "tcp://";
constexpr const char* kIpcKey = "cuda_ipc=";
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
      const std::string value = part.substr(std::string(kIpcKey).size());
      const size_t slash = value.find('/');
      if (slash != std::string::npos && slash > 0 && slash + 1 < value.size()) {
        out.host_id = value.substr(0, slash);
        out.device_handles = value.substr(slash + 1);
      }
    }
    pos = next;
  }
  return out;
}

std::string format_address(const std::string& tcp_host_port, const std::string& host_id, const std::string& device_handles) {
  std::string out = kTcpScheme + tcp_host_port;
  if (!device_handles.empty()) out += std::string(";") + kIpcKey + host_id + "/" + device_handles;
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

const char* transport_name(Transport t) { return t == Transport::kCudaIpc ? "cuda_ipc" : "tcp"; }

TransportChoice choose_transport(const PeerAddress& peer, const std::string& local_host, bool local_device_path,
                                 KvMemory& memory, bool failed) {
  if (!local_device_path) return {Transport::kTcp, "no_local_device_path"};
  if (peer.device_handles.empty()) return {Transport::kTcp, "peer_has_no_device_path"};
  if (peer.host_id != local_host) return {Transport::kTcp, "other_host"};
  if (failed) return {Transport::kTcp, "device_handles_failed_before"};
  if (!memory.can_reach(peer.device_handles)) return {Transport::kTcp, "device_not_reachable"};
  return {Transport::kCudaIpc, "same_host_device_reachable"};
}

TransportChoice PeerTransports::choose(const std::string& address, const PeerAddress& peer, KvMemory& memory) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = chosen_.find(address);
    if (it != chosen_.end()) return it->second;
  }
  // can_reach may call into the driver: outside the lock. Two threads may both decide; same answer.
  TransportChoice choice = choose_transport(peer, local_host_, local_device_path_, memory, false);
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = chosen_.emplace(address, choice);
  if (inserted) {
    // Only workers that could use CUDA IPC say which path each peer gets.
    spdlog::log(local_device_path_ ? spdlog::level::info : spdlog::level::debug,"event=kv_transport_chosen peer={} transport={} reason={}", peer.tcp, transport_name(choice.transport),
                 choice.reason);
  }
  return it->second;
}

void PeerTransports::mark_failed(const std::string& address, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  TransportChoice& slot = chosen_[address];
  if (slot.transport == Transport::kTcp && slot.reason == "device_handles_failed_before") return;
  slot = {Transport::kTcp, "device_handles_failed_before"};
  spdlog::warn("event=kv_transfer_fallback peer={} from=cuda_ipc to=tcp reason=\"{}\"", parse_peer_address(address).tcp,
               reason);
}

}  // namespace tandem::transfer
