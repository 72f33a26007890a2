// Which part of each checkpoint tensor a tensor-parallel rank keeps (the ShardPlan applied to tensor
// names), and reading just that part: whole heads' rows of q/k/v (and their biases), rows of gate/up and
// of the lm_head, columns of o and down; everything else whole. Used by the CUDA backend, which uploads
// each rank's slices; the CPU backend takes the same rows and columns from whole tensors.
//
// Plain values and pure functions; read_slice has WeightSource::read's thread-safety.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "model/config.h"
#include "model/tensor.h"
#include "model/weight_source.h"
#include "parallel/shard_plan.h"

namespace tandem::parallel {

struct SlicedTensor {
  enum class Kind { kWhole, kRows, kColumns };
  model::TensorSpec spec;  // the whole tensor, as stored: [rows, cols] or [rows]
  Kind kind = Kind::kWhole;
  int64_t begin = 0, end = 0;  // the rows or columns kept (kWhole: unused)

  int64_t rows() const;   // of the kept part
  int64_t cols() const;   // 1 for a 1-D tensor
  size_t elements() const { return static_cast<size_t>(rows() * cols()); }
};

// What rank `plan` keeps of `spec` (a tensor of model::expected_tensors(whole)); nullopt plan: all of it.
SlicedTensor shard_slice(const model::TensorSpec& spec, const model::ModelConfig& whole, const std::optional<ShardPlan>& plan);
// Rows [rows.begin, rows.end) of `spec` (a tied embedding read as this rank's lm_head rows).
SlicedTensor shard_rows(const model::TensorSpec& spec, Range rows);

// Writes the kept part of `t` as `out_dtype`, row-major, into `out` (t.elements() elements). A whole
// tensor is read straight into `out`; a slice through `scratch` (grown to the whole tensor, reused).
void read_slice(const model::WeightSource& weights, const SlicedTensor& t, model::DType out_dtype, void* out,
                std::vector<std::byte>& scratch);

}  // namespace tandem::parallel
