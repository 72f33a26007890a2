// `tandem serve`'s worker layout (see serve_layout.h; the rules are in docs/parallelism.md).
#include "cli/serve_layout.h"

#include <algorithm>
#include <map>

#include "common/error.h"

namespace tandem::cli {
namespace {

std::string gpu_list(const std::vector<int>& gpus) {
  std::string out = "cuda:";
  for (size_t i = 0; i < gpus.size(); ++i) out += (i ? "," : "") + std::to_string(gpus[i]);
  return out;
}

std::vector<int> consecutive(int first, int count) {
  std::vector<int> v;
  for (int i = 0; i < count; ++i) v.push_back(first + i);
  return v;
}

// "cuda:N" or "cuda:N,M,..." -> the ordinals, each visible and none twice. Throws naming `flag`.
std::vector<int> parse_gpu_list(const std::string& flag, const std::string& device, int num_gpus) {
  const std::string prefix = "cuda:";
  if (device.rfind(prefix, 0) != 0 || device.size() == prefix.size()) {
    throw Error(flag + ": unknown device '" + device + "' (use auto, cpu, cuda, cuda:N or cuda:N,M,...)");
  }
  std::vector<int> gpus;
  size_t at = prefix.size();
  while (at <= device.size()) {
    const size_t comma = std::min(device.find(',', at), device.size());
    const std::string item = device.substr(at, comma - at);
    if (item.empty() || item.size() > 4 || item.find_first_not_of("0123456789") != std::string::npos) {
      throw Error(flag + ": unknown device '" + device + "' ('" + item + "' is not a GPU index)");
    }
    const int index = std::stoi(item);
    if (index >= num_gpus) {
      throw Error(flag + " " + device + ": " + std::to_string(num_gpus) + " CUDA device(s) visible" +
                  (num_gpus == 0 ? " (none, or a build without CUDA); use --device cpu" : ""));
    }
    if (std::find(gpus.begin(), gpus.end(), index) != gpus.end()) {
      throw Error(flag + " " + device + ": cuda:" + item + " is named twice (one TP rank per GPU)");
    }
    gpus.push_back(index);
    at = comma + 1;
  }
  return gpus;
}

// How one role's workers are placed: on the CPU, on GPUs the flags name, or laid out by plan_layout.
struct RoleDevices {
  bool cpu = false;
  bool auto_layout = false;
  std::vector<int> gpus;  // named GPUs (every worker of the role on these)
};

RoleDevices role_devices(const LayoutRequest& r, bool prefill, const std::string& device) {
  const std::string& override_device = prefill ? r.prefill_device : r.decode_device;
  const std::string flag = !override_device.empty() ? (prefill ? "--prefill-device" : "--decode-device") : "--device";
  const std::string& value = !override_device.empty() ? override_device : device;
  RoleDevices out;
  if (value == "cpu") {
    out.cpu = true;
  } else if (value == "cuda" && override_device.empty()) {
    out.auto_layout = true;
  } else {
    out.gpus = parse_gpu_list(flag, value, r.num_gpus);
    const int tp = role_tensor_parallel_size(r, prefill);
    if (static_cast<int>(out.gpus.size()) != tp) {
      throw Error(flag + " " + value + " names " + std::to_string(out.gpus.size()) + " GPU(s) for " +
                  role_tensor_parallel_flag(r, prefill) + " " + std::to_string(tp) + " of the " +
                  (prefill ? "prefill" : "decode") + " workers: name one GPU per rank (e.g. " +
                  gpu_list(consecutive(0, tp)) + "), use --device cuda to lay them out, or set --prefill-device/--decode-device per role");
    }
  }
  return out;
}

}  // namespace

int role_tensor_parallel_size(const LayoutRequest& r, bool prefill) {
  const int role = prefill ? r.prefill_tensor_parallel_size : r.decode_tensor_parallel_size;
  return role > 0 ? role : r.tensor_parallel_size;
}

std::string role_tensor_parallel_flag(const LayoutRequest& r, bool prefill) {
  const int role = prefill ? r.prefill_tensor_parallel_size : r.decode_tensor_parallel_size;
  if (role > 0) return prefill ? "--prefill-tensor-parallel-size" : "--decode-tensor-parallel-size";
  return "--tensor-parallel-size";
}

std::vector<WorkerPlacement> plan_layout(const LayoutRequest& r) {
  if (r.num_prefill_workers < 0 || r.num_decode_workers < 1) throw Error("serve needs at least one decode worker");
  if (r.gpu_memory_utilization <= 0 || r.gpu_memory_utilization > 1) {
    throw Error("--gpu-memory-utilization must be in (0, 1], got " + std::to_string(r.gpu_memory_utilization));
  }
  if (r.tensor_parallel_size < 1) {
    throw Error("--tensor-parallel-size must be at least 1, got " + std::to_string(r.tensor_parallel_size));
  }
  if (r.prefill_tensor_parallel_size < 0 || r.decode_tensor_parallel_size < 0) {
    throw Error(std::string(r.prefill_tensor_parallel_size < 0 ? "--prefill" : "--decode") +
                "-tensor-parallel-size must be at least 1");
  }
  const int p = r.num_prefill_workers, d = r.num_decode_workers, n = r.num_gpus;
  const int tp_p = role_tensor_parallel_size(r, true), tp_d = role_tensor_parallel_size(r, false);
  std::string device = r.device;
  if (device == "auto") device = n > 0 ? "cuda" : "cpu";
  if (device == "cuda" && n == 0) throw Error("--device cuda: no CUDA device is visible (or this build has no CUDA); use --device cpu");
  // Checked even where a per-role flag overrides it, so a typo is never silently ignored.
  if (device != "cuda" && device != "cpu") parse_gpu_list("--device", device, n);
  const RoleDevices prefill_devices = p > 0 ? role_devices(r, true, device) : RoleDevices{};
  const RoleDevices decode_devices = role_devices(r, false, device);
  if (p == 0 && !r.prefill_device.empty() && r.prefill_device != "cpu") {
    parse_gpu_list("--prefill-device", r.prefill_device, n);  // unused, but a typo is still reported
  }

  // The first GPU of each laid-out worker's set. A role's workers take sets of its TP size; workers
  // beyond the sets its role gets go round them again (sharing, as on one GPU).
  int prefill_sets = 0, decode_sets = 0, decode_base = 0;
  const bool prefill_auto = p > 0 && prefill_devices.auto_layout, decode_auto = decode_devices.auto_layout;
  auto need_gpus = [&](bool prefill) {
    const int tp = prefill ? tp_p : tp_d;
    if (tp > n) {
      throw Error("--device " + device + ": " + role_tensor_parallel_flag(r, prefill) + " " + std::to_string(tp) +
                  " needs " + std::to_string(tp) + " GPUs for each " + (prefill ? "prefill" : "decode") + " worker, " +
                  std::to_string(n) + " visible");
    }
  };
  if (prefill_auto) need_gpus(true);
  if (decode_auto) need_gpus(false);
  if (prefill_auto && decode_auto) {
    if (n < tp_p + tp_d) {
      if (tp_p != tp_d) {
        throw Error("--device " + device + ": prefill workers at TP " + std::to_string(tp_p) + " and decode workers at TP " +
                    std::to_string(tp_d) + " need at least " + std::to_string(tp_p + tp_d) + " GPUs" +
                    (p * tp_p + d * tp_d > tp_p + tp_d ? " (" + std::to_string(p * tp_p + d * tp_d) + " for a set each)" : "") +
                    ", " + std::to_string(n) + " visible; workers share GPUs only when their GPU sets are equal, so use one TP size for both "
                    "roles, fewer ranks, or --prefill-device/--decode-device");
      }
      // Too few for two sets of one size: every worker on the first set (the one-GPU rule, widened).
      prefill_sets = decode_sets = 1;
    } else {
      // Prefill gets sets in proportion to its GPU demand (at least one), decode what remains (at least
      // one), and prefill then what decode leaves over; when everything fits, that is a set for each
      // worker, prefill's first, spare GPUs left at the end.
      const long long demand = static_cast<long long>(p) * tp_p + static_cast<long long>(d) * tp_d;
      prefill_sets = static_cast<int>(std::clamp<long long>(static_cast<long long>(n) * p / demand, 1, p));
      if ((n - prefill_sets * tp_p) / tp_d < 1) prefill_sets = (n - tp_d) / tp_p;  // >= 1: n >= tp_p + tp_d
      decode_sets = std::min(d, (n - prefill_sets * tp_p) / tp_d);
      prefill_sets = std::min(p, (n - decode_sets * tp_d) / tp_p);
      decode_base = prefill_sets * tp_p;
    }
  } else {
    // One role laid out alone (aggregated workers, or the other role's devices named): over every GPU.
    if (prefill_auto) prefill_sets = std::min(p, n / tp_p);
    if (decode_auto) decode_sets = std::min(d, n / tp_d);
  }

  std::vector<WorkerPlacement> out;
  auto place = [&](const std::string& role, bool prefill, int index) {
    const RoleDevices& devices = prefill ? prefill_devices : decode_devices;
    WorkerPlacement w;
    w.role = role;
    w.index = index;
    w.tensor_parallel_size = prefill ? tp_p : tp_d;
    if (devices.cpu) {
      w.device = "cpu";
    } else {
      if (devices.auto_layout) {
        const int sets = prefill ? prefill_sets : decode_sets;
        w.gpus = consecutive((prefill ? 0 : decode_base) + (index % sets) * w.tensor_parallel_size, w.tensor_parallel_size);
      } else {
        w.gpus = devices.gpus;
      }
      w.device = gpu_list(w.gpus);
    }
    out.push_back(w);
  };
  for (int i = 0; i < p; ++i) place("prefill", true, i);
  for (int i = 0; i < d; ++i) place(p > 0 ? "decode" : "both", false, i);

  // Workers share GPUs only with the same set: a share of a GPU's memory is then one number for the
  // whole worker, and its ranks' KV pools (the smallest of which sizes the worker's) come out even.
  auto sorted = [](std::vector<int> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  for (size_t a = 0; a < out.size(); ++a) {
    for (size_t b = a + 1; b < out.size(); ++b) {
      const auto sa = sorted(out[a].gpus), sb = sorted(out[b].gpus);
      if (sa == sb) continue;
      const bool overlap = std::any_of(sa.begin(), sa.end(), [&](int g) { return std::binary_search(sb.begin(), sb.end(), g); });
      if (overlap) {
        throw Error(out[a].role + "-" + std::to_string(out[a].index) + " on " + out[a].device + " and " + out[b].role + "-" +
                    std::to_string(out[b].index) + " on " + out[b].device +
                    " share some GPUs but not all: workers may share GPUs only with the same set "
                    "(give --prefill-device and --decode-device equal or disjoint lists)");
      }
    }
  }

  std::map<std::vector<int>, int> count, seen;
  int cpu_ranks = 0;
  for (const auto& w : out) {
    if (w.gpus.empty()) {
      cpu_ranks += w.tensor_parallel_size;
    } else {
      ++count[sorted(w.gpus)];
    }
  }
  const double u = r.gpu_memory_utilization;
  const int cores = std::max(1, r.num_cpu_cores);
  for (auto& w : out) {
    if (w.gpus.empty()) {
      // CPU workers: the cores in proportion to their ranks, at least one a rank (the TP backend gives
      // each rank threads / TP size of them).
      w.threads = r.threads > 0 ? r.threads : std::max(w.tensor_parallel_size, cores * w.tensor_parallel_size / cpu_ranks);
      continue;
    }
    w.threads = r.threads > 0 ? r.threads : std::max(1, cores / static_cast<int>(out.size()));
    const auto key = sorted(w.gpus);
    w.share_count = count[key];
    w.share_index = seen[key]++;
    w.gpu_memory_utilization = std::min(1.0, u / (w.share_count - w.share_index * u));
  }
  return out;
}

std::string describe_layout(const std::vector<WorkerPlacement>& placements, int num_gpus) {
  std::string text;
  std::vector<bool> used(std::max(0, num_gpus), false);
  bool any_gpu = false;
  for (const auto& w : placements) {
    text += (text.empty() ? "" : ", ") + w.role + "-" + std::to_string(w.index) + " " + w.device + " (TP" +
            std::to_string(w.tensor_parallel_size);
    if (w.gpus.empty()) text += ", " + std::to_string(w.threads) + (w.threads == 1 ? " thread" : " threads");
    text += ")";
    for (int g : w.gpus) {
      any_gpu = true;
      if (g < num_gpus) used[g] = true;
    }
  }
  std::vector<int> unused;
  for (int g = 0; g < num_gpus; ++g) {
    if (!used[g]) unused.push_back(g);
  }
  if (any_gpu && !unused.empty()) text += "; " + gpu_list(unused) + " unused";
  return text;
}

}  // namespace tandem::cli
