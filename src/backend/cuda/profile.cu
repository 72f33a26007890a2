// The CUDA backend's kernel profile and step timing (see profile.cuh).
#include "backend/cuda/profile.cuh"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "backend/cuda/cuda_log.h"

namespace tandem::backend::cuda {
namespace {

// A profiling switch of the environment: on when set to 1.
bool switched_on(const char* name) {
  const char* value = std::getenv(name);
  return value && std::string(value) == "1";
}

}  // namespace

KernelProfile::KernelProfile() : enabled_(switched_on("TANDEM_PROFILE_KERNELS")) {}

cudaEvent_t KernelProfile::take_event() {
  cudaEvent_t e = nullptr;
  if (!pool_.empty()) {
    e = pool_.back();
    pool_.pop_back();
  } else if (cudaEventCreate(&e) != cudaSuccess) {
    return nullptr;
  }
  return e;
}

void KernelProfile::record_start(bool decode, cudaStream_t stream) {
  decode_ = decode;
  cudaEvent_t e = take_event();
  if (!e) return;
  cudaEventRecord(e, stream);
  if (start_) pool_.push_back(start_);
  start_ = e;
}

void KernelProfile::record_mark(StepPart part, cudaStream_t stream) {
  cudaEvent_t e = take_event();
  if (!e) return;
  cudaEventRecord(e, stream);
  marks_.emplace_back(part, e);
}

void KernelProfile::collect() {
  if (!start_) return;
  const int phase = decode_ ? 1 : 0;
  cudaEvent_t prev = start_;
  for (auto& [part, e] : marks_) {
    float ms = 0;
    if (cudaEventElapsedTime(&ms, prev, e) == cudaSuccess) ms_[phase][static_cast<int>(part)] += ms;
    prev = e;
  }
  ++steps_[phase];
  for (auto& [part, e] : marks_) pool_.push_back(e);
  marks_.clear();
}

void KernelProfile::finish() {
  static const char* const kNames[kNumStepParts] = {"embedding",         "rms_norm(+residual)", "qkv_proj",
                                                    "qkv_rope_kv_write", "attention(+merge)",   "o_proj",
                                                    "gate_up_proj",      "down_proj(+silu)",    "lm_head(+final norm)",
                                                    "argmax"};
  for (int phase = 0; phase < 2; ++phase) {
    if (steps_[phase] == 0) continue;
    double total = 0;
    for (double v : ms_[phase]) total += v;
    for (int part = 0; part < kNumStepParts; ++part) {
      char line[256];
      std::snprintf(line, sizeof(line), "cuda profile: phase=%s steps=%lld part=%s us_per_step=%.1f share=%.1f%%",
                    phase ? "decode" : "prefill", static_cast<long long>(steps_[phase]), kNames[part],
                    1000.0 * ms_[phase][part] / steps_[phase], 100.0 * ms_[phase][part] / total);
      log_info(line);
    }
  }
  for (cudaEvent_t e : pool_) cudaEventDestroy(e);
  if (start_) cudaEventDestroy(start_);
}

StepTiming::StepTiming() : enabled_(switched_on("TANDEM_PROFILE_STEPS")) {}

cudaError_t StepTiming::replay_begins(cudaStream_t stream) {
  if (!upload_) {
    if (cudaError_t err = cudaEventCreate(&upload_); err != cudaSuccess) return err;
    if (cudaError_t err = cudaEventCreate(&done_); err != cudaSuccess) return err;
  }
  const auto now = std::chrono::steady_clock::now();
  host_prep_us_ += std::chrono::duration<double, std::micro>(now - entered_).count();
  if (returned_valid_) {
    engine_gap_us_ += std::chrono::duration<double, std::micro>(entered_ - returned_).count();
    ++gaps_;
  }
  if (cudaError_t err = cudaEventRecord(upload_, stream); err != cudaSuccess) return err;
  in_step_ = true;
  return cudaSuccess;
}

void StepTiming::step_returned(bool timed) {
  if (timed) {
    float ms = 0;
    if (cudaEventElapsedTime(&ms, upload_, done_) == cudaSuccess) {
      gpu_us_ += 1000.0 * ms;
      ++steps_;
    } else {
      cudaGetLastError();
    }
    in_step_ = false;
  }
  // Only a graph step followed directly by another one measures the engine's gap between them.
  returned_valid_ = timed;
  if (timed) returned_ = std::chrono::steady_clock::now();
}

void StepTiming::finish() {
  if (upload_) cudaEventDestroy(upload_);
  if (done_) cudaEventDestroy(done_);
  upload_ = done_ = nullptr;
  if (steps_ == 0) return;
  const double prep = host_prep_us_ / steps_, gpu = gpu_us_ / steps_;
  const double gap = gaps_ > 0 ? engine_gap_us_ / gaps_ : 0.0;
  char line[320];
  std::snprintf(line, sizeof(line),
                "cuda step timing: graph_decode_steps=%lld host_prep_us=%.1f gpu_us=%.1f engine_gap_us=%.1f "
                "step_us=%.1f gpu_busy=%.1f%%",
                static_cast<long long>(steps_), prep, gpu, gap, prep + gpu + gap, 100.0 * gpu / (prep + gpu + gap));
  log_info(line);
}

}  // namespace tandem::backend::cuda
