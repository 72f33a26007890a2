// CudaBackend (cuda_backend_impl.cuh): KV blocks to and from the host, the KV pool exported as a CUDA IPC
// handle, and blocks copied to and from a peer's pool (another process's, on this GPU or one it can reach)
// on a stream of their own.
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>

#include "backend/cuda/cuda_backend_impl.cuh"
#include "backend/cuda/cuda_check.cuh"
#include "backend/cuda/kernels.cuh"

namespace tandem::backend::cuda {

Status CudaBackend::read_kv_block(int layer, int block, std::span<std::byte> out) {
  if (layer < 0 || layer >= kv_.num_layers || block < 0 || block >= kv_.num_blocks) return Status::InvalidArgument("KV block out of range");
  if (out.size() != kv_.block_bytes()) return Status::InvalidArgument("KV block buffer has the wrong size");
  TANDEM_CUDA_RETURN(cudaSetDevice(device_), device_);
  const std::byte* src = layer_pool_bytes(layer) + static_cast<size_t>(block) * kv_.block_bytes();
  TANDEM_CUDA_RETURN(cudaMemcpyAsync(out.data(), src, out.size(), cudaMemcpyDeviceToHost, stream_), device_);
  TANDEM_CUDA_RETURN(cudaStreamSynchronize(stream_), device_);
  return Status::Ok();
}

Status CudaBackend::write_kv_block(int layer, int block, std::span<const std::byte> in) {
  if (layer < 0 || layer >= kv_.num_layers || block < 0 || block >= kv_.num_blocks) return Status::InvalidArgument("KV block out of range");
  if (in.size() != kv_.block_bytes()) return Status::InvalidArgument("KV block buffer has the wrong size");
  TANDEM_CUDA_RETURN(cudaSetDevice(device_), device_);
  std::byte* dst = layer_pool_bytes(layer) + static_cast<size_t>(block) * kv_.block_bytes();
  TANDEM_CUDA_RETURN(cudaMemcpyAsync(dst, in.data(), in.size(), cudaMemcpyHostToDevice, stream_), device_);
  TANDEM_CUDA_RETURN(cudaStreamSynchronize(stream_), device_);
  return Status::Ok();
}

StatusOr<KvExport> CudaBackend::export_kv_handles() {
  TANDEM_CUDA_RETURN(cudaSetDevice(device_), device_);
  cudaIpcMemHandle_t handle;
  TANDEM_CUDA_RETURN(cudaIpcGetMemHandle(&handle, kv_pool_), device_);
  KvExport out;
  out.device = device_name();
  out.device_ordinal = device_;
  char bus_id[32] = {};
  TANDEM_CUDA_RETURN(cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), device_), device_);
  out.pci_bus_id = bus_id;
  out.process_id = static_cast<int64_t>(getpid());
  out.spec = kv_;
  out.layer_stride_bytes = layer_pool_bytes_;
  const auto* bytes = reinterpret_cast<const std::byte*>(&handle);
  out.handle.assign(bytes, bytes + sizeof(handle));
  return out;
}

Status CudaBackend::copy_with_peer(const KvExport& peer, std::span<const int32_t> peer_blocks,
                                   std::span<const int32_t> local_blocks, int layer_begin, int layer_end, bool from_peer) {
  const KvCacheSpec& ps = peer.spec;
  if (ps.num_layers != kv_.num_layers || ps.block_size != kv_.block_size || ps.num_kv_heads != kv_.num_kv_heads ||
      ps.head_dim != kv_.head_dim || ps.dtype != kv_.dtype) {
    return Status::InvalidArgument("peer " + peer.device + " has a different KV geometry" +
                                   (ps.dtype != kv_.dtype ? " (KV cache dtype " + kv_dtype_name(ps.dtype) + " there, " +
                                                                kv_dtype_name(kv_.dtype) + " here)"
                                                          : std::string()));
  }
  if (peer.handle.size() != sizeof(cudaIpcMemHandle_t)) return Status::InvalidArgument("peer KV handle has the wrong size");
  if (peer_blocks.size() != local_blocks.size()) return Status::InvalidArgument("peer and local block lists differ in length");
  if (layer_end < 0) layer_end = kv_.num_layers;
  if (layer_begin < 0 || layer_begin >= layer_end || layer_end > kv_.num_layers) return Status::InvalidArgument("layer range out of bounds");
  for (size_t i = 0; i < local_blocks.size(); ++i) {
    if (local_blocks[i] < 0 || local_blocks[i] >= kv_.num_blocks || peer_blocks[i] < 0 || peer_blocks[i] >= ps.num_blocks) {
      return Status::InvalidArgument("KV block id out of range in a peer copy");
    }
  }
  if (peer.process_id == static_cast<int64_t>(getpid())) {
    return Status::Unavailable("a CUDA IPC handle cannot be opened in the process that exported it");
  }
  if (local_blocks.empty()) return Status::Ok();
  TANDEM_CUDA_RETURN(cudaSetDevice(device_), device_);
  std::lock_guard<std::mutex> lock(peer_mu_);
  if (!peer_stream_) TANDEM_CUDA_RETURN(cudaStreamCreateWithFlags(&peer_stream_, cudaStreamNonBlocking), device_);
  const std::string key(reinterpret_cast<const char*>(peer.handle.data()), peer.handle.size());
  auto it = peer_pools_.find(key);
  if (it == peer_pools_.end()) {
    cudaIpcMemHandle_t handle;
    std::memcpy(&handle, peer.handle.data(), sizeof(handle));
    void* ptr = nullptr;
    cudaError_t err = cudaIpcOpenMemHandle(&ptr, handle, cudaIpcMemLazyEnablePeerAccess);
    if (err != cudaSuccess) {
      cudaGetLastError();
      return Status::Unavailable(cuda_failure("cudaIpcOpenMemHandle", device_, err) + " (peer " + peer.device + " pid " +
                                 std::to_string(peer.process_id) + ")");
    }
    it = peer_pools_.emplace(key, ptr).first;
  }
  // Block ids to the device in one copy: [peer ids][local ids].
  const size_t n = local_blocks.size();
  if (2 * n > peer_ids_capacity_) {
    const size_t capacity = std::max<size_t>(2 * n, 4096);
    cudaFreeHost(peer_ids_host_);
    cudaFree(peer_ids_dev_);
    peer_ids_host_ = nullptr;
    peer_ids_dev_ = nullptr;
    peer_ids_capacity_ = 0;
    TANDEM_CUDA_RETURN(cudaMallocHost(&peer_ids_host_, capacity * sizeof(int32_t)), device_);
    TANDEM_CUDA_RETURN(cudaMalloc(&peer_ids_dev_, capacity * sizeof(int32_t)), device_);
    peer_ids_capacity_ = capacity;
  }
  std::memcpy(peer_ids_host_, peer_blocks.data(), n * sizeof(int32_t));
  std::memcpy(peer_ids_host_ + n, local_blocks.data(), n * sizeof(int32_t));
  TANDEM_CUDA_RETURN(cudaMemcpyAsync(peer_ids_dev_, peer_ids_host_, 2 * n * sizeof(int32_t), cudaMemcpyHostToDevice, peer_stream_),
                     device_);
  const int32_t* peer_ids = peer_ids_dev_;
  const int32_t* local_ids = peer_ids_dev_ + n;
  std::byte* peer_base = static_cast<std::byte*>(it->second) + layer_begin * peer.layer_stride_bytes;
  const size_t local_stride = layer_pool_bytes_;
  std::byte* local_base = reinterpret_cast<std::byte*>(kv_pool_) + layer_begin * local_stride;
  const int layers = layer_end - layer_begin;
  if (from_peer) {
    TANDEM_CUDA_RETURN(
        launch_copy_kv_blocks(peer_base, peer.layer_stride_bytes, local_base, local_stride, kv_.block_bytes(), peer_ids,
                              local_ids, static_cast<int>(n), layers, peer_stream_, launch_),
        device_);
  } else {
    TANDEM_CUDA_RETURN(
        launch_copy_kv_blocks(local_base, local_stride, peer_base, peer.layer_stride_bytes, kv_.block_bytes(),
                              local_ids, peer_ids, static_cast<int>(n), layers, peer_stream_, launch_),
        device_);
  }
  TANDEM_CUDA_RETURN(cudaStreamSynchronize(peer_stream_), device_);
  return Status::Ok();
}

bool CudaBackend::can_reach_peer(const KvExport& peer) {
  if (peer.handle.size() != sizeof(cudaIpcMemHandle_t)) return false;
  int ordinal = -1;
  if (peer.pci_bus_id.empty() || cudaDeviceGetByPCIBusId(&ordinal, peer.pci_bus_id.c_str()) != cudaSuccess) {
    cudaGetLastError();
    return false;  // the exporter's GPU is not visible here
  }
  if (ordinal == device_) return true;
  int can = 0;
  if (cudaDeviceCanAccessPeer(&can, device_, ordinal) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return can != 0;
}

}  // namespace tandem::backend::cuda
