// Moving KV blocks between workers (DESIGN.md §2 step 3, §4 "KV layout"). The transfer layer speaks
// in (layer, block id) descriptors over registered memory, never in sequences or requests: the
// worker decides which blocks; a backend moves their bytes. Each transport is one backend behind the
// narrow TransferBackend interface (NIXL's shape): TCP through host buffers here, CUDA IPC/NVLink and
// RDMA later, and an in-process mock for tests.
//
// Ownership: a backend shares the KvMemory it was created over. Thread-safety: push() may be called
// from several threads at once; incoming pushes are written from the backend's own threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace tandem::transfer {

// One worker's KV pools as the transfer layer sees them: num_layers x num_blocks blocks of
// block_bytes each (one layer's K and V of one block, contiguous).
// Thread-safety: read_block/write_block may run on transfer threads while the owner computes on
// other blocks; callers never touch a block the engine is computing on.
class KvMemory {
 public:
  virtual ~KvMemory() = default;
  virtual int num_layers() const = 0;
  virtual int num_blocks() const = 0;
  virtual size_t block_bytes() const = 0;
  // InvalidArgument for an out-of-range layer/block or a wrong-sized buffer.
  virtual Status read_block(int layer, int block, std::span<std::byte> out) = 0;
  virtual Status write_block(int layer, int block, std::span<const std::byte> in) = 0;
};

// Copy block `src_block` of `layer` here into block `dst_block` of the same layer on the peer.
struct BlockCopy {
  int32_t layer = 0;
  int32_t src_block = 0;
  int32_t dst_block = 0;
};

struct TransferStats {
  int64_t num_bytes = 0;
  int num_blocks = 0;
  double seconds = 0;  // from the first byte read here to the peer's acknowledgement
};

class TransferBackend {
 public:
  virtual ~TransferBackend() = default;
  // "tcp", "mock"
  virtual std::string name() const = 0;
  // Where peers push into this side's memory, e.g. "tcp://127.0.0.1:41234"; handed to the pusher in
  // the RemotePrefill message.
  virtual std::string address() const = 0;
  // Copies each of `copies` from local memory into the memory behind `peer_address`, and returns
  // once the peer has acknowledged that every block is written (so it may compute on them).
  // Errors: Unavailable (peer unreachable or lost), DeadlineExceeded (past timeout_ms),
  // InvalidArgument (a block out of range or the two sides' block sizes differ). A failed push may
  // have written some blocks: the receiver treats the destination as garbage.
  virtual StatusOr<TransferStats> push(const std::string& peer_address, const std::string& transfer_id,
                                       std::span<const BlockCopy> copies, int timeout_ms) = 0;
  // Receiving side: accept pushes named `transfer_id` into these destination blocks (of every
  // layer) until forget(transfer_id). Pushes with an unknown id or a block outside the set are
  // refused (NotFound / InvalidArgument in the pusher's ack), so a late push never lands in blocks
  // that were given back.
  virtual void expect(const std::string& transfer_id, std::vector<int32_t> dst_blocks) = 0;
  // Once this returns, no further byte of `transfer_id` is written here.
  virtual void forget(const std::string& transfer_id) = 0;
  // Stops accepting pushes; idempotent.
  virtual void shutdown() = 0;
};

// TCP through host buffers: works between any two machines. Listens on host:port (0 = ephemeral).
// Throws tandem::Error if it cannot listen.
std::unique_ptr<TransferBackend> create_tcp_backend(std::shared_ptr<KvMemory> memory, const std::string& host,
                                                    uint16_t port);

// In-process: backends created with the same `fabric` name reach each other by address
// ("mock://<fabric>/<n>") and copy directly. For tests of the protocol around transfers.
std::unique_ptr<TransferBackend> create_mock_backend(std::shared_ptr<KvMemory> memory, const std::string& fabric);

// A KvMemory over plain host memory, for tests and the fake engine: [num_layers, num_blocks, block_bytes].
std::shared_ptr<KvMemory> create_host_kv_memory(int num_layers, int num_blocks, size_t block_bytes);

}  // namespace tandem::transfer
