// NcclCommunicator: the tensor-parallel collectives (parallel/communicator.h) and point-to-point sends over
// NCCL, between GPUs of one process (the CUDA tensor-parallel backend's ranks) or of several processes
// (the NCCL KV transfer's prefill/decode pairs). Plain C++ (no CUDA or NCCL header), so tests and the
// worker can hold one; streams are passed as CUDA's own opaque type.
//
// NCCL is loaded with dlopen on first use (libnccl.so.2 from the loader's path, then /usr/local/cuda/lib
// and lib64, or $TANDEM_NCCL_LIBRARY), so a CUDA build runs where NCCL is absent for everything that does
// not ask for it; nccl_available() says why it cannot be used.
//
// Two forms of each collective:
//  - stream-ordered (the overloads taking a stream): device buffers, enqueued on the caller's stream and
//    returning at once; legal inside CUDA graph capture (the decode step's graph holds them).
//  - the parallel::Communicator ones: device buffers too (the spans are never read on the host), enqueued
//    on the communicator's own stream and waited for, so they keep that interface's blocking contract.
// Every rank of a group calls the same collectives in the same order with the same sizes.
//
// Failure: abort() (any thread, any time) marks the whole in-process group failed and aborts every
// member's NCCL communicator (ncclCommAbort, which also ends kernels waiting for a lost peer); every later
// call returns the failure. NCCL's own errors come back as Status::Internal naming the call.
//
// Ownership and thread-safety: one handle per rank, used by that rank's thread (abort excepted). The
// handles made together share the group state (kept alive by the last handle).
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "parallel/communicator.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace tandem::backend::cuda {

// An ncclUniqueId: made by one process, handed to every rank of the communicator (by the process that
// owns the ranks, or over the KV transfer handshake), which all join with it.
using NcclId = std::array<std::byte, 128>;

// Lower-case hex (256 characters) and back; decode: InvalidArgument for anything else.
std::string encode_nccl_id(const NcclId& id);
StatusOr<NcclId> decode_nccl_id(const std::string& hex);

// OK when libnccl could be loaded and its version read; otherwise Unavailable saying what was tried.
Status nccl_available();
// "2.28.9", or "" when unavailable.
std::string nccl_version();
// A fresh id (ncclGetUniqueId). Unavailable without NCCL.
StatusOr<NcclId> make_nccl_id();

enum class NcclType { kFloat32, kBFloat16, kInt32, kUint8 };

struct NcclGroup;

class NcclCommunicator final : public parallel::Communicator {
 public:
  // Joins rank `rank` of `world` of the communicator named by `id`, on CUDA device `device` (made current
  // on the calling thread). Blocks until every rank has joined (ncclCommInitRank is collective).
  // timeout_ms > 0: a non-blocking communicator (for links between processes, where the peer may be gone):
  // DeadlineExceeded when the ranks have not all joined in time; its calls then return at once and
  // settle() waits for them.
  static StatusOr<std::unique_ptr<NcclCommunicator>> join(const NcclId& id, int rank, int world, int device,
                                                          int timeout_ms = 0);
  // Non-blocking communicators: waits until the calls issued so far are enqueued on their streams (not
  // that they have run), or fails the group with DeadlineExceeded after timeout_ms. OK at once
  // for a blocking one.
  Status settle(int timeout_ms);

  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  int device() const { return device_; }

  // Stream-ordered, device buffers; see the file comment.
  Status all_reduce_sum(void* data, size_t count, NcclType type, CUstream_st* stream);
  // recv <- every rank's send_bytes, rank order. REQUIRES recv holds world * send_bytes.
  Status all_gather(const void* send, void* recv, size_t send_bytes, CUstream_st* stream);
  Status broadcast(void* data, size_t bytes, int root, CUstream_st* stream);
  Status send(const void* data, size_t bytes, int peer, CUstream_st* stream);
  Status recv(void* data, size_t bytes, int peer, CUstream_st* stream);
  // Brackets several send/recv so that NCCL issues them together (both directions at once, many blocks).
  static Status group_start();
  static Status group_end();  // a non-blocking member's group may still be in progress: settle() after it

  // parallel::Communicator: device buffers, waited for on the communicator's stream.
  using parallel::Communicator::all_gather;
  using parallel::Communicator::broadcast;
  Status all_reduce_sum(std::span<float> data) override;
  Status all_gather(std::span<const std::byte> send, std::span<std::byte> recv) override;
  Status broadcast(std::span<std::byte> data, int root) override;
  void abort(const Status& reason) override;
  // The group's failure (OK while healthy).
  Status failure() const;

 private:
  friend StatusOr<std::vector<std::unique_ptr<NcclCommunicator>>> make_nccl_communicators(std::span<const int> devices);
  NcclCommunicator(void* comm, int rank, int world, int device, std::shared_ptr<NcclGroup> group, bool nonblocking = false);
  Status ensure_own_stream();
  Status wait_own_stream(const char* what);

  void* comm_ = nullptr;  // ncclComm_t; owned through group_ (aborted or destroyed once)
  int rank_ = 0;
  int world_ = 1;
  int device_ = 0;
  bool nonblocking_ = false;
  CUstream_st* stream_ = nullptr;  // for the blocking Communicator forms
  std::shared_ptr<NcclGroup> group_;
};

// One group whose ranks are the GPUs `devices` of this process (rank i on devices[i]), made from one id
// in one NCCL group call on the calling thread. Unavailable without NCCL; Internal naming the device when
// a rank cannot join.
StatusOr<std::vector<std::unique_ptr<NcclCommunicator>>> make_nccl_communicators(std::span<const int> devices);

// Destroys the handles of one in-process group at once, one thread each (destroying a communicator may
// wait for the other ranks, so one thread destroying them in turn could wait forever); empties `comms`.
void destroy_nccl_communicators(std::vector<std::unique_ptr<NcclCommunicator>>& comms);

}  // namespace tandem::backend::cuda
