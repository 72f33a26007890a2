// Per-rank slices of checkpoint tensors (see weight_slices.h).
#include "parallel/weight_slices.h"

#include <cstring>
#include <string>

#include "common/error.h"

namespace tandem::parallel {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

SlicedTensor sliced(const model::TensorSpec& spec, SlicedTensor::Kind kind, int64_t begin, int64_t end) {
  SlicedTensor t;
  t.spec = spec;
  t.kind = kind;
  t.begin = begin;
  t.end = end;
  return t;
}

}  // namespace

int64_t SlicedTensor::rows() const {
  const int64_t all = spec.shape.empty() ? 1 : spec.shape[0];
  return kind == Kind::kRows ? end - begin : all;
}

int64_t SlicedTensor::cols() const {
  const int64_t all = spec.shape.size() < 2 ? 1 : spec.shape[1];
  return kind == Kind::kColumns ? end - begin : all;
}

SlicedTensor shard_rows(const model::TensorSpec& spec, Range rows) {
  return sliced(spec, SlicedTensor::Kind::kRows, rows.begin, rows.end);
}

SlicedTensor shard_slice(const model::TensorSpec& spec, const model::ModelConfig& whole, const std::optional<ShardPlan>& plan) {
  using Kind = SlicedTensor::Kind;
  if (!plan || plan->world == 1) return sliced(spec, Kind::kWhole, 0, 0);
  const int64_t d = whole.head_dim;
  const ShardPlan& p = *plan;
  const std::string& n = spec.name;
  if (ends_with(n, "self_attn.q_proj.weight") || ends_with(n, "self_attn.q_proj.bias")) {
    return sliced(spec, Kind::kRows, p.q_heads.begin * d, p.q_heads.end * d);
  }
  if (ends_with(n, "self_attn.k_proj.weight") || ends_with(n, "self_attn.k_proj.bias") ||
      ends_with(n, "self_attn.v_proj.weight") || ends_with(n, "self_attn.v_proj.bias")) {
    return sliced(spec, Kind::kRows, p.kv_heads.begin * d, p.kv_heads.end * d);
  }
  if (ends_with(n, "self_attn.o_proj.weight")) return sliced(spec, Kind::kColumns, p.q_heads.begin * d, p.q_heads.end * d);
  if (ends_with(n, "mlp.gate_proj.weight") || ends_with(n, "mlp.up_proj.weight")) {
    return sliced(spec, Kind::kRows, p.intermediate.begin, p.intermediate.end);
  }
  if (ends_with(n, "mlp.down_proj.weight")) return sliced(spec, Kind::kColumns, p.intermediate.begin, p.intermediate.end);
  if (n == "lm_head.weight") return sliced(spec, Kind::kRows, p.vocab.begin, p.vocab.end);
  return sliced(spec, Kind::kWhole, 0, 0);
}

void read_slice(const model::WeightSource& weights, const SlicedTensor& t, model::DType out_dtype, void* out,
                std::vector<std::byte>& scratch) {
  if (t.kind == SlicedTensor::Kind::kWhole) {
    weights.read(t.spec, out_dtype, out);
    return;
  }
  const size_t element = model::dtype_size(out_dtype);
  const int64_t all_rows = t.spec.shape.empty() ? 1 : t.spec.shape[0];
  const int64_t all_cols = t.spec.shape.size() < 2 ? 1 : t.spec.shape[1];
  const int64_t limit = t.kind == SlicedTensor::Kind::kRows ? all_rows : all_cols;
  TANDEM_CHECK(t.begin >= 0 && t.begin <= t.end && t.end <= limit);
  scratch.resize(static_cast<size_t>(all_rows * all_cols) * element);
  weights.read(t.spec, out_dtype, scratch.data());
  std::byte* dst = static_cast<std::byte*>(out);
  if (t.kind == SlicedTensor::Kind::kRows) {
    std::memcpy(dst, scratch.data() + static_cast<size_t>(t.begin * all_cols) * element, t.elements() * element);
    return;
  }
  const size_t width = static_cast<size_t>(t.end - t.begin) * element;
  for (int64_t r = 0; r < all_rows; ++r) {
    std::memcpy(dst + static_cast<size_t>(r) * width, scratch.data() + static_cast<size_t>(r * all_cols + t.begin) * element, width);
  }
}

}  // namespace tandem::parallel
