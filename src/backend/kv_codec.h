// How one row of K or V (one token's head_dim values of one KV head) is stored in a KV block of each
// KV cache dtype, and read back: fp32 as it is, bf16 rounded to nearest even, FP8 e4m3 with one fp32 scale
// per row (backend.h's KvCacheSpec gives the block layout). The CPU backend stores and reads with these;
// the CUDA kernels do the same arithmetic (scale = amax / 448, e4m3(x / scale), value * scale), so the
// CPU reference covers the FP8 KV path in CI.
// Free functions on caller-owned memory; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tandem::backend {

// The scale of one FP8 row: amax(|x|) / 448, or 1 when the row is all zeros (or not finite).
float fp8_kv_scale(const float* x, int n);
// out[i] = e4m3(x[i] / scale), rounded to nearest even and saturating at +-448; returns the scale.
float quantize_kv_row_fp8(const float* x, int n, uint8_t* out);
// out[i] = float(in[i]) * scale.
void dequantize_kv_row_fp8(const uint8_t* in, float scale, int n, float* out);

}  // namespace tandem::backend
