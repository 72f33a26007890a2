// FP8 KV rows (see kv_codec.h).
#include "backend/kv_codec.h"

#include <array>
#include <cmath>

#include "model/fp8.h"

namespace tandem::backend {
namespace {

// e4m3 byte -> float, built once (the attention loop decodes every key it reads).
const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = model::e4m3_to_float(static_cast<uint8_t>(i));
    return t;
  }();
  return table;
}

}  // namespace

float fp8_kv_scale(const float* x, int n) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  return amax > 0.0f && std::isfinite(amax) ? amax / model::kE4m3Max : 1.0f;
}

float quantize_kv_row_fp8(const float* x, int n, uint8_t* out) {
  const float scale = fp8_kv_scale(x, n);
  for (int i = 0; i < n; ++i) out[i] = model::float_to_e4m3(x[i] / scale);
  return scale;
}

void dequantize_kv_row_fp8(const uint8_t* in, float scale, int n, float* out) {
  const std::array<float, 256>& table = e4m3_table();
  for (int i = 0; i < n; ++i) out[i] = table[in[i]] * scale;
}

}  // namespace tandem::backend
