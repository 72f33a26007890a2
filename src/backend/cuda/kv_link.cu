// CudaBackend (cuda_backend_impl.cuh): KV links over NCCL (backend.h's KvLink), the device side of
// `--kv-transfer nccl`. A link is a two-rank non-blocking NCCL communicator between this backend's GPU and
// one peer process's; a transfer is one ncclSend or ncclRecv per block (K and V of one layer, contiguous in
// the pool), issued in groups on the peer stream under peer_mu_ (beside CUDA IPC copies, never beside
// forward()'s stream), and waited for with a deadline: a peer that never answers aborts the link.
#include <cuda_runtime.h>

#include <chrono>
#include <thread>

#include "backend/cuda/cuda_backend_impl.cuh"
#include "backend/cuda/cuda_check.cuh"
#include "backend/cuda/nccl_communicator.h"

namespace tandem::backend::cuda {
namespace {

// Point-to-point calls per NCCL group: enough to keep the copy engines busy, few enough that one group's
// set-up stays small (a 4k-token prompt of an 80-layer model is 20k blocks).
constexpr size_t kLinkOpsPerGroup = 512;

class CudaKvLink final : public KvLink {
 public:
  CudaKvLink(CudaBackend* owner, std::unique_ptr<NcclCommunicator> comm) : owner_(owner), comm_(std::move(comm)) {}
  Status send(std::span<const KvBlockRef> blocks, int timeout_ms) override { return owner_->link_transfer(*comm_, blocks, true, timeout_ms); }
  Status recv(std::span<const KvBlockRef> blocks, int timeout_ms) override { return owner_->link_transfer(*comm_, blocks, false, timeout_ms); }

 private:
  CudaBackend* owner_;  // outlives its links (the transfer layer is shut down before the engine)
  std::unique_ptr<NcclCommunicator> comm_;
};

}  // namespace

std::string CudaBackend::kv_link_device() {
  // A tensor-parallel rank of several holds some heads only: its KV moves through the wrapper, over TCP.
  if ((rank_ && rank_->plan.world > 1) || !nccl_available().ok()) return "";
  char bus_id[32] = {};
  if (cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), device_) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return bus_id;
}

StatusOr<std::string> CudaBackend::make_kv_link_id() {
  StatusOr<NcclId> id = make_nccl_id();
  TANDEM_RETURN_IF_ERROR(id.status());
  return encode_nccl_id(*id);
}

StatusOr<std::unique_ptr<KvLink>> CudaBackend::open_kv_link(const std::string& link_id, int rank, int timeout_ms) {
  StatusOr<NcclId> id = decode_nccl_id(link_id);
  TANDEM_RETURN_IF_ERROR(id.status());
  if (rank != 0 && rank != 1) return Status::InvalidArgument("a KV link has ranks 0 and 1");
  auto comm = NcclCommunicator::join(*id, rank, 2, device_, std::max(1, timeout_ms));
  TANDEM_RETURN_IF_ERROR(comm.status());
  return std::unique_ptr<KvLink>(new CudaKvLink(this, std::move(*comm)));
}

Status CudaBackend::link_transfer(NcclCommunicator& comm, std::span<const KvBlockRef> blocks, bool send, int timeout_ms) {
  for (const KvBlockRef& b : blocks) {
    if (b.layer < 0 || b.layer >= kv_.num_layers || b.block < 0 || b.block >= kv_.num_blocks) {
      return Status::InvalidArgument("KV link: block " + std::to_string(b.block) + " of layer " + std::to_string(b.layer) +
                                     " is out of range");
    }
  }
  std::lock_guard<std::mutex> lock(peer_mu_);
  TANDEM_RETURN_IF_ERROR(comm.failure());
  TANDEM_CUDA_RETURN(cudaSetDevice(device_), device_);
  if (!peer_stream_) TANDEM_CUDA_RETURN(cudaStreamCreateWithFlags(&peer_stream_, cudaStreamNonBlocking), device_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max(1, timeout_ms));
  auto left_ms = [&] {
    return static_cast<int>(std::max<int64_t>(1, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count()));
  };
  const size_t bytes = kv_.block_bytes();
  const int peer = 1 - comm.rank();
  for (size_t begin = 0; begin < blocks.size(); begin += kLinkOpsPerGroup) {
    const size_t end = std::min(blocks.size(), begin + kLinkOpsPerGroup);
    TANDEM_RETURN_IF_ERROR(NcclCommunicator::group_start());
    // The group is ended whatever happened inside it (NCCL requires it).
    const Status issued = [&]() -> Status {
      for (size_t i = begin; i < end; ++i) {
        std::byte* block = layer_pool_bytes(blocks[i].layer) + static_cast<size_t>(blocks[i].block) * bytes;
        TANDEM_RETURN_IF_ERROR(send ? comm.send(block, bytes, peer, peer_stream_) : comm.recv(block, bytes, peer, peer_stream_));
      }
      return Status::Ok();
    }();
    Status ended = NcclCommunicator::group_end();
    TANDEM_RETURN_IF_ERROR(issued);
    TANDEM_RETURN_IF_ERROR(ended);
    TANDEM_RETURN_IF_ERROR(comm.settle(left_ms()));
  }
  // Done when the stream is: polled, so that a peer that stopped answering ends in an abort, not a hang.
  for (;;) {
    const cudaError_t state = cudaStreamQuery(peer_stream_);
    if (state == cudaSuccess) return comm.failure();
    if (state != cudaErrorNotReady) {
      Status failed = Status::Internal(cuda_failure("cudaStreamQuery", device_, state));
      comm.abort(failed);
      return failed;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      Status late = Status::DeadlineExceeded("KV link on cuda:" + std::to_string(device_) + ": " + std::to_string(blocks.size()) +
                                             " blocks not " + (send ? "sent" : "received") + " within " + std::to_string(timeout_ms) + " ms");
      comm.abort(late);  // ends the kernels waiting for the peer, so the stream drains
      cudaStreamSynchronize(peer_stream_);
      return late;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace tandem::backend::cuda
