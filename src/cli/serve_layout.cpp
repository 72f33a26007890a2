// `tandem serve`'s worker layout (see serve_layout.h).
#include "cli/serve_layout.h"

#include <algorithm>
#include <map>

#include "common/error.h"

namespace tandem::cli {
namespace {

// "cuda:N" -> N; -1 for anything else.
int cuda_index(const std::string& device) {
  if (device.rfind("cuda:", 0) != 0 || device.size() == 5) return -1;
  int n = 0;
  for (char c : device.substr(5)) {
    if (c < '0' || c > '9') return -1;
    n = n * 10 + (c - '0');
  }
  return n;
}

void check_device(const std::string& flag, const std::string& device, int num_gpus) {
  if (device == "cpu") return;
  int n = cuda_index(device);
  if (n < 0) throw Error(flag + ": unknown device '" + device + "' (use auto, cpu, cuda or cuda:N)");
  if (n >= num_gpus) {
    throw Error(flag + " " + device + ": " + std::to_string(num_gpus) + " CUDA device(s) visible" +
                (num_gpus == 0 ? " (none, or a build without CUDA); use --device cpu" : ""));
  }
}

}  // namespace

std::vector<WorkerPlacement> plan_layout(const LayoutRequest& r) {
  if (r.num_prefill_workers < 0 || r.num_decode_workers < 1) throw Error("serve needs at least one decode worker");
  if (r.gpu_memory_utilization <= 0 || r.gpu_memory_utilization > 1) {
    throw Error("--gpu-memory-utilization must be in (0, 1], got " + std::to_string(r.gpu_memory_utilization));
  }
  std::string device = r.device;
  if (device == "auto") device = r.num_gpus > 0 ? "cuda" : "cpu";
  if (device == "cuda" && r.num_gpus == 0) throw Error("--device cuda: no CUDA device is visible (or this build has no CUDA); use --device cpu");
  if (device != "cuda") check_device("--device", device, r.num_gpus);
  if (!r.prefill_device.empty()) check_device("--prefill-device", r.prefill_device, r.num_gpus);
  if (!r.decode_device.empty()) check_device("--decode-device", r.decode_device, r.num_gpus);

  const int p = r.num_prefill_workers, d = r.num_decode_workers, n = r.num_gpus;
  // With "cuda": the GPUs of each role. One GPU: everything on it. Several: prefill workers get the
  // first GPUs and decode workers the others, in proportion to their counts (each role at least one
  // GPU), so with two GPUs prefill runs on cuda:0 and decode on cuda:1. Aggregated: all GPUs.
  int prefill_gpus = 0;
  if (n >= 2 && p > 0) prefill_gpus = std::clamp(static_cast<int>(static_cast<long long>(n) * p / (p + d)), 1, n - 1);
  auto auto_device = [&](bool prefill, int index) -> std::string {
    if (n <= 1) return "cuda:0";
    if (p == 0) return "cuda:" + std::to_string(index % n);
    if (prefill) return "cuda:" + std::to_string(index % prefill_gpus);
    return "cuda:" + std::to_string(prefill_gpus + index % (n - prefill_gpus));
  };
  std::vector<WorkerPlacement> out;
  auto place = [&](const std::string& role, bool prefill, int index) {
    WorkerPlacement w;
    w.role = role;
    w.index = index;
    const std::string& role_device = prefill ? r.prefill_device : r.decode_device;
    w.device = !role_device.empty() ? role_device : device == "cuda" ? auto_device(prefill, index) : device;
    out.push_back(w);
  };
  for (int i = 0; i < p; ++i) place("prefill", true, i);
  for (int i = 0; i < d; ++i) place(p > 0 ? "decode" : "both", false, i);

  std::map<std::string, int> count, seen;
  for (const auto& w : out) ++count[w.device];
  const double u = r.gpu_memory_utilization;
  for (auto& w : out) {
    w.share_count = count[w.device];
    w.share_index = seen[w.device]++;
    if (w.device != "cpu") w.gpu_memory_utilization = std::min(1.0, u / (w.share_count - w.share_index * u));
  }
  return out;
}

}  // namespace tandem::cli
