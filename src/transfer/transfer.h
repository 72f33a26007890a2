// Moving KV blocks between workers (DESIGN.md §2 step 3, §4 "KV layout"). The transfer layer speaks
// in (layer, block id) descriptors over registered memory, never in sequences or requests: the
// worker decides which blocks; a backend moves their bytes. Each transport is one backend behind the
// narrow TransferBackend interface (NIXL's shape): TCP through host buffers, CUDA IPC (device to
// device on one host: the same GPU, or peers over NVLink/PCIe) riding on the TCP backend's connection
// for its handshake and fallback, RDMA later, and an in-process mock for tests.
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

// One block of one layer (the NCCL path names each side's blocks in the order they travel).
struct BlockRef {
  int32_t layer = 0;
  int32_t block = 0;
};

// A point-to-point link between this memory and one peer process's (NCCL: two ranks, the pusher 0 and
// the receiver 1), made by KvMemory::open_link on both sides with the same id. The i-th block sent by
// one side lands in the i-th block the other receives; each call returns once its blocks are done, or
// DeadlineExceeded past timeout_ms (the link is then broken: every later call fails).
// Thread-safety: one transfer at a time per link (the pusher serializes them).
class KvLink {
 public:
  virtual ~KvLink() = default;
  virtual Status send(std::span<const BlockRef> blocks, int timeout_ms) = 0;
  virtual Status recv(std::span<const BlockRef> blocks, int timeout_ms) = 0;
};

// Copy block `src_block` of `layer` here into block `dst_block` of the same layer on the peer.
struct BlockCopy {
  int32_t layer = 0;
  int32_t src_block = 0;
  int32_t dst_block = 0;
};

// One worker's KV pools as the transfer layer sees them: num_layers x num_blocks blocks of
// block_bytes each (one layer's K and V of one block, contiguous).
// Thread-safety: read_block/write_block may run on transfer threads while the owner computes on
// other blocks; callers never touch a block the engine is computing on. The device-path methods
// may be called from several transfer threads at once.
class KvMemory {
 public:
  virtual ~KvMemory() = default;
  virtual int num_layers() const = 0;
  virtual int num_blocks() const = 0;
  virtual size_t block_bytes() const = 0;
  // InvalidArgument for an out-of-range layer/block or a wrong-sized buffer.
  virtual Status read_block(int layer, int block, std::span<std::byte> out) = 0;
  virtual Status write_block(int layer, int block, std::span<const std::byte> in) = 0;

  // ---- Device path (CUDA IPC): memory on a GPU that another process on this host can map. The
  // defaults say "no device path", which is right for host memory.
  //
  // A one-line descriptor of this memory (no ';', '/', or whitespace) that a process on this host opens
  // with copy_to_peer; Unsupported when this is not device memory. Valid while this memory lives.
  virtual StatusOr<std::string> export_device_handles() { return Status::Unsupported("KV memory is not on a device"); }
  // Whether this memory's device can write the memory behind `peer_handles` (the same GPU, or one
  // with peer access). False for a malformed descriptor.
  virtual bool can_reach(const std::string& peer_handles) { (void)peer_handles; return false; }
  // Copies each of `copies` from here into the memory behind `peer_handles`, device to device and
  // batched (many blocks per call); opens the handles on first use and keeps them open. Returns once
  // every byte is in place. Unavailable when the handles cannot be opened (the caller falls back to
  // another path); InvalidArgument for a geometry mismatch or a block out of range.
  virtual Status copy_to_peer(const std::string& peer_handles, std::span<const BlockCopy> copies) {
    (void)peer_handles, (void)copies;
    return Status::Unsupported("KV memory is not on a device");
  }

  // ---- Device path (NCCL point-to-point): for device memory that a peer cannot map (another container,
  // pod or host). The defaults say "no NCCL path".
  //
  // Names this memory's GPU for the "same GPU" check (NCCL cannot link two ranks on one GPU): its PCI bus
  // id; empty when this memory cannot open NCCL links.
  virtual std::string link_device() { return ""; }
  // A fresh link id (an ncclUniqueId, hex) for open_link on both sides.
  virtual StatusOr<std::string> make_link_id() { return Status::Unsupported("KV memory has no NCCL path"); }
  // Joins the link named `link_id` as `rank` (0 pusher, 1 receiver); blocks until the peer has joined too.
  virtual StatusOr<std::unique_ptr<KvLink>> open_link(const std::string& link_id, int rank) {
    (void)link_id, (void)rank;
    return Status::Unsupported("KV memory has no NCCL path");
  }
};

struct TransferStats {
  int64_t num_bytes = 0;
  int num_blocks = 0;
  double seconds = 0;  // from the first byte read here to the peer's acknowledgement
  std::string transport;  // what moved the bytes: "tcp", "cuda_ipc", "nccl", "mock"
};

class TransferBackend {
 public:
  virtual ~TransferBackend() = default;
  // "tcp", "cuda_ipc", "mock"
  virtual std::string name() const = 0;
  // Where peers push into this side's memory, e.g. "tcp://127.0.0.1:41234", or with the device path
  // "tcp://127.0.0.1:41234;cuda_ipc=<host id>/<descriptor>"; handed to the pusher in the RemotePrefill
  // message. A pusher without the device path ignores everything after ';'.
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
  // Stops accepting pushes and waits for the connection threads to end; idempotent.
  virtual void shutdown() = 0;
};

// TCP through host buffers: works between any two machines. Listens on host:port (0 = ephemeral).
// Throws tandem::Error if it cannot listen.
std::unique_ptr<TransferBackend> create_tcp_backend(std::shared_ptr<KvMemory> memory, const std::string& host,
                                                    uint16_t port);

// TCP, plus the CUDA IPC path when `memory` exports device handles: a push to a peer whose address
// carries a descriptor from the same host, reachable from this device (KvMemory::can_reach), claims the
// destination blocks over the TCP connection (so the receiver's expect/forget contract holds), copies
// device to device, and releases the claim; a peer whose handles cannot be opened is pushed over TCP
// from then on, after one warning line. The NCCL path (when `memory` has a link_device) serves peers
// that CUDA IPC cannot reach: the claim carries the pair's link id (made by the pusher on first use), both
// sides join the link, the blocks go GPU to GPU in order, and the receiver acknowledges on the same
// connection; a link that fails sends that peer to TCP for good, after one warning line (see
// transport_choice.h for the rule). `kind`: "auto" (CUDA IPC, else NCCL, where the memory allows, else
// TCP), "tcp" (neither), "cuda_ipc" (throws tandem::Error if the memory exports no handles), "nccl" (NCCL
// to every peer offering it, even one CUDA IPC could reach; throws if the memory has no NCCL path).
// Throws tandem::Error if it cannot listen or `kind` is unknown.
std::unique_ptr<TransferBackend> create_transfer_backend(const std::string& kind, std::shared_ptr<KvMemory> memory,
                                                         const std::string& host, uint16_t port);

// In-process: backends created with the same `fabric` name reach each other by address
// ("mock://<fabric>/<n>") and copy directly. For tests of the protocol around transfers.
std::unique_ptr<TransferBackend> create_mock_backend(std::shared_ptr<KvMemory> memory, const std::string& fabric);

// A KvMemory over plain host memory, for tests and the fake engine: [num_layers, num_blocks, block_bytes].
std::shared_ptr<KvMemory> create_host_kv_memory(int num_layers, int num_blocks, size_t block_bytes);

}  // namespace tandem::transfer
