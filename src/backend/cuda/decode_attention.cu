// The decode attention kernel (see attention.cuh): one query token per sequence, the G query heads of one
// KV head held in registers, K/V rows streamed from the paged cache 16 bytes a lane.
#include "backend/cuda/attention_kernels.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/warp.cuh"

#include <cmath>
#include <type_traits>

namespace tandem::backend::cuda {
namespace {

using bf16 = __nv_bfloat16;

// Decode tiles: one query token, all G query heads of one KV head (G = group <= 8), keys
// [key_begin, key_end), every one visible (REQUIRES key_end <= the token's position + 1). The K/V rows
// are read straight into registers, 16 bytes per lane: D / 8 lanes hold one key, so a warp takes
// 32 / (D / 8) keys at a time and each lane keeps its own online-softmax state for the keys it saw;
// kUnroll such steps are loaded before any is used, so every lane has 2 * kUnroll loads in flight. The
// states are merged across lanes (shuffles) and warps (shared memory) at the end. Each K/V byte is read
// once for all G heads.
//
// Pipelined: the next tile's K/V loads are issued before the current tile is scored, so a warp keeps loads
// in flight while it computes instead of in bursts (a G = 4 tile uses ~165 registers a thread, so only 12
// warps share an SM and the bursts left HBM idle). H200, same call: Llama-3.1-8B offline +4.3%, Qwen3-0.6B
// +0.8% over loading a tile, then scoring it (that path is deleted; docs/performance.md).
//
// FP8 cache (kFp8): the same lanes read 8 bytes of e4m3 a key instead of 16 of bf16, and the row's scale;
// the scale multiplies the key's reduced dot product, and the probability that weights its V row. The
// launchers give it twice bf16's kUnroll, so that a lane has as many bytes in flight as on bf16 (with the
// bf16 unroll, halving the bytes a load halved the bytes in flight and the kernel ran no faster: H200,
// Qwen3-0.6B offline, FP8 8.13 ms per decode step against bf16's 7.43).
template <int D, int G, int kUnroll = (G >= 8 ? 2 : 4), bool kFp8 = false>
__device__ __forceinline__ void decode_attention_tile(const AttentionParams& p) {
  constexpr int kLanesPerKey = D / 8;
  constexpr int kKeysPerWarp = kWarp / kLanesPerKey;
  constexpr int kTileKeys = kWarps * kKeysPerWarp * kUnroll;
  __shared__ float m_s[kWarps][G], l_s[kWarps][G];  // [warps, G] fp32, shared
  __shared__ __align__(16) float acc_s[kWarps][G][D];  // [warps, G, D] fp32, shared

  const AttentionWorkItem w = p.items[blockIdx.x];
  if (w.partial < -1 || w.num_tokens == 0) return;  // unused split, or a padding sequence
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int sub = lane / kLanesPerKey, part = lane % kLanesPerKey;
  const int t = w.token_begin;

  float q[G][8];
  const float q_scale = p.scale * kLog2e;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p.q + static_cast<size_t>(t) * p.q_row_stride +
                                                      static_cast<size_t>(w.kv_head * G + g) * D + part * 8);
    const __nv_bfloat162* h2 = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = __bfloat1622float2(h2[e]);
      q[g][2 * e] = f.x * q_scale;
      q[g][2 * e + 1] = f.y * q_scale;
    }
  }
  float m[G], l[G], acc[G][8];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[g][e] = 0.0f;
  }

  const int32_t* table = p.block_tables + static_cast<size_t>(w.seq) * p.max_blocks_per_seq;
  const size_t kv_size = static_cast<size_t>(p.num_kv_heads) * D;
  const size_t head_offset = static_cast<size_t>(w.kv_head) * D + part * 8;
  // This lane's K and V rows of the tile that starts at key0 (zeros past the end), and (FP8) their scales.
  using Raw = std::conditional_t<kFp8, uint2, uint4>;  // one lane's 8 values of a K or V row
  auto load_tile = [&](int key0, Raw (&kr)[kUnroll], Raw (&vr)[kUnroll], float (&ks)[kUnroll], float (&vs)[kUnroll]) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int key = key0 + (u * kWarps + warp) * kKeysPerWarp + sub;
      kr[u] = vr[u] = Raw{};
      ks[u] = vs[u] = 0.0f;
      if (key < w.key_end) {
        const int block = table[key / p.block_size], offset = key % p.block_size;
        if constexpr (kFp8) {
          const Fp8KvRow row = fp8_kv_row<D>(p, block, offset, w.kv_head);
          kr[u] = *reinterpret_cast<const uint2*>(row.k + part * 8);
          vr[u] = *reinterpret_cast<const uint2*>(row.v + part * 8);
          ks[u] = *row.k_scale;
          vs[u] = *row.v_scale;
        } else {
          const bf16* src = p.kv_pool + (static_cast<size_t>(block) * 2 * p.block_size + offset) * kv_size + head_offset;
          kr[u] = *reinterpret_cast<const uint4*>(src);
          vr[u] = *reinterpret_cast<const uint4*>(src + static_cast<size_t>(p.block_size) * kv_size);
        }
      }
    }
  };
  // 8 values of a K or V row as floats (unscaled for FP8).
  auto to_float = [](const Raw& raw, float (&out)[8]) {
    if constexpr (kFp8) {
      fp8x8_to_float(raw, out);
    } else {
      const __nv_bfloat162* h2 = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = __bfloat1622float2(h2[e]);
        out[2 * e] = f.x;
        out[2 * e + 1] = f.y;
      }
    }
  };
  // Scores the tile's keys for the G heads and folds them into this lane's online-softmax state.
  auto consume = [&](int key0, const Raw (&kr)[kUnroll], const Raw (&vr)[kUnroll], const float (&ks)[kUnroll],
                     const float (&vs)[kUnroll]) {
    bool valid[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) valid[u] = key0 + (u * kWarps + warp) * kKeysPerWarp + sub < w.key_end;
    float s[kUnroll][G];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kf[8];
      to_float(kr[u], kf);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) dot += q[g][e] * kf[e];
#pragma unroll
        for (int off = kLanesPerKey / 2; off > 0; off /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, off);
        if constexpr (kFp8) dot *= ks[u];
        s[u][g] = valid[u] ? dot : -INFINITY;
      }
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float mx = m[g];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) mx = fmaxf(mx, s[u][g]);
      const float use = mx == -INFINITY ? 0.0f : mx;  // nothing seen yet: stay at zero
      const float corr = exp2f(m[g] - use);
      l[g] *= corr;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] *= corr;
      m[g] = mx;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) s[u][g] = exp2f(s[u][g] - use);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float vf[8];
      to_float(vr[u], vf);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        l[g] += s[u][g];
        const float pv = kFp8 ? s[u][g] * vs[u] : s[u][g];
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] += pv * vf[e];
      }
    }
  };
  Raw kr[kUnroll], vr[kUnroll];
  float ks[kUnroll], vs[kUnroll];
  load_tile(w.key_begin, kr, vr, ks, vs);
  for (int key0 = w.key_begin; key0 < w.key_end; key0 += kTileKeys) {
    Raw kn[kUnroll], vn[kUnroll];
    float ksn[kUnroll], vsn[kUnroll];
    load_tile(key0 + kTileKeys, kn, vn, ksn, vsn);  // past the end: zeros, nothing read
    consume(key0, kr, vr, ks, vs);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      kr[u] = kn[u];
      vr[u] = vn[u];
      ks[u] = ksn[u];
      vs[u] = vsn[u];
    }
  }

  // Merge the kKeysPerWarp key slots of the warp (lanes kLanesPerKey apart hold the same dims).
#pragma unroll
  for (int off = kLanesPerKey; off < kWarp; off *= 2) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float m_o = __shfl_xor_sync(0xffffffffu, m[g], off);
      const float l_o = __shfl_xor_sync(0xffffffffu, l[g], off);
      const float mx = fmaxf(m[g], m_o);
      const float use = mx == -INFINITY ? 0.0f : mx;
      const float f = exp2f(m[g] - use), f_o = exp2f(m_o - use);
      l[g] = l[g] * f + l_o * f_o;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] = acc[g][e] * f + __shfl_xor_sync(0xffffffffu, acc[g][e], off) * f_o;
      m[g] = mx;
    }
  }
  if (sub == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (part == 0) {
        m_s[warp][g] = m[g];
        l_s[warp][g] = l[g];
      }
      float4* dst = reinterpret_cast<float4*>(&acc_s[warp][g][part * 8]);
      dst[0] = make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
      dst[1] = make_float4(acc[g][4], acc[g][5], acc[g][6], acc[g][7]);
    }
  }
  __syncthreads();
  // Warp 0's first key slot merges the warps and writes the G rows.
  if (warp != 0) return;
  const int group = p.num_heads / p.num_kv_heads;
#pragma unroll
  for (int g = 0; g < G && sub == 0; ++g) {
    float mx = -INFINITY;
#pragma unroll
    for (int v = 0; v < kWarps; ++v) mx = fmaxf(mx, m_s[v][g]);
    const float use = mx == -INFINITY ? 0.0f : mx;
    float sum = 0.0f, o[8] = {};
#pragma unroll
    for (int v = 0; v < kWarps; ++v) {
      const float f = exp2f(m_s[v][g] - use);
      sum += l_s[v][g] * f;
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] += acc_s[v][g][part * 8 + e] * f;
    }
    if (w.partial < 0) {
      const int h = w.kv_head * group + g;
      bf16* dst = p.out + static_cast<size_t>(t) * p.num_heads * D + static_cast<size_t>(h) * D + part * 8;
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
      uint4 packed;
      __nv_bfloat162* p2 = reinterpret_cast<__nv_bfloat162*>(&packed);
#pragma unroll
      for (int e = 0; e < 4; ++e) p2[e] = __floats2bfloat162_rn(o[2 * e] * inv, o[2 * e + 1] * inv);
      *reinterpret_cast<uint4*>(dst) = packed;
    } else {
      // Row g of the tile (one token, heads 0..G-1 of the group), in the SIMT kernel's partial format.
      const size_t slot = static_cast<size_t>(w.partial) * kAttentionRows + g;
      float4* dst = reinterpret_cast<float4*>(p.partial_out + slot * D + part * 8);
      dst[0] = make_float4(o[0], o[1], o[2], o[3]);
      dst[1] = make_float4(o[4], o[5], o[6], o[7]);
      if (part == 0) {
        p.partial_ml[slot * 2] = mx;
        p.partial_ml[slot * 2 + 1] = sum;
      }
    }
  }
  if (w.partial < 0 || !p.combine_counters || p.decode_splits <= 0) return;

  // Split tile with the merge folded in: the last of the tile's used splits to finish merges them (the
  // combine item's num_splits), then resets the tile's counter for the next launch.
  const int tile = w.partial / p.decode_splits;
  __threadfence();
  __syncwarp();
  const AttentionCombineItem c = p.combines[tile];
  int arrived = 0;
  if (lane == 0) arrived = atomicAdd(&p.combine_counters[tile], 1);
  arrived = __shfl_sync(0xffffffffu, arrived, 0);
  if (arrived != c.num_splits - 1) return;
  __threadfence();
  if (lane == 0) p.combine_counters[tile] = 0;
  if (sub != 0) return;
#pragma unroll 1
  for (int g = 0; g < G; ++g) {
    float mx = -INFINITY;
    for (int sp = 0; sp < c.num_splits; ++sp) {
      mx = fmaxf(mx, __ldcg(p.partial_ml + (static_cast<size_t>(c.first_partial + sp) * kAttentionRows + g) * 2));
    }
    const float use = mx == -INFINITY ? 0.0f : mx;
    float sum = 0.0f, o[8] = {};
#pragma unroll 2
    for (int sp = 0; sp < c.num_splits; ++sp) {
      const size_t slot = static_cast<size_t>(c.first_partial + sp) * kAttentionRows + g;
      const float f = exp2f(__ldcg(p.partial_ml + slot * 2) - use);
      sum += __ldcg(p.partial_ml + slot * 2 + 1) * f;
      const float4* src = reinterpret_cast<const float4*>(p.partial_out + slot * D + part * 8);
      const float4 a = __ldcg(src), b = __ldcg(src + 1);
      o[0] += a.x * f; o[1] += a.y * f; o[2] += a.z * f; o[3] += a.w * f;
      o[4] += b.x * f; o[5] += b.y * f; o[6] += b.z * f; o[7] += b.w * f;
    }
    const int h = w.kv_head * group + g;
    bf16* dst = p.out + static_cast<size_t>(t) * p.num_heads * D + static_cast<size_t>(h) * D + part * 8;
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    uint4 packed;
    __nv_bfloat162* p2 = reinterpret_cast<__nv_bfloat162*>(&packed);
#pragma unroll
    for (int e = 0; e < 4; ++e) p2[e] = __floats2bfloat162_rn(o[2 * e] * inv, o[2 * e + 1] * inv);
    *reinterpret_cast<uint4*>(dst) = packed;
  }
}

template <int D, int G, bool kFp8>
__global__ void __launch_bounds__(kWarps * kWarp) decode_attention_kernel(AttentionParams p) {
  pdl_trigger();
  pdl_wait();  // everything below may read what the previous kernel wrote
  decode_attention_tile<D, G, (G >= 8 ? 2 : 4) * (kFp8 ? 2 : 1), kFp8>(p);
}

// The kernel held to few enough registers that 4 CTAs of a G = 4 tile share an SM (168 registers allow 3),
// with half the keys a step so that the cap costs no spills (ptxas -v): more warps with loads in flight
// against fewer loads a warp. The launcher uses it for G = 4 only.
template <int D, bool kFp8>
__global__ void __launch_bounds__(kWarps * kWarp, 4) decode_attention_g4_capped_kernel(AttentionParams p) {
  pdl_trigger();
  pdl_wait();  // everything below may read what the previous kernel wrote
  decode_attention_tile<D, 4, kFp8 ? 4 : 2, kFp8>(p);
}

template <int D, int G, bool kFp8>
cudaError_t launch_decode(const AttentionParams& p, dim3 grid, dim3 block, cudaStream_t stream,
                          const LaunchOptions& options) {
  // The register-capped build where it measured faster: G = 4 (Llama-3.1-8B, H200: offline +1.0%, decode
  // steps at batch 64 1.7% shorter; the uncapped G = 4 launch is deleted); for G = 2 it was 4-6% slower
  // (Qwen3-0.6B at batch 256), so the other groups run uncapped.
  if constexpr (G == 4) {
    return launch_kernel(decode_attention_g4_capped_kernel<D, kFp8>, grid, block, 0, stream, options, p);
  } else {
    return launch_kernel(decode_attention_kernel<D, G, kFp8>, grid, block, 0, stream, options, p);
  }
}

template <int D, bool kFp8>
cudaError_t launch_for_group(const AttentionParams& p, cudaStream_t stream, const LaunchOptions& options) {
  const dim3 grid(p.num_items), block(kWarps * kWarp);
  switch (p.num_heads / p.num_kv_heads) {
    case 1: return launch_decode<D, 1, kFp8>(p, grid, block, stream, options);
    case 2: return launch_decode<D, 2, kFp8>(p, grid, block, stream, options);
    case 4: return launch_decode<D, 4, kFp8>(p, grid, block, stream, options);
    case 8: return launch_decode<D, 8, kFp8>(p, grid, block, stream, options);
    default: return cudaErrorInvalidValue;
  }
}

template <int D>
cudaError_t launch_for_cache(const AttentionParams& p, cudaStream_t stream, const LaunchOptions& options) {
  return p.kv_pool_fp8 ? launch_for_group<D, true>(p, stream, options) : launch_for_group<D, false>(p, stream, options);
}

}  // namespace

cudaError_t launch_decode_attention(const AttentionParams& p, cudaStream_t stream, const LaunchOptions& options) {
  switch (p.head_dim) {
    case 16: return launch_for_cache<16>(p, stream, options);
    case 32: return launch_for_cache<32>(p, stream, options);
    case 64: return launch_for_cache<64>(p, stream, options);
    case 128: return launch_for_cache<128>(p, stream, options);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace tandem::backend::cuda
