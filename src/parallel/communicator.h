// Communicator: the collectives tensor-parallel ranks use (DESIGN.md §4 "Parallelism"): a sum all-reduce
// after the column-split projections (o, down), an all-gather of the vocabulary-split logits, and a
// broadcast. make_cpu_communicators() gives one group of ranks that are threads of one process; an
// NCCL implementation (ranks on GPUs) is to come behind the same interface (docs/parallelism.md).
//
// Contract of every collective: blocking; every rank of the group calls the same collectives in the same
// order with the same sizes (a mismatch is detected where cheap and fails every rank with
// InvalidArgument). A failed or aborted group stays failed: every pending and later collective returns
// the first failure (as a NCCL communicator must be aborted and rebuilt), so one rank's failure never
// leaves the others waiting.
//
// Ownership and thread-safety: a Communicator is one rank's handle, used by that rank's thread only;
// the handles of a group share the group's state (kept alive by the last handle). abort() may be called
// from any thread at any time.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

#include "common/status.h"

namespace tandem::parallel {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // data[i] <- sum over ranks r of rank r's data[i], on every rank. The order of the additions is fixed
  // (rank 0 first, then 1, ...), so the result does not depend on thread timing and is the same on every
  // rank, to the bit.
  virtual Status all_reduce_sum(std::span<float> data) = 0;

  // recv <- rank 0's send, then rank 1's, ... on every rank. REQUIRES recv.size() == world * send.size().
  virtual Status all_gather(std::span<const std::byte> send, std::span<std::byte> recv) = 0;

  // data <- root's data on every rank.
  virtual Status broadcast(std::span<std::byte> data, int root) = 0;

  // Fails the whole group with `reason` (non-OK): collectives waiting now and every later one return it.
  virtual void abort(const Status& reason) = 0;

  // Typed forms of the byte collectives.
  Status all_gather(std::span<const float> send, std::span<float> recv) {
    return all_gather(std::as_bytes(send), std::as_writable_bytes(recv));
  }
  template <typename T>
  Status broadcast(std::span<T> data, int root) {
    return broadcast(std::as_writable_bytes(data), root);
  }
};

// A group of `world_size` ranks that are threads of this process: handle r is rank r. Reductions are
// done by all ranks together (each sums a slice of the elements, in rank order). REQUIRES world_size >= 1.
std::vector<std::unique_ptr<Communicator>> make_cpu_communicators(int world_size);

}  // namespace tandem::parallel
