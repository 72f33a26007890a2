// Element types and tensor descriptions shared by checkpoint readers, writers and backends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::model {

// kF8E4M3: OCP FP8 e4m3fn bytes (safetensors "F8_E4M3"); only meaningful with their scales (model/fp8.h).
enum class DType { kF32, kBF16, kF16, kF8E4M3, kUnsupported };

// Bytes per element; 0 for kUnsupported.
size_t dtype_size(DType dtype);
// Safetensors spelling: "F32", "BF16", "F16", "F8_E4M3".
std::string_view dtype_name(DType dtype);
// Parses the safetensors spelling; kUnsupported for anything else (F64, I64, F8_E5M2, ...).
DType parse_dtype(std::string_view name);

using Shape = std::vector<int64_t>;
int64_t num_elements(const Shape& shape);
std::string shape_to_string(const Shape& shape);  // "[128, 64]"

// One expected tensor of a model: its Hugging Face name and shape.
struct TensorSpec {
  std::string name;
  Shape shape;
};

}  // namespace tandem::model
