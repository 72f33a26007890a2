// The CUDA backend's two profiles, each switched on by its environment variable when the backend is
// created (the backend's only switches; docs/performance.md says how to read them):
//   TANDEM_PROFILE_KERNELS=1  KernelProfile: where a step's GPU time goes, part by part;
//   TANDEM_PROFILE_STEPS=1    StepTiming: where the wall time of a decode step through a CUDA graph goes.
// Both log their totals once, from finish(), when the backend closes. Owned by one CudaBackend and used
// only from the thread that runs its forward steps; not thread-safe.
#pragma once

#include <cuda_runtime.h>

#include <chrono>
#include <cstdint>
#include <utility>
#include <vector>

namespace tandem::backend::cuda {

// The parts of a forward step the kernel profile tells apart (the kernels of one kind, all layers).
enum class StepPart { kEmbed, kNorm, kQkvGemm, kQkvRope, kAttention, kOGemm, kGateUpGemm, kDownGemm, kLmHead, kArgmax };
constexpr int kNumStepParts = 10;

// TANDEM_PROFILE_KERNELS=1: the backend runs its steps without CUDA graphs (it asks enabled()), with an
// event between the parts of each step, and finish() logs where each phase's GPU time went
// (`cuda profile: phase=... part=...`). The events break PDL's overlap and the graphs' launch savings,
// so the totals read high; the shares are what it is for.
class KernelProfile {
 public:
  KernelProfile();  // reads TANDEM_PROFILE_KERNELS
  KernelProfile(const KernelProfile&) = delete;
  KernelProfile& operator=(const KernelProfile&) = delete;

  bool enabled() const { return enabled_; }
  // The step about to be enqueued on `stream` starts here; `decode` says which phase it counts in.
  void begin_step(bool decode, cudaStream_t stream) {
    if (enabled_) record_start(decode, stream);
  }
  // The kernels of `part` enqueued since the previous mark end here.
  void mark(StepPart part, cudaStream_t stream) {
    if (enabled_) record_mark(part, stream);
  }
  // Adds the step's intervals to the totals. REQUIRES: the step's stream has been synchronized.
  void collect();
  // Logs the totals and releases the events. Call once, when the backend closes.
  void finish();

 private:
  void record_start(bool decode, cudaStream_t stream);
  void record_mark(StepPart part, cudaStream_t stream);
  cudaEvent_t take_event();

  bool enabled_ = false;
  std::vector<std::pair<StepPart, cudaEvent_t>> marks_;  // this step's events, in stream order, each ending a part
  cudaEvent_t start_ = nullptr;
  std::vector<cudaEvent_t> pool_;  // events to reuse
  double ms_[2][kNumStepParts] = {};  // [prefill, decode][part]
  int64_t steps_[2] = {};
  bool decode_ = false;  // the step being enqueued is a decode step
};

// TANDEM_PROFILE_STEPS=1: where the wall time of a decode step through a CUDA graph goes, with the
// graphs and PDL left on (what the benchmarks run): the backend's host work before the upload (plan,
// metadata packing), the GPU from the metadata upload to the tokens on the host (events around the
// replay), and the engine's time between one step's return and the next step's call; finish() logs
// them as `cuda step timing:`. The share of the step the GPU is busy says how much overlapping the host
// work with the GPU could buy.
class StepTiming {
 public:
  StepTiming();  // reads TANDEM_PROFILE_STEPS
  StepTiming(const StepTiming&) = delete;
  StepTiming& operator=(const StepTiming&) = delete;

  bool enabled() const { return enabled_; }
  // A forward call starts.
  void step_entered() {
    if (!enabled_) return;
    entered_ = std::chrono::steady_clock::now();
    in_step_ = false;  // set by a graph step once its first event is in the stream
  }
  // A graph step's metadata upload is about to be enqueued on `stream`: its host work ends here.
  cudaError_t replay_begins(cudaStream_t stream);
  // A graph step is between its two events: finish_step records the second (record_done).
  bool in_step() const { return in_step_; }
  cudaError_t record_done(cudaStream_t stream) { return cudaEventRecord(done_, stream); }
  // The step's stream has been synchronized; `timed`: it was in_step() before.
  void step_returned(bool timed);
  // Logs the averages and releases the events. Call once, when the backend closes.
  void finish();

 private:
  bool enabled_ = false;
  cudaEvent_t upload_ = nullptr, done_ = nullptr;  // around the replay
  bool in_step_ = false;                           // a graph step is between its two events
  std::chrono::steady_clock::time_point entered_, returned_;
  bool returned_valid_ = false;  // the previous forward call was a graph step that returned
  double host_prep_us_ = 0, gpu_us_ = 0, engine_gap_us_ = 0;
  int64_t steps_ = 0, gaps_ = 0;
};

}  // namespace tandem::backend::cuda
