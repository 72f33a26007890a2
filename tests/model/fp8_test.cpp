// FP8 numerics (issue 18): e4m3fn decoding of all 256 bytes against the spec's formula written out here,
// rounding and saturation of the encoder, and dequantization of block, channel and tensor scales on
// small hand-made tensors whose expected values are worked out by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>

#include "model/fp8.h"

namespace tandem::model {
namespace {

// OCP FP8 spec, E4M3: S.EEEE.MMM, bias 7; E = 0 is subnormal (-1)^S * 2^(1-7) * (0.M); otherwise
// (-1)^S * 2^(E-7) * (1.M); S.1111.111 is NaN and there are no infinities.
double spec_e4m3(int byte) {
  const int s = (byte >> 7) & 1, e = (byte >> 3) & 15, m = byte & 7;
  if (e == 15 && m == 7) return std::nan("");
  const double sign = s ? -1.0 : 1.0;
  if (e == 0) return sign * std::pow(2.0, -6) * (m / 8.0);
  return sign * std::pow(2.0, e - 7) * (1.0 + m / 8.0);
}

TEST(E4m3, EveryByteDecodesAsTheSpecSays) {
  for (int b = 0; b < 256; ++b) {
    const double expected = spec_e4m3(b);
    const float got = e4m3_to_float(static_cast<uint8_t>(b));
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(got)) << "byte " << b;
    } else {
      EXPECT_EQ(static_cast<double>(got), expected) << "byte " << b;
      EXPECT_EQ(std::signbit(got), (b & 0x80) != 0) << "byte " << b;
    }
  }
  EXPECT_EQ(e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_float(0xFE), -448.0f);
  EXPECT_EQ(e4m3_to_float(0x01), 0.001953125f);  // 2^-9, the smallest subnormal
  EXPECT_EQ(e4m3_to_float(0x08), 0.015625f);     // 2^-6, the smallest normal
  EXPECT_EQ(e4m3_to_float(0x38), 1.0f);
  EXPECT_TRUE(std::isnan(e4m3_to_float(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3_to_float(0xFF)));
  EXPECT_FALSE(std::isinf(e4m3_to_float(0x78)));  // 0x78 is 256, not infinity (e4m3fn)
}

TEST(E4m3, EncodingRoundsToNearestEvenAndSaturates) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7F) == 0x7F) continue;
    EXPECT_EQ(float_to_e4m3(e4m3_to_float(static_cast<uint8_t>(b))), b) << "byte " << b;
  }
  EXPECT_EQ(float_to_e4m3(1.0625f), 0x38);  // halfway 1.0 | 1.125: to the even mantissa (1.0)
  EXPECT_EQ(float_to_e4m3(1.1875f), 0x3A);  // halfway 1.125 | 1.25: to 1.25
  EXPECT_EQ(float_to_e4m3(1.07f), 0x39);    // nearer 1.125
  EXPECT_EQ(float_to_e4m3(0.0009765625f), 0x00);  // 2^-10, halfway 0 | 2^-9: to 0
  EXPECT_EQ(float_to_e4m3(0.0029296875f), 0x02);  // 1.5 * 2^-9: halfway 1 | 2 subnormal steps, to 2
  EXPECT_EQ(float_to_e4m3(0.0146484375f), 0x08);  // 7.5 * 2^-9: rounds up into the first normal
  EXPECT_EQ(float_to_e4m3(1000.0f), 0x7E);
  EXPECT_EQ(float_to_e4m3(-1e30f), 0xFE);
  EXPECT_EQ(float_to_e4m3(INFINITY), 0x7E);
  EXPECT_EQ(float_to_e4m3(std::nanf("")), 0x7F);
  EXPECT_EQ(float_to_e4m3(-0.0f), 0x80);
}

TEST(Fp8Dequantize, BlockScalesByHand) {
  // [3, 3] in 2 x 2 blocks: scales [2, 2] cover rows {0,1},{2} x cols {0,1},{2}.
  QuantizedWeight w;
  w.shape = {3, 3};
  w.scheme = Fp8Scheme::kBlock;
  w.block_rows = w.block_cols = 2;
  // 0x38 = 1, 0x40 = 2, 0xC0 = -2, 0x3C = 1.5, 0x01 = 2^-9, 0x7E = 448, 0x00 = 0, 0x30 = 0.5, 0xB8 = -1.
  w.values = {0x38, 0x40, 0xC0,
              0x3C, 0x01, 0x7E,
              0x00, 0x30, 0xB8};
  w.scales = {0.5f, 2.0f,
              -1.0f, 0.25f};
  ASSERT_EQ(w.expected_scales(), 4u);
  const std::vector<float> expected = {0.5f, 1.0f, -4.0f,
                                       0.75f, 0.0009765625f, 896.0f,
                                       0.0f, -0.5f, -0.25f};
  EXPECT_EQ(dequantize(w), expected);
}

TEST(Fp8Dequantize, ChannelAndTensorScalesByHand) {
  QuantizedWeight w;
  w.shape = {2, 3};
  w.scheme = Fp8Scheme::kChannel;
  w.values = {0x38, 0x40, 0x3C,   // 1, 2, 1.5
              0xB8, 0x30, 0x48};  // -1, 0.5, 4
  w.scales = {0.5f, 3.0f};
  EXPECT_EQ(dequantize(w), (std::vector<float>{0.5f, 1.0f, 0.75f, -3.0f, 1.5f, 12.0f}));
  w.scheme = Fp8Scheme::kTensor;
  w.scales = {0.125f};
  EXPECT_EQ(dequantize(w), (std::vector<float>{0.125f, 0.25f, 0.1875f, -0.125f, 0.0625f, 0.5f}));
}

// |w - dequantized| <= half an e4m3 step at |w| / scale: 2^-4 relative for normals, 2^-10 * scale below
// the smallest normal.
void expect_within_fp8_rounding(const std::vector<float>& w, const QuantizedWeight& q) {
  const std::vector<float> d = dequantize(q);
  ASSERT_EQ(d.size(), w.size());
  for (int64_t r = 0; r < q.rows(); ++r) {
    for (int64_t c = 0; c < q.cols(); ++c) {
      const size_t i = static_cast<size_t>(r * q.cols() + c);
      const float scale = q.scale_at(r, c);
      const float bound = std::max(std::fabs(w[i]) * 0.0625f, scale * 0.0009765625f) * 1.0001f;
      ASSERT_LE(std::fabs(w[i] - d[i]), bound) << "(" << r << ", " << c << ") " << fp8_scheme_name(q.scheme);
    }
  }
}

TEST(Fp8Quantize, RoundTripsWithinFp8RoundingWithPartialBlocks) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const Shape shape = {200, 300};  // 2 x 3 blocks of 128, the last row and column of blocks partial
  std::vector<float> w(200 * 300);
  for (float& x : w) x = normal(rng);
  w[5] = 0.9f;  // an outlier sets its block's and its row's scale
  for (Fp8Scheme scheme : {Fp8Scheme::kBlock, Fp8Scheme::kChannel, Fp8Scheme::kTensor}) {
    QuantizedWeight q = quantize_fp8(w.data(), shape, scheme);
    ASSERT_EQ(q.scales.size(), q.expected_scales());
    expect_within_fp8_rounding(w, q);
  }
  QuantizedWeight block = quantize_fp8(w.data(), shape, Fp8Scheme::kBlock);
  EXPECT_EQ(block.scales.size(), 6u);
  EXPECT_FLOAT_EQ(block.scales[0], 0.9f / 448.0f);
  EXPECT_EQ(block.values[5], 0x7E);  // the block's amax maps to 448 exactly
}

}  // namespace
}  // namespace tandem::model
