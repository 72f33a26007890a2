// The CPU communicator: ranks are threads of one process sharing a Group. Each collective publishes
// every rank's buffer in the group, meets at a barrier, works on the others' buffers directly, and
// meets again before returning, so no rank changes a buffer another rank is still reading.
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include "common/error.h"
#include "parallel/communicator.h"

namespace tandem::parallel {
namespace {

class Group {
 public:
  explicit Group(int world) : world_(world), buffers_(world), sizes_(world), partial_(world) {}

  int world() const { return world_; }

  // Every rank's arrival; OK once all world ranks have arrived, the group's failure when it has failed
  // (before or while waiting).
  Status barrier() {
    std::unique_lock lock(mu_);
    if (!failure_.ok()) return failure_;
    const uint64_t generation = generation_;
    if (++arrived_ == world_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return Status::Ok();
    }
    cv_.wait(lock, [&] { return generation_ != generation || !failure_.ok(); });
    return failure_.ok() ? Status::Ok() : failure_;
  }

  void abort(const Status& reason) {
    std::lock_guard lock(mu_);
    if (failure_.ok()) failure_ = reason.ok() ? Status::Internal("communicator aborted") : reason;
    cv_.notify_all();
  }

  Status failure() {
    std::lock_guard lock(mu_);
    return failure_;
  }

  // Published per collective: rank r writes only its own entries, before the first barrier; the others
  // read them between the two barriers (the barrier's mutex orders the accesses).
  const void* buffer(int r) const { return buffers_[r]; }
  size_t size(int r) const { return sizes_[r]; }
  void publish(int r, const void* buffer, size_t size) {
    buffers_[r] = buffer;
    sizes_[r] = size;
  }
  // Rank r's slice of an all-reduce result: written by r between the barriers, read by all after the
  // second one; the next collective's first barrier orders those reads before r writes again.
  std::vector<float>& partial(int r) { return partial_[r]; }

  // Fails every rank alike when the ranks did not pass the same sizes (each rank sees every size).
  Status check_sizes(const char* what) {
    for (int r = 1; r < world_; ++r) {
      if (sizes_[r] != sizes_[0]) {
        Status error = Status::InvalidArgument(std::string(what) + ": rank " + std::to_string(r) + " passed " +
                                               std::to_string(sizes_[r]) + " bytes, rank 0 passed " +
                                               std::to_string(sizes_[0]));
        abort(error);
        return error;
      }
    }
    return Status::Ok();
  }

 private:
  const int world_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  Status failure_;
  std::vector<const void*> buffers_;
  std::vector<size_t> sizes_;
  std::vector<std::vector<float>> partial_;
};

class CpuCommunicator : public Communicator {
 public:
  CpuCommunicator(std::shared_ptr<Group> group, int rank) : group_(std::move(group)), rank_(rank) {}
  using Communicator::all_gather;
  using Communicator::broadcast;

  int rank() const override { return rank_; }
  int world_size() const override { return group_->world(); }

  Status all_reduce_sum(std::span<float> data) override {
    const int world = group_->world();
    if (world == 1) return group_->failure();
    group_->publish(rank_, data.data(), data.size_bytes());
    TANDEM_RETURN_IF_ERROR(group_->barrier());
    TANDEM_RETURN_IF_ERROR(group_->check_sizes("all_reduce_sum"));
    const size_t n = data.size();
    // This rank sums elements [lo, hi) of every rank's buffer, rank 0 first: the same order on every run.
    const size_t lo = n * rank_ / world, hi = n * (rank_ + 1) / world;
    std::vector<float>& mine = group_->partial(rank_);
    mine.assign(static_cast<const float*>(group_->buffer(0)) + lo, static_cast<const float*>(group_->buffer(0)) + hi);
    for (int r = 1; r < world; ++r) {
      const float* src = static_cast<const float*>(group_->buffer(r));
      for (size_t i = lo; i < hi; ++i) mine[i - lo] += src[i];
    }
    TANDEM_RETURN_IF_ERROR(group_->barrier());
    for (int r = 0; r < world; ++r) {
      const std::vector<float>& slice = group_->partial(r);
      std::copy(slice.begin(), slice.end(), data.begin() + static_cast<std::ptrdiff_t>(n * r / world));
    }
    return Status::Ok();
  }

  Status all_gather(std::span<const std::byte> send, std::span<std::byte> recv) override {
    const int world = group_->world();
    if (recv.size() != send.size() * world) {
      Status error = Status::InvalidArgument("all_gather: receive buffer must be world_size times the send buffer");
      group_->abort(error);
      return error;
    }
    if (world == 1) {
      TANDEM_RETURN_IF_ERROR(group_->failure());
      if (!send.empty()) std::memmove(recv.data(), send.data(), send.size());
      return Status::Ok();
    }
    group_->publish(rank_, send.data(), send.size());
    TANDEM_RETURN_IF_ERROR(group_->barrier());
    TANDEM_RETURN_IF_ERROR(group_->check_sizes("all_gather"));
    for (int r = 0; r < world; ++r) {
      if (!send.empty()) std::memcpy(recv.data() + send.size() * r, group_->buffer(r), send.size());
    }
    // The others may still be reading our send buffer.
    return group_->barrier();
  }

  Status broadcast(std::span<std::byte> data, int root) override {
    const int world = group_->world();
    if (root < 0 || root >= world) {
      Status error = Status::InvalidArgument("broadcast: root " + std::to_string(root) + " is not a rank");
      group_->abort(error);
      return error;
    }
    if (world == 1) return group_->failure();
    group_->publish(rank_, data.data(), data.size());
    TANDEM_RETURN_IF_ERROR(group_->barrier());
    TANDEM_RETURN_IF_ERROR(group_->check_sizes("broadcast"));
    if (rank_ != root && !data.empty()) std::memcpy(data.data(), group_->buffer(root), data.size());
    return group_->barrier();
  }

  void abort(const Status& reason) override { group_->abort(reason); }

 private:
  std::shared_ptr<Group> group_;
  const int rank_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_cpu_communicators(int world_size) {
  TANDEM_CHECK(world_size >= 1);
  auto group = std::make_shared<Group>(world_size);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < world_size; ++r) out.push_back(std::make_unique<CpuCommunicator>(group, r));
  return out;
}

}  // namespace tandem::parallel
