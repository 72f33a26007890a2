#include "backend/cpu/cpu_backend.h"

#include <omp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/kv_codec.h"
#include "common/error.h"
#include "common/half.h"

namespace tandem::backend::cpu {
namespace {

using model::DType;
using model::TensorSpec;

std::vector<float> read_f32(const model::WeightSource& source, const TensorSpec& spec) {
  std::vector<float> out(static_cast<size_t>(model::num_elements(spec.shape)));
  source.read(spec, DType::kF32, out.data());
  return out;
}

// y[t, o] = sum_i x[t, i] * w[o, i] (+ bias[o]): x [num_tokens, in], w [out, in], y [num_tokens, out].
void linear(const float* x, int num_tokens, int in, const float* w, int out, const float* bias, float* y) {
  // Below ~64K multiply-adds the fork/join costs more than it saves.
  const bool parallel = static_cast<int64_t>(num_tokens) * in * out > (1 << 16);
#pragma omp parallel for schedule(static) if (parallel)
  for (int o = 0; o < out; ++o) {
    const float* row = w + static_cast<size_t>(o) * in;
    const float b = bias ? bias[o] : 0.0f;
    for (int t = 0; t < num_tokens; ++t) {
      const float* xt = x + static_cast<size_t>(t) * in;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int i = 0; i < in; ++i) acc += xt[i] * row[i];
      y[static_cast<size_t>(t) * out + o] = acc + b;
    }
  }
}

// RMSNorm of one vector as transformers computes it: x * rsqrt(mean(x^2) + eps) * weight.
void rms_norm(const float* x, const float* weight, int n, float eps, float* out) {
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) sum += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(sum / static_cast<float>(n) + eps);
  for (int i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * scale);
}

void rms_norm_rows(const float* x, const float* weight, int rows, int n, float eps, float* out) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) rms_norm(x + static_cast<size_t>(r) * n, weight, n, eps, out + static_cast<size_t>(r) * n);
}

template <typename T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// Rows [begin, end) of a row-major [rows, row_len] matrix; the matrix itself when that is all of it
// (world 1 copies nothing).
std::vector<float> take_rows(std::vector<float> m, size_t row_len, int begin, int end) {
  if (begin == 0 && static_cast<size_t>(end) * row_len == m.size()) return m;
  return std::vector<float>(m.begin() + static_cast<std::ptrdiff_t>(begin * row_len),
                            m.begin() + static_cast<std::ptrdiff_t>(end * row_len));
}

// Columns [begin, end) of a row-major [rows, cols] matrix; the matrix itself when that is all of it.
std::vector<float> take_columns(std::vector<float> m, size_t cols, int begin, int end) {
  if (begin == 0 && static_cast<size_t>(end) == cols) return m;
  const size_t rows = m.size() / cols, width = static_cast<size_t>(end - begin);
  std::vector<float> out(rows * width);
  for (size_t r = 0; r < rows; ++r) std::copy_n(m.begin() + static_cast<std::ptrdiff_t>(r * cols + begin), width, out.begin() + static_cast<std::ptrdiff_t>(r * width));
  return out;
}

}  // namespace

parallel::ModelShape shard_shape(const model::ModelConfig& c) {
  return parallel::ModelShape{.num_heads = c.num_heads,
                              .num_kv_heads = c.num_kv_heads,
                              .head_dim = c.head_dim,
                              .intermediate_size = c.intermediate_size,
                              .vocab_size = c.vocab_size};
}

CpuBackend::CpuBackend(const model::WeightSource& weights, const BackendOptions& options, const CpuRank* rank)
    : config_(weights.config()) {
  weights.validate();
  if (options.num_threads > 0) omp_set_num_threads(options.num_threads);
  const auto& c = config_;
  if (rank != nullptr) {
    comm_ = rank->comm;
    plan_ = rank->plan;
    TANDEM_CHECK(comm_ != nullptr && comm_->rank() == plan_.rank && comm_->world_size() == plan_.world);
  } else {
    auto whole = parallel::plan_shard(shard_shape(c), 0, 1);
    if (!whole.ok()) throw Error(weights.describe() + ": " + whole.status().message());
    plan_ = *whole;
  }
  fault_step_ = rank == nullptr || rank->inject_faults ? injected_device_fault_step() : 0;
  heads_ = plan_.q_heads.size();
  kv_heads_ = plan_.kv_heads.size();
  q_size_ = heads_ * c.head_dim;
  kv_size_ = kv_heads_ * c.head_dim;
  inter_ = plan_.intermediate.size();
  kv_.num_layers = c.num_layers;
  kv_.block_size = options.block_size;
  kv_.num_kv_heads = kv_heads_;
  kv_.head_dim = c.head_dim;
  kv_.dtype = resolve_kv_cache_dtype(options.kv_cache_dtype, "cpu");
  kv_.num_blocks = options.num_kv_blocks > 0
                       ? options.num_kv_blocks
                       : static_cast<int>(options.cpu_kv_cache_bytes / (kv_.block_bytes() * c.num_layers));
  if (kv_.num_blocks <= 0) throw Error("--kv-cache-bytes is too small for one KV block per layer");

  // Read every tensor once, in the order expected_tensors lists them.
  const std::vector<TensorSpec> specs = model::expected_tensors(c);
  size_t next = 0;
  auto take = [&](const std::string& name) {
    TANDEM_CHECK(next < specs.size() && specs[next].name == name);
    return read_f32(weights, specs[next++]);
  };
  auto append = [](std::vector<float>& dst, const std::vector<float>& src) { dst.insert(dst.end(), src.begin(), src.end()); };
  // This rank's rows of q (its heads), of k and v (its KV heads), of gate and up; its columns of o and down.
  const size_t hidden = static_cast<size_t>(c.hidden_size), d = static_cast<size_t>(c.head_dim);
  const parallel::Range q = plan_.q_heads, kv = plan_.kv_heads, mlp = plan_.intermediate;
  embed_ = take("model.embed_tokens.weight");
  layers_.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& w = layers_[l];
    w.input_norm = take(p + "input_layernorm.weight");
    w.qkv = take_rows(take(p + "self_attn.q_proj.weight"), hidden * d, q.begin, q.end);
    append(w.qkv, take_rows(take(p + "self_attn.k_proj.weight"), hidden * d, kv.begin, kv.end));
    append(w.qkv, take_rows(take(p + "self_attn.v_proj.weight"), hidden * d, kv.begin, kv.end));
    if (c.attention_bias) {
      w.qkv_bias = take_rows(take(p + "self_attn.q_proj.bias"), d, q.begin, q.end);
      append(w.qkv_bias, take_rows(take(p + "self_attn.k_proj.bias"), d, kv.begin, kv.end));
      append(w.qkv_bias, take_rows(take(p + "self_attn.v_proj.bias"), d, kv.begin, kv.end));
    }
    if (c.qk_norm) {
      w.q_norm = take(p + "self_attn.q_norm.weight");
      w.k_norm = take(p + "self_attn.k_norm.weight");
    }
    w.o_proj = take_columns(take(p + "self_attn.o_proj.weight"), c.q_size(), q.begin * c.head_dim, q.end * c.head_dim);
    w.post_norm = take(p + "post_attention_layernorm.weight");
    w.gate_up = take_rows(take(p + "mlp.gate_proj.weight"), hidden, mlp.begin, mlp.end);
    append(w.gate_up, take_rows(take(p + "mlp.up_proj.weight"), hidden, mlp.begin, mlp.end));
    w.down = take_columns(take(p + "mlp.down_proj.weight"), c.intermediate_size, mlp.begin, mlp.end);
  }
  final_norm_ = take("model.norm.weight");
  if (!c.tie_word_embeddings) {
    lm_head_ = take_rows(take("lm_head.weight"), hidden, plan_.vocab.begin, plan_.vocab.end);
  } else if (plan_.world == 1) {
    head_is_embed_ = true;
  } else {
    lm_head_ = take_rows(embed_, hidden, plan_.vocab.begin, plan_.vocab.end);
  }
  inv_freq_ = model::rope_inv_freq(c);

  kv_pools_.resize(c.num_layers);
  // Zero bytes read back as zeros in every dtype (an FP8 scale of 0 included).
  for (auto& pool : kv_pools_) pool.assign(static_cast<size_t>(kv_.num_blocks) * kv_.block_bytes(), std::byte{0});
  if (plan_.world == 1) {
    spdlog::info("cpu backend: model={} layers={} kv_blocks={} kv_tokens={} kv_bytes={} kv_cache_dtype={}",
                 weights.describe(), c.num_layers, kv_.num_blocks, static_cast<int64_t>(kv_.num_blocks) * kv_.block_size,
                 kv_.block_bytes() * kv_.num_blocks * c.num_layers, kv_dtype_name(kv_.dtype));
  }
}

void CpuBackend::apply_rope(float* x, int num_heads, int position) const {
  const int d = config_.head_dim, half = d / 2;
  for (int i = 0; i < half; ++i) {
    // transformers forms the angle as an fp32 product and takes cos/sin of it.
    const float angle = static_cast<float>(position) * inv_freq_[i];
    const float cos_a = static_cast<float>(std::cos(static_cast<double>(angle)));
    const float sin_a = static_cast<float>(std::sin(static_cast<double>(angle)));
    for (int h = 0; h < num_heads; ++h) {
      float* head = x + static_cast<size_t>(h) * d;
      const float x1 = head[i], x2 = head[i + half];
      head[i] = x1 * cos_a - x2 * sin_a;
      head[i + half] = x2 * cos_a + x1 * sin_a;
    }
  }
}

void CpuBackend::store_kv_row(std::byte* block, int which, int slot, int head, const float* x) {
  const int d = config_.head_dim;
  const size_t row = (static_cast<size_t>(which) * kv_.block_size + slot) * kv_heads_ + head;  // [2, bs, heads]
  switch (kv_.dtype) {
    case DType::kF32:
      std::memcpy(block + row * d * sizeof(float), x, sizeof(float) * d);
      return;
    case DType::kBF16: {
      auto* dst = reinterpret_cast<uint16_t*>(block) + row * d;
      for (int i = 0; i < d; ++i) dst[i] = float_to_bf16(x[i]);
      return;
    }
    case DType::kF8E4M3: {
      auto* dst = reinterpret_cast<uint8_t*>(block) + row * d;
      const float scale = quantize_kv_row_fp8(x, d, dst);
      std::memcpy(block + kv_.scales_offset_bytes() + row * sizeof(float), &scale, sizeof(float));
      return;
    }
    default: TANDEM_CHECK(false);
  }
}

const float* CpuBackend::load_kv_row(const std::byte* block, int which, int slot, int head, float* scratch) const {
  const int d = config_.head_dim;
  const size_t row = (static_cast<size_t>(which) * kv_.block_size + slot) * kv_heads_ + head;
  switch (kv_.dtype) {
    case DType::kF32: return reinterpret_cast<const float*>(block) + row * d;
    case DType::kBF16: {
      const auto* src = reinterpret_cast<const uint16_t*>(block) + row * d;
      for (int i = 0; i < d; ++i) scratch[i] = bf16_to_float(src[i]);
      return scratch;
    }
    case DType::kF8E4M3: {
      float scale;
      std::memcpy(&scale, block + kv_.scales_offset_bytes() + row * sizeof(float), sizeof(float));
      dequantize_kv_row_fp8(reinterpret_cast<const uint8_t*>(block) + row * d, scale, d, scratch);
      return scratch;
    }
    default: TANDEM_CHECK(false);
  }
  return nullptr;
}

void CpuBackend::write_kv(const ForwardBatch& b, int layer, const float* k, const float* v) {
  const int kv_size = kv_size_, d = config_.head_dim;
  const int qkv_stride = q_size_ + 2 * kv_size;
  for (int s = 0; s < b.num_seqs(); ++s) {
    const int32_t* table = b.block_tables.data() + static_cast<size_t>(s) * b.max_blocks_per_seq;
    for (int t = b.query_starts[s]; t < b.query_starts[s + 1]; ++t) {
      const int pos = b.positions[t];
      std::byte* block = kv_block(layer, table[pos / kv_.block_size]);
      const int slot = pos % kv_.block_size;
      for (int h = 0; h < kv_heads_; ++h) {
        store_kv_row(block, 0, slot, h, k + static_cast<size_t>(t) * qkv_stride + static_cast<size_t>(h) * d);
        store_kv_row(block, 1, slot, h, v + static_cast<size_t>(t) * qkv_stride + static_cast<size_t>(h) * d);
      }
    }
  }
}

void CpuBackend::attention(const ForwardBatch& b, int layer, const float* q, float* out) const {
  const auto& c = config_;
  const int d = c.head_dim;
  const int num_heads = heads_;
  const int group = heads_ / kv_heads_;
  const int kv_size = kv_size_;
  const int qkv_stride = q_size_ + 2 * kv_size;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  // Map each token row to its sequence once, so the parallel loop is flat over (token, head).
  std::vector<int> seq_of_token(b.num_tokens());
  for (int s = 0; s < b.num_seqs(); ++s) {
    for (int t = b.query_starts[s]; t < b.query_starts[s + 1]; ++t) seq_of_token[t] = s;
  }
  const int num_tokens = b.num_tokens();
#pragma omp parallel
  {
    std::vector<float> scores;
    std::vector<float> row(static_cast<size_t>(d));  // one K or V row read back as fp32 (bf16, FP8 caches)
#pragma omp for schedule(dynamic, 4)
    for (int work = 0; work < num_tokens * num_heads; ++work) {
      const int t = work / num_heads, h = work % num_heads;
      const int kv_head = h / group;
      const int32_t* table = b.block_tables.data() + static_cast<size_t>(seq_of_token[t]) * b.max_blocks_per_seq;
      const int num_keys = b.positions[t] + 1;  // causal: keys at positions 0..pos
      const float* qh = q + static_cast<size_t>(t) * qkv_stride + static_cast<size_t>(h) * d;
      grow(scores, static_cast<size_t>(num_keys));
      float max_score = -INFINITY;
      for (int j = 0; j < num_keys; ++j) {
        const float* kj = load_kv_row(kv_block(layer, table[j / kv_.block_size]), 0, j % kv_.block_size, kv_head, row.data());
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int i = 0; i < d; ++i) dot += qh[i] * kj[i];
        scores[j] = dot * scale;
        max_score = std::max(max_score, scores[j]);
      }
      float denom = 0.0f;
      for (int j = 0; j < num_keys; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        denom += scores[j];
      }
      float* oh = out + static_cast<size_t>(t) * q_size_ + static_cast<size_t>(h) * d;
      std::fill(oh, oh + d, 0.0f);
      for (int j = 0; j < num_keys; ++j) {
        const float* vj = load_kv_row(kv_block(layer, table[j / kv_.block_size]), 1, j % kv_.block_size, kv_head, row.data());
        const float p = scores[j] / denom;
#pragma omp simd
        for (int i = 0; i < d; ++i) oh[i] += p * vj[i];
      }
    }
  }
}

Status CpuBackend::forward(const ForwardBatch& b, std::span<float> logits) {
  const auto& c = config_;
  TANDEM_RETURN_IF_ERROR(validate_batch(b, kv_, c.vocab_size));
  if (logits.size() != static_cast<size_t>(b.num_logits()) * c.vocab_size) {
    return Status::InvalidArgument("logits buffer must be [num_logits, vocab_size]");
  }
  const int n = b.num_tokens();
  if (n == 0) return Status::Ok();
  if (fault_step_ > 0 && ++num_forwards_ == fault_step_) {
    health_ = Status::Internal("cpu: injected device fault at forward " + std::to_string(fault_step_) +
                               " (TANDEM_INJECT_DEVICE_FAULT_AT_STEP)");
  }
  if (!health_.ok()) return health_;
  const int hidden = c.hidden_size, q_size = q_size_, kv_size = kv_size_;
  const int qkv_stride = q_size + 2 * kv_size;
  const int inter = inter_;
  grow(hidden_, static_cast<size_t>(n) * hidden);    // [n, hidden] residual stream
  grow(normed_, static_cast<size_t>(n) * hidden);    // [n, hidden]
  grow(qkv_, static_cast<size_t>(n) * qkv_stride);   // [n, q_size + 2 kv_size]
  grow(attn_out_, static_cast<size_t>(n) * q_size);  // [n, q_size]
  grow(gate_up_, static_cast<size_t>(n) * 2 * inter);  // [n, 2 inter]
  grow(mlp_out_, static_cast<size_t>(n) * hidden);   // [n, hidden]

  for (int t = 0; t < n; ++t) {
    std::memcpy(&hidden_[static_cast<size_t>(t) * hidden], &embed_[static_cast<size_t>(b.token_ids[t]) * hidden], sizeof(float) * hidden);
  }
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = layers_[l];
    rms_norm_rows(hidden_.data(), w.input_norm.data(), n, hidden, c.rms_norm_eps, normed_.data());
    linear(normed_.data(), n, hidden, w.qkv.data(), qkv_stride, w.qkv_bias.empty() ? nullptr : w.qkv_bias.data(), qkv_.data());
#pragma omp parallel for schedule(static)
    for (int t = 0; t < n; ++t) {
      float* q = &qkv_[static_cast<size_t>(t) * qkv_stride];
      float* k = q + q_size;
      if (c.qk_norm) {
        for (int h = 0; h < heads_; ++h) rms_norm(q + h * c.head_dim, w.q_norm.data(), c.head_dim, c.rms_norm_eps, q + h * c.head_dim);
        for (int h = 0; h < kv_heads_; ++h) rms_norm(k + h * c.head_dim, w.k_norm.data(), c.head_dim, c.rms_norm_eps, k + h * c.head_dim);
      }
      apply_rope(q, heads_, b.positions[t]);
      apply_rope(k, kv_heads_, b.positions[t]);
    }
    write_kv(b, l, qkv_.data() + q_size, qkv_.data() + q_size + kv_size);
    attention(b, l, qkv_.data(), attn_out_.data());
    linear(attn_out_.data(), n, q_size, w.o_proj.data(), hidden, nullptr, mlp_out_.data());
    // Each rank's o_proj saw its heads only: the sum over ranks is the whole projection.
    if (comm_ != nullptr) TANDEM_RETURN_IF_ERROR(comm_->all_reduce_sum(std::span<float>(mlp_out_.data(), static_cast<size_t>(n) * hidden)));
    for (size_t i = 0; i < static_cast<size_t>(n) * hidden; ++i) hidden_[i] += mlp_out_[i];

    rms_norm_rows(hidden_.data(), w.post_norm.data(), n, hidden, c.rms_norm_eps, normed_.data());
    linear(normed_.data(), n, hidden, w.gate_up.data(), 2 * inter, nullptr, gate_up_.data());
#pragma omp parallel for schedule(static)
    for (int t = 0; t < n; ++t) {
      float* gate = &gate_up_[static_cast<size_t>(t) * 2 * inter];
      const float* up = gate + inter;
      for (int i = 0; i < inter; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
    }
    // down_proj reads the activated gate half of each row: stride 2 * inter, so gather first.
    for (int t = 0; t < n; ++t) {
      std::memmove(&gate_up_[static_cast<size_t>(t) * inter], &gate_up_[static_cast<size_t>(t) * 2 * inter], sizeof(float) * inter);
    }
    linear(gate_up_.data(), n, inter, w.down.data(), hidden, nullptr, mlp_out_.data());
    if (comm_ != nullptr) TANDEM_RETURN_IF_ERROR(comm_->all_reduce_sum(std::span<float>(mlp_out_.data(), static_cast<size_t>(n) * hidden)));
    for (size_t i = 0; i < static_cast<size_t>(n) * hidden; ++i) hidden_[i] += mlp_out_[i];
  }

  const int num_logits = b.num_logits();
  for (int r = 0; r < num_logits; ++r) {
    rms_norm(&hidden_[static_cast<size_t>(b.logits_indices[r]) * hidden], final_norm_.data(), hidden, c.rms_norm_eps,
             &normed_[static_cast<size_t>(r) * hidden]);
  }
  if (comm_ == nullptr) {
    const std::vector<float>& head = head_is_embed_ ? embed_ : lm_head_;
    linear(normed_.data(), num_logits, hidden, head.data(), c.vocab_size, nullptr, logits.data());
    return Status::Ok();
  }
  return gather_logits(num_logits, logits);
}

Status CpuBackend::gather_logits(int num_logits, std::span<float> logits) {
  const int vocab = config_.vocab_size, shard = plan_.vocab_shard, world = plan_.world;
  // This rank's vocabulary columns, padded to the shard width every rank sends.
  grow(shard_logits_, static_cast<size_t>(num_logits) * shard);
  grow(gathered_logits_, static_cast<size_t>(world) * num_logits * shard);
  const int width = plan_.vocab.size();
  if (width > 0) linear(normed_.data(), num_logits, config_.hidden_size, lm_head_.data(), width, nullptr, shard_logits_.data());
  // linear wrote [num_logits, width]; spread the rows to stride `shard` (from the last, in place).
  for (int r = num_logits - 1; r >= 0 && width != shard; --r) {
    std::copy_backward(shard_logits_.begin() + static_cast<std::ptrdiff_t>(r) * width,
                       shard_logits_.begin() + static_cast<std::ptrdiff_t>(r + 1) * width,
                       shard_logits_.begin() + static_cast<std::ptrdiff_t>(r) * shard + width);
  }
  const size_t count = static_cast<size_t>(num_logits) * shard;
  TANDEM_RETURN_IF_ERROR(comm_->all_gather(std::span<const float>(shard_logits_.data(), count),
                                           std::span<float>(gathered_logits_.data(), count * world)));
  for (int q = 0; q < world; ++q) {
    const int begin = std::min(vocab, q * shard), end = std::min(vocab, begin + shard);
    for (int r = 0; r < num_logits; ++r) {
      const float* src = &gathered_logits_[(static_cast<size_t>(q) * num_logits + r) * shard];
      std::copy(src, src + (end - begin), logits.begin() + static_cast<std::ptrdiff_t>(r) * vocab + begin);
    }
  }
  return Status::Ok();
}

Status CpuBackend::read_kv_block(int layer, int block, std::span<std::byte> out) {
  if (layer < 0 || layer >= kv_.num_layers || block < 0 || block >= kv_.num_blocks) return Status::InvalidArgument("KV block out of range");
  if (out.size() != kv_.block_bytes()) return Status::InvalidArgument("KV block buffer has the wrong size");
  std::memcpy(out.data(), kv_block(layer, block), out.size());
  return Status::Ok();
}

Status CpuBackend::write_kv_block(int layer, int block, std::span<const std::byte> in) {
  if (layer < 0 || layer >= kv_.num_layers || block < 0 || block >= kv_.num_blocks) return Status::InvalidArgument("KV block out of range");
  if (in.size() != kv_.block_bytes()) return Status::InvalidArgument("KV block buffer has the wrong size");
  std::memcpy(kv_block(layer, block), in.data(), in.size());
  return Status::Ok();
}

}  // namespace tandem::backend::cpu
