// FP8 weights: the OCP e4m3fn number format (OCP 8-bit Floating Point Specification, "E4M3": bias 7,
// no infinities, S.1111.111 is NaN, largest finite 448), and a quantized weight matrix as FP8 bytes
// plus the scales of one scheme. The dequantized weight is always the FP8 value times its scale:
//   block   (quant_method "fp8", weight_block_size [R, C]): scales [ceil(out/R), ceil(in/C)],
//           one per R x C tile (the checkpoint calls them weight_scale_inv, but they multiply);
//   channel (compressed-tensors strategy "channel"):       scales [out], one per output row;
//   tensor  (compressed-tensors strategy "tensor"):        one scale.
// Plain values and free functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/tensor.h"

namespace tandem::model {

constexpr float kE4m3Max = 448.0f;

// Decodes one e4m3fn byte (NaN for 0x7F and 0xFF).
float e4m3_to_float(uint8_t bits);
// Encodes with round-to-nearest-even, saturating to +-448 (as torch's cast after a clamp); NaN -> 0x7F.
uint8_t float_to_e4m3(float value);

enum class Fp8Scheme { kBlock, kChannel, kTensor };
std::string_view fp8_scheme_name(Fp8Scheme scheme);  // "block", "channel", "tensor"

struct QuantizedWeight {
  Shape shape;  // [out, in]
  Fp8Scheme scheme = Fp8Scheme::kChannel;
  int block_rows = 128;  // kBlock only
  int block_cols = 128;
  std::vector<uint8_t> values;  // [out, in] e4m3fn, row-major
  std::vector<float> scales;    // see the file comment for the layout of each scheme

  int64_t rows() const { return shape[0]; }
  int64_t cols() const { return shape[1]; }
  // Number of scales the scheme needs for this shape.
  size_t expected_scales() const;
  // The scale that multiplies element (row, col).
  float scale_at(int64_t row, int64_t col) const;
};

// out[i] = e4m3_to_float(values[i]) * its scale; `out` holds rows * cols floats.
// REQUIRES: scales.size() == expected_scales().
void dequantize(const QuantizedWeight& weight, float* out);
std::vector<float> dequantize(const QuantizedWeight& weight);

// Quantizes a [rows, cols] fp32 matrix: each scale is the amax of the values it covers over 448 (1 when
// they are all zero), so the largest of them maps to +-448 and nothing saturates. Used by make-model
// and by online quantization (--quantization fp8, per-channel).
QuantizedWeight quantize_fp8(const float* weight, const Shape& shape, Fp8Scheme scheme, int block_rows = 128,
                             int block_cols = 128);

}  // namespace tandem::model
