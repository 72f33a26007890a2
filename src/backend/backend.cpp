#include "backend/backend.h"

#include <algorithm>
#include <charconv>
#include <optional>
#include <cstdlib>
#include <sstream>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/tensor_parallel_backend.h"
#ifdef TANDEM_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "common/error.h"
#include "model/online_fp8.h"

namespace tandem::backend {

Status validate_batch(const ForwardBatch& b, const KvCacheSpec& kv, int vocab_size) {
  const int num_seqs = b.num_seqs();
  if (b.positions.size() != b.token_ids.size()) return Status::InvalidArgument("positions and token_ids differ in length");
  if (b.query_starts.size() != static_cast<size_t>(num_seqs) + 1) return Status::InvalidArgument("query_starts must have num_seqs + 1 entries");
  if (b.max_blocks_per_seq <= 0 && num_seqs > 0) return Status::InvalidArgument("max_blocks_per_seq must be positive");
  if (b.block_tables.size() != static_cast<size_t>(num_seqs) * b.max_blocks_per_seq) return Status::InvalidArgument("block_tables must be [num_seqs, max_blocks_per_seq]");
  if (num_seqs > 0 && (b.query_starts[0] != 0 || b.query_starts[num_seqs] != b.num_tokens())) return Status::InvalidArgument("query_starts must run from 0 to num_tokens");
  for (int32_t id : b.token_ids) {
    if (id < 0 || id >= vocab_size) return Status::InvalidArgument("token id " + std::to_string(id) + " out of range [0, " + std::to_string(vocab_size) + ")");
  }
  for (int s = 0; s < num_seqs; ++s) {
    const int begin = b.query_starts[s], end = b.query_starts[s + 1];
    const int context = b.context_lens[s];
    if (end < begin) return Status::InvalidArgument("query_starts must not decrease");
    if (context < end - begin) return Status::InvalidArgument("context_lens[" + std::to_string(s) + "] is shorter than its new tokens");
    const int blocks_needed = (context + kv.block_size - 1) / kv.block_size;
    if (blocks_needed > b.max_blocks_per_seq) return Status::InvalidArgument("sequence " + std::to_string(s) + " needs more blocks than max_blocks_per_seq");
    for (int i = 0; i < blocks_needed; ++i) {
      int block = b.block_tables[static_cast<size_t>(s) * b.max_blocks_per_seq + i];
      if (block < 0 || block >= kv.num_blocks) return Status::InvalidArgument("block id " + std::to_string(block) + " out of range for sequence " + std::to_string(s));
    }
    for (int t = begin; t < end; ++t) {
      if (b.positions[t] != context - (end - t)) return Status::InvalidArgument("positions of sequence " + std::to_string(s) + " must end at context_lens - 1");
    }
  }
  for (int32_t row : b.logits_indices) {
    if (row < 0 || row >= b.num_tokens()) return Status::InvalidArgument("logits index out of range");
  }
  return Status::Ok();
}

std::string kv_dtype_name(model::DType dtype) {
  switch (dtype) {
    case model::DType::kF32: return "fp32";
    case model::DType::kBF16: return "bf16";
    case model::DType::kF8E4M3: return "fp8";
    default: return "?";
  }
}

model::DType resolve_kv_cache_dtype(const std::string& flag, const std::string& device) {
  if (flag == "auto" || flag.empty()) return device == "cpu" ? model::DType::kF32 : model::DType::kBF16;
  if (flag == "bf16") return model::DType::kBF16;
  if (flag == "fp8") return model::DType::kF8E4M3;
  throw Error("--kv-cache-dtype: unknown KV cache dtype '" + flag + "' (use auto, bf16 or fp8)");
}

int injected_device_fault_step() {
  const char* text = std::getenv("TANDEM_INJECT_DEVICE_FAULT_AT_STEP");
  if (text == nullptr) return 0;
  char* end = nullptr;
  const long step = std::strtol(text, &end, 10);
  return end != text && *end == '\0' && step > 0 && step < (1L << 30) ? static_cast<int>(step) : 0;
}

int32_t argmax(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    // NaN never wins: a NaN in front is replaced by the first number after it.
    if (logits[i] > logits[best] || (logits[best] != logits[best] && logits[i] == logits[i])) {
      best = static_cast<int32_t>(i);
    }
  }
  return best;
}

Status Backend::forward_greedy(const ForwardBatch& batch, std::span<int32_t> tokens) {
  const size_t vocab = static_cast<size_t>(config().vocab_size);
  if (tokens.size() != static_cast<size_t>(batch.num_logits())) return Status::InvalidArgument("tokens buffer must be [num_logits]");
  // Reused across calls: the engine thread calls this every greedy step.
  thread_local std::vector<float> logits;
  logits.resize(tokens.size() * vocab);
  TANDEM_RETURN_IF_ERROR(forward(batch, logits));
  for (size_t r = 0; r < tokens.size(); ++r) tokens[r] = argmax(std::span<const float>(logits.data() + r * vocab, vocab));
  return Status::Ok();
}

StatusOr<std::vector<int>> parse_cuda_devices(const std::string& device, int tp, int visible) {
  const std::string flags = "--device " + device + " --tensor-parallel-size " + std::to_string(tp);
  if (tp < 1) return Status::InvalidArgument(flags + ": the tensor-parallel size must be at least 1");
  std::vector<int> devices;
  if (device == "cuda") {
    if (visible >= 0 && visible < tp) {
      return Status::InvalidArgument(flags + ": needs " + std::to_string(tp) + " GPUs, " + std::to_string(visible) + " visible");
    }
    for (int i = 0; i < tp; ++i) devices.push_back(i);
    return devices;
  }
  const std::string prefix = "cuda:";
  if (device.rfind(prefix, 0) != 0 || device.size() == prefix.size()) {
    return Status::InvalidArgument(flags + ": expected cuda, cuda:N or cuda:N,M,...");
  }
  size_t at = prefix.size();
  while (at <= device.size()) {
    const size_t comma = std::min(device.find(',', at), device.size());
    const std::string item = device.substr(at, comma - at);
    if (item.empty() || item.size() > 4 || item.find_first_not_of("0123456789") != std::string::npos) {
      return Status::InvalidArgument(flags + ": '" + item + "' is not a device index");
    }
    const int index = std::stoi(item);
    if (std::find(devices.begin(), devices.end(), index) != devices.end()) {
      return Status::InvalidArgument(flags + ": cuda:" + item + " is named twice (one rank per GPU)");
    }
    if (visible >= 0 && index >= visible) {
      return Status::InvalidArgument(flags + ": cuda:" + item + " does not exist (" + std::to_string(visible) + " visible)");
    }
    devices.push_back(index);
    at = comma + 1;
  }
  if (static_cast<int>(devices.size()) != tp) {
    return Status::InvalidArgument(flags + ": names " + std::to_string(devices.size()) + " GPU(s) for " +
                                   std::to_string(tp) + " tensor-parallel ranks");
  }
  return devices;
}

std::unique_ptr<Backend> create_backend(const model::WeightSource& weights, const BackendOptions& options) {
  if (options.block_size <= 0) throw Error("--block-size must be positive");
  const int tp = options.tensor_parallel_size;
  if (tp < 1) throw Error("--tensor-parallel-size must be at least 1, not " + std::to_string(tp));
  const model::QuantizationConfig quantization =
      model::resolve_quantization_flag(options.quantization, weights.config().quantization, weights.describe());
  // The CUDA backend reads FP8 checkpoints as stored and quantizes online itself (per channel, on the GPU).
  if (options.device == "cpu") {
    // The CPU backend is the fp32 reference: FP8 checkpoints dequantize on read; online FP8 quantizes each
    // projection per channel and dequantizes it, so its numbers carry the FP8 rounding. Both backends read
    // every weight in their constructors, so the wrapper may go when they return.
    std::optional<model::OnlineFp8Weights> online;
    if (quantization.method == model::QuantizationConfig::Method::kOnlineFp8) online.emplace(weights);
    const model::WeightSource& source = online ? static_cast<const model::WeightSource&>(*online) : weights;
    if (tp > 1) return std::make_unique<cpu::TensorParallelCpuBackend>(source, options);
    return std::make_unique<cpu::CpuBackend>(source, options);
  }
  if (options.device.rfind("cuda", 0) == 0) {
    // The device list is checked against the TP size before CUDA is asked anything (also in builds without it).
    if (tp > 1 || options.device.find(',') != std::string::npos) {
      if (StatusOr<std::vector<int>> devices = parse_cuda_devices(options.device, tp, -1); !devices.ok()) {
        throw Error(devices.status().message());
      }
    }
#ifdef TANDEM_HAVE_CUDA
    return cuda::create_cuda_backend(weights, options);
#else
    throw Error("--device " + options.device + ": this build has no CUDA (configure with nvcc available and -DTANDEM_CUDA=ON), use --device cpu");
#endif
  }
  throw Error("--device: unknown device '" + options.device + "' (use cpu or cuda:N)");
}

namespace {

// Fields are joined by ',' and checked one by one on the way back, so a truncated or foreign string
// is refused rather than half-parsed. Version tag first so the form can change later.
constexpr const char* kExportTag = "kvx1";

bool is_plain(const std::string& field) {
  return field.find_first_of(",; \t\n") == std::string::npos;
}

template <typename T>
bool parse_number(const std::string& text, T& out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end;
}

}  // namespace

std::string encode_kv_export(const KvExport& e) {
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  hex.reserve(e.handle.size() * 2);
  for (std::byte b : e.handle) {
    hex.push_back(kHex[static_cast<unsigned>(b) >> 4]);
    hex.push_back(kHex[static_cast<unsigned>(b) & 15]);
  }
  std::ostringstream out;
  out << kExportTag << ',' << (is_plain(e.device) ? e.device : "?") << ',' << e.device_ordinal << ','
      << (e.pci_bus_id.empty() || !is_plain(e.pci_bus_id) ? "-" : e.pci_bus_id) << ',' << e.process_id << ','
      << e.spec.num_layers << ',' << e.spec.num_blocks << ',' << e.spec.block_size << ',' << e.spec.num_kv_heads << ','
      << e.spec.head_dim << ',' << model::dtype_name(e.spec.dtype) << ',' << e.layer_stride_bytes << ',' << hex;
  return out.str();
}

StatusOr<KvExport> decode_kv_export(const std::string& text) {
  std::vector<std::string> f;
  std::string field;
  std::istringstream in(text);
  while (std::getline(in, field, ',')) f.push_back(field);
  if (f.size() != 13 || f[0] != kExportTag) {
    return Status::InvalidArgument("not a KV export descriptor (expected 13 fields starting with " + std::string(kExportTag) + ")");
  }
  KvExport e;
  e.device = f[1];
  e.pci_bus_id = f[3] == "-" ? "" : f[3];
  e.spec.dtype = model::parse_dtype(f[10]);
  bool ok = parse_number(f[2], e.device_ordinal) && parse_number(f[4], e.process_id) &&
            parse_number(f[5], e.spec.num_layers) && parse_number(f[6], e.spec.num_blocks) &&
            parse_number(f[7], e.spec.block_size) && parse_number(f[8], e.spec.num_kv_heads) &&
            parse_number(f[9], e.spec.head_dim) && parse_number(f[11], e.layer_stride_bytes) &&
            e.spec.dtype != model::DType::kUnsupported && f[12].size() % 2 == 0;
  if (!ok) return Status::InvalidArgument("malformed KV export descriptor");
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < f[12].size(); i += 2) {
    int hi = nibble(f[12][i]), lo = nibble(f[12][i + 1]);
    if (hi < 0 || lo < 0) return Status::InvalidArgument("malformed KV export handle");
    e.handle.push_back(static_cast<std::byte>(hi * 16 + lo));
  }
  return e;
}

}  // namespace tandem::backend
