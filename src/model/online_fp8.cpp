#include "model/online_fp8.h"

#include <vector>

#include "common/error.h"

namespace tandem::model {

OnlineFp8Weights::OnlineFp8Weights(const WeightSource& base) : base_(base), config_(base.config()) {
  TANDEM_CHECK(!config_.quantization.is_fp8());
  config_.quantization = resolve_quantization_flag("fp8", config_.quantization, base.describe());
}

std::string OnlineFp8Weights::describe() const { return base_.describe() + " (--quantization fp8)"; }

std::optional<QuantizedWeight> OnlineFp8Weights::read_quantized(const TensorSpec& spec) const {
  if (!is_quantizable_linear(spec.name)) return std::nullopt;
  std::vector<float> full(static_cast<size_t>(num_elements(spec.shape)));
  base_.read(spec, DType::kF32, full.data());
  return quantize_fp8(full.data(), spec.shape, Fp8Scheme::kChannel);
}

void OnlineFp8Weights::read(const TensorSpec& spec, DType out_dtype, void* out) const {
  if (std::optional<QuantizedWeight> q = read_quantized(spec)) {
    std::vector<float> values = dequantize(*q);
    convert_elements(DType::kF32, values.data(), out_dtype, out, values.size());
    return;
  }
  base_.read(spec, out_dtype, out);
}

}  // namespace tandem::model
