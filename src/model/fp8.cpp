#include "model/fp8.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/error.h"

namespace tandem::model {

float e4m3_to_float(uint8_t bits) {
  const bool negative = (bits & 0x80) != 0;
  const int exponent = (bits >> 3) & 0xF;
  const int mantissa = bits & 0x7;
  float magnitude;
  if (exponent == 0xF && mantissa == 0x7) {
    magnitude = std::numeric_limits<float>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -9);  // subnormal: m/8 * 2^(1-7)
  } else {
    magnitude = std::ldexp(static_cast<float>(8 + mantissa), exponent - 7 - 3);
  }
  return negative ? -magnitude : magnitude;
}

uint8_t float_to_e4m3(float value) {
  if (std::isnan(value)) return 0x7F;
  const uint8_t sign = std::signbit(value) ? 0x80 : 0x00;
  float a = std::min(std::fabs(value), kE4m3Max);
  // Below the smallest normal (2^-6) the grid is uniform with step 2^-9, and code m means m * 2^-9 (code
  // 8 is 2^-6, the first normal, so rounding up into it needs no special case).
  if (a < std::ldexp(1.0f, -6)) {
    return sign | static_cast<uint8_t>(std::nearbyint(std::ldexp(a, 9)));
  }
  int e2;
  std::frexp(a, &e2);        // a = f * 2^e2, f in [0.5, 1)
  int exponent = e2 - 1;     // a = (1 + frac) * 2^exponent
  int mantissa = static_cast<int>(std::nearbyint(std::ldexp(a, 3 - exponent))) - 8;  // ties to even
  if (mantissa == 8) {
    mantissa = 0;
    ++exponent;
  }
  // The clamp to 448 (exponent 8, mantissa 6) keeps the code below NaN's.
  return sign | static_cast<uint8_t>(((exponent + 7) << 3) | mantissa);
}

std::string_view fp8_scheme_name(Fp8Scheme scheme) {
  switch (scheme) {
    case Fp8Scheme::kBlock: return "block";
    case Fp8Scheme::kChannel: return "channel";
    case Fp8Scheme::kTensor: return "tensor";
  }
  return "?";
}

size_t QuantizedWeight::expected_scales() const {
  switch (scheme) {
    case Fp8Scheme::kBlock:
      return static_cast<size_t>((rows() + block_rows - 1) / block_rows) *
             static_cast<size_t>((cols() + block_cols - 1) / block_cols);
    case Fp8Scheme::kChannel: return static_cast<size_t>(rows());
    case Fp8Scheme::kTensor: return 1;
  }
  return 0;
}

float QuantizedWeight::scale_at(int64_t row, int64_t col) const {
  switch (scheme) {
    case Fp8Scheme::kBlock: {
      const int64_t col_blocks = (cols() + block_cols - 1) / block_cols;
      return scales[static_cast<size_t>((row / block_rows) * col_blocks + col / block_cols)];
    }
    case Fp8Scheme::kChannel: return scales[static_cast<size_t>(row)];
    case Fp8Scheme::kTensor: return scales[0];
  }
  return 0.0f;
}

void dequantize(const QuantizedWeight& w, float* out) {
  TANDEM_CHECK(w.shape.size() == 2 && w.scales.size() == w.expected_scales() &&
               w.values.size() == static_cast<size_t>(w.rows() * w.cols()));
  float table[256];
  for (int b = 0; b < 256; ++b) table[b] = e4m3_to_float(static_cast<uint8_t>(b));
  const int64_t rows = w.rows(), cols = w.cols();
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 20))
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* in = w.values.data() + r * cols;
    float* o = out + r * cols;
    for (int64_t c = 0; c < cols; ++c) o[c] = table[in[c]] * w.scale_at(r, c);
  }
}

std::vector<float> dequantize(const QuantizedWeight& weight) {
  std::vector<float> out(weight.values.size());
  dequantize(weight, out.data());
  return out;
}

QuantizedWeight quantize_fp8(const float* weight, const Shape& shape, Fp8Scheme scheme, int block_rows,
                             int block_cols) {
  TANDEM_CHECK(shape.size() == 2 && block_rows > 0 && block_cols > 0);
  QuantizedWeight q;
  q.shape = shape;
  q.scheme = scheme;
  q.block_rows = block_rows;
  q.block_cols = block_cols;
  const int64_t rows = q.rows(), cols = q.cols();
  q.values.resize(static_cast<size_t>(rows * cols));
  // Each scale's amax first, then the values divided by their scale.
  std::vector<float> amax(q.expected_scales(), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float a = std::fabs(weight[r * cols + c]);
      size_t s = 0;
      if (scheme == Fp8Scheme::kBlock) s = static_cast<size_t>((r / block_rows) * ((cols + block_cols - 1) / block_cols) + c / block_cols);
      else if (scheme == Fp8Scheme::kChannel) s = static_cast<size_t>(r);
      amax[s] = std::max(amax[s], a);
    }
  }
  q.scales.resize(amax.size());
  for (size_t s = 0; s < amax.size(); ++s) q.scales[s] = amax[s] > 0.0f ? amax[s] / kE4m3Max : 1.0f;
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 20))
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      q.values[static_cast<size_t>(r * cols + c)] = float_to_e4m3(weight[r * cols + c] / q.scale_at(r, c));
    }
  }
  return q;
}

}  // namespace tandem::model
