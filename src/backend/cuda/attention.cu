// Paged attention kernels and their planner (see attention.cuh).
#include "backend/cuda/attention.cuh"
#include "backend/cuda/launch.cuh"

#include <algorithm>
#include <cmath>

namespace tandem::backend::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kWarp = 32;
constexpr int kWarps = 4;
constexpr int kRowsPerWarp = kAttentionRows / kWarps;
constexpr int kKeys = 32;  // keys per shared-memory tile: one per lane when scoring
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Scores are kept in log2 units (q pre-scaled by scale * log2(e)) so exp2f does the exponentials.
template <int D>
__global__ void __launch_bounds__(kWarps * kWarp) attention_kernel(AttentionParams p) {
  pdl_trigger();
  pdl_wait();  // everything below may read what the previous kernel wrote
  constexpr int kPad = D + 4;  // fp32 row stride in shared memory: float4-aligned, no bank conflicts when scoring
  constexpr int kDimsPerLane = (D + kWarp - 1) / kWarp;
  constexpr int kChunks = D / 8;  // 16-byte chunks of one bf16 row
  __shared__ __align__(16) float q_s[kAttentionRows][kPad];  // [rows, D] fp32, shared
  __shared__ __align__(16) float k_s[kKeys][kPad];           // [keys, D] fp32, shared
  __shared__ __align__(16) float v_s[kKeys][kPad];           // [keys, D] fp32, shared

  const AttentionWorkItem w = p.items[blockIdx.x];
  if (w.partial < -1) return;  // a split this step does not use (its combine reads fewer splits)
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int group = p.num_heads / p.num_kv_heads;
  const int rows = w.num_tokens * w.num_heads;
  const float q_scale = p.scale * kLog2e;

  for (int idx = threadIdx.x; idx < kAttentionRows * D; idx += blockDim.x) {
    const int r = idx / D, i = idx % D;
    float v = 0.0f;
    if (r < rows) {
      const int t = w.token_begin + r / w.num_heads;
      const int h = w.kv_head * group + w.head_begin + r % w.num_heads;
      v = __bfloat162float(p.q[static_cast<size_t>(t) * p.q_row_stride + static_cast<size_t>(h) * D + i]) * q_scale;
    }
    q_s[r][i] = v;
  }
  int limit[kRowsPerWarp];  // keys below limit are visible to the row (causal)
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp * kRowsPerWarp + i;
    limit[i] = r < rows ? p.positions[w.token_begin + r / w.num_heads] + 1 : 0;
  }

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kDimsPerLane];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < kDimsPerLane; ++c) acc[i][c] = 0.0f;
  }

  const int32_t* table = p.block_tables + static_cast<size_t>(w.seq) * p.max_blocks_per_seq;
  const size_t kv_size = static_cast<size_t>(p.num_kv_heads) * D;
  for (int key0 = w.key_begin; key0 < w.key_end; key0 += kKeys) {
    __syncthreads();  // the previous tile's readers are done (and q_s is written, the first time)
    for (int c = threadIdx.x; c < kKeys * kChunks; c += blockDim.x) {
      const int j = c / kChunks, part = c % kChunks;
      const int key = key0 + j;
      float kf[8], vf[8];
      if (key < w.key_end) {
        const int block = table[key / p.block_size], offset = key % p.block_size;
        const bf16* k_src = p.kv_pool + (static_cast<size_t>(block) * 2 * p.block_size + offset) * kv_size +
                            static_cast<size_t>(w.kv_head) * D + part * 8;
        const bf16* v_src = k_src + static_cast<size_t>(p.block_size) * kv_size;
        const uint4 kr = *reinterpret_cast<const uint4*>(k_src);
        const uint4 vr = *reinterpret_cast<const uint4*>(v_src);
        const __nv_bfloat162* k2 = reinterpret_cast<const __nv_bfloat162*>(&kr);
        const __nv_bfloat162* v2 = reinterpret_cast<const __nv_bfloat162*>(&vr);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 a = __bfloat1622float2(k2[e]), b = __bfloat1622float2(v2[e]);
          kf[2 * e] = a.x; kf[2 * e + 1] = a.y;
          vf[2 * e] = b.x; vf[2 * e + 1] = b.y;
        }
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) kf[e] = vf[e] = 0.0f;
      }
      float4* kd = reinterpret_cast<float4*>(&k_s[j][part * 8]);
      float4* vd = reinterpret_cast<float4*>(&v_s[j][part * 8]);
      kd[0] = make_float4(kf[0], kf[1], kf[2], kf[3]);
      kd[1] = make_float4(kf[4], kf[5], kf[6], kf[7]);
      vd[0] = make_float4(vf[0], vf[1], vf[2], vf[3]);
      vd[1] = make_float4(vf[4], vf[5], vf[6], vf[7]);
    }
    __syncthreads();

    // Lane j scores key key0 + j against the warp's rows.
    float s[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) s[i] = 0.0f;
#pragma unroll 4
    for (int e = 0; e < D; e += 4) {
      const float4 kv = *reinterpret_cast<const float4*>(&k_s[lane][e]);
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const float4 qv = *reinterpret_cast<const float4*>(&q_s[warp * kRowsPerWarp + i][e]);
        s[i] += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
      }
    }
    const int key = key0 + lane;
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const bool visible = key < w.key_end && key < limit[i];
      const float score = visible ? s[i] : -INFINITY;
      const float m_new = fmaxf(m[i], warp_max(score));
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing visible yet stays at zero
      const float prob = exp2f(score - m_use);
      const float correction = exp2f(m[i] - m_use);
      l[i] = l[i] * correction + warp_sum(prob);
#pragma unroll
      for (int c = 0; c < kDimsPerLane; ++c) acc[i][c] *= correction;
      m[i] = m_new;
      s[i] = prob;
    }
    // acc[row, dim] += sum_j prob[row, j] * V[j, dim]; lane owns dims lane, lane + 32, ...
#pragma unroll 8
    for (int j = 0; j < kKeys; ++j) {
      float pj[kRowsPerWarp];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) pj[i] = __shfl_sync(0xffffffffu, s[i], j);
#pragma unroll
      for (int c = 0; c < kDimsPerLane; ++c) {
        const int dim = lane + c * kWarp;
        const float v = dim < D ? v_s[j][dim] : 0.0f;
#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i) acc[i][c] += pj[i] * v;
      }
    }
  }

#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp * kRowsPerWarp + i;
    if (r >= rows) continue;
    if (w.partial < 0) {
      const int t = w.token_begin + r / w.num_heads;
      const int h = w.kv_head * group + w.head_begin + r % w.num_heads;
      bf16* o = p.out + static_cast<size_t>(t) * p.num_heads * D + static_cast<size_t>(h) * D;
      const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
#pragma unroll
      for (int c = 0; c < kDimsPerLane; ++c) {
        const int dim = lane + c * kWarp;
        if (dim < D) o[dim] = __float2bfloat16(acc[i][c] * inv);
      }
    } else {
      float* o = p.partial_out + (static_cast<size_t>(w.partial) * kAttentionRows + r) * D;
#pragma unroll
      for (int c = 0; c < kDimsPerLane; ++c) {
        const int dim = lane + c * kWarp;
        if (dim < D) o[dim] = acc[i][c];
      }
      if (lane == 0) {
        float* ml = p.partial_ml + (static_cast<size_t>(w.partial) * kAttentionRows + r) * 2;
        ml[0] = m[i];
        ml[1] = l[i];
      }
    }
  }
}

template <int D>
__global__ void __launch_bounds__(kWarps * kWarp) attention_combine_kernel(AttentionParams p) {
  pdl_trigger();
  pdl_wait();  // everything below may read what the previous kernel wrote
  constexpr int kDimsPerLane = (D + kWarp - 1) / kWarp;
  const AttentionCombineItem w = p.combines[blockIdx.x];
  if (w.num_splits <= 0) return;  // the tile ran unsplit this step and wrote its output itself
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int group = p.num_heads / p.num_kv_heads;
  const int rows = w.num_tokens * w.num_heads;
  for (int r = warp; r < rows; r += kWarps) {
    // Lanes take the splits' (max, sum) pairs in parallel; then every lane walks the splits for its dims,
    // several partial rows in flight at once.
    float m_max = -INFINITY;
    for (int s = lane; s < w.num_splits; s += kWarp) {
      m_max = fmaxf(m_max, p.partial_ml[(static_cast<size_t>(w.first_partial + s) * kAttentionRows + r) * 2]);
    }
    m_max = warp_max(m_max);
    float l_part = 0.0f;
    for (int s = lane; s < w.num_splits; s += kWarp) {
      const size_t slot = static_cast<size_t>(w.first_partial + s) * kAttentionRows + r;
      const float m_s = p.partial_ml[slot * 2];
      l_part += m_s == -INFINITY ? 0.0f : p.partial_ml[slot * 2 + 1] * exp2f(m_s - m_max);
    }
    const float l_sum = warp_sum(l_part);
    float acc[kDimsPerLane] = {};
#pragma unroll 4
    for (int s = 0; s < w.num_splits; ++s) {
      const size_t slot = static_cast<size_t>(w.first_partial + s) * kAttentionRows + r;
      const float m_s = p.partial_ml[slot * 2];
      const float f = m_s == -INFINITY ? 0.0f : exp2f(m_s - m_max);
#pragma unroll
      for (int c = 0; c < kDimsPerLane; ++c) {
        const int dim = lane + c * kWarp;
        if (dim < D) acc[c] += p.partial_out[slot * D + dim] * f;
      }
    }
    const int t = w.token_begin + r / w.num_heads;
    const int h = w.kv_head * group + w.head_begin + r % w.num_heads;
    bf16* o = p.out + static_cast<size_t>(t) * p.num_heads * D + static_cast<size_t>(h) * D;
    const float inv = l_sum > 0.0f ? 1.0f / l_sum : 0.0f;
#pragma unroll
    for (int c = 0; c < kDimsPerLane; ++c) {
      const int dim = lane + c * kWarp;
      if (dim < D) o[dim] = __float2bfloat16(acc[c] * inv);
    }
  }
}

// ---- Decode tiles: one query token, all G query heads of one KV head (G = group <= 8), keys
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
template <int D, int G, int kUnroll = (G >= 8 ? 2 : 4)>
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
  // This lane's K and V rows of the tile that starts at key0 (zeros past the end).
  auto load_tile = [&](int key0, uint4 (&kr)[kUnroll], uint4 (&vr)[kUnroll]) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int key = key0 + (u * kWarps + warp) * kKeysPerWarp + sub;
      kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
      if (key < w.key_end) {
        const int block = table[key / p.block_size], offset = key % p.block_size;
        const bf16* src = p.kv_pool + (static_cast<size_t>(block) * 2 * p.block_size + offset) * kv_size + head_offset;
        kr[u] = *reinterpret_cast<const uint4*>(src);
        vr[u] = *reinterpret_cast<const uint4*>(src + static_cast<size_t>(p.block_size) * kv_size);
      }
    }
  };
  // Scores the tile's keys for the G heads and folds them into this lane's online-softmax state.
  auto consume = [&](int key0, const uint4 (&kr)[kUnroll], const uint4 (&vr)[kUnroll]) {
    bool valid[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) valid[u] = key0 + (u * kWarps + warp) * kKeysPerWarp + sub < w.key_end;
    float s[kUnroll][G];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kf[8];
      const __nv_bfloat162* k2 = reinterpret_cast<const __nv_bfloat162*>(&kr[u]);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = __bfloat1622float2(k2[e]);
        kf[2 * e] = f.x;
        kf[2 * e + 1] = f.y;
      }
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) dot += q[g][e] * kf[e];
#pragma unroll
        for (int off = kLanesPerKey / 2; off > 0; off /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, off);
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
      const __nv_bfloat162* v2 = reinterpret_cast<const __nv_bfloat162*>(&vr[u]);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = __bfloat1622float2(v2[e]);
        vf[2 * e] = f.x;
        vf[2 * e + 1] = f.y;
      }
#pragma unroll
      for (int g = 0; g < G; ++g) {
        l[g] += s[u][g];
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] += s[u][g] * vf[e];
      }
    }
  };
  uint4 kr[kUnroll], vr[kUnroll];
  load_tile(w.key_begin, kr, vr);
  for (int key0 = w.key_begin; key0 < w.key_end; key0 += kTileKeys) {
    uint4 kn[kUnroll], vn[kUnroll];
    load_tile(key0 + kTileKeys, kn, vn);  // past the end: zeros, nothing read
    consume(key0, kr, vr);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      kr[u] = kn[u];
      vr[u] = vn[u];
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

// ---- Tensor-core prefill tiles (mma.sync m16n8k16 bf16, fp32 accumulators; FlashAttention-2's
// register reuse of the score fragments as the A operand of P*V). sm_80 and later.

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

// d += a * b for one m16n8k16 tile.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// 16 bytes global -> shared without a register round trip; nothing is read (zeros land) when !valid.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Pipelined: K/V tiles land in shared memory by cp.async, two stages deep, so the next tile loads while
// the tensor cores work on this one. Before, every 32-key tile waited for its loads (registers, then shared
// memory) before any mma: the profile of Llama-3.1-8B's 8,192-token prefill steps on an H200 put attention
// at ~70 TFLOP/s, 15% of the step. Pipelined, a 4,096-token prompt's prefill went from 482 to 504 model
// TFLOP/s (H200, same call; the register path is deleted). The two stages share shared memory with the Q
// tile, which is read into registers first.
template <int D>
__global__ void __launch_bounds__(kWarps * kWarp) attention_mma_kernel(AttentionParams p) {
  pdl_trigger();
  pdl_wait();  // everything below may read what the previous kernel wrote
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int kRows = kAttentionMmaRows;
  constexpr int kKeyTile = 32;
  constexpr int kStride = D + 8;  // bf16 row stride: 16-byte padding keeps ldmatrix free of bank conflicts
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  constexpr int kQElems = kRows * kStride, kTileElems = kKeyTile * kStride;
  // [2 stages][K, V][keys, D] over the Q tile's space. bf16, shared.
  constexpr int kSmemElems = kQElems > 4 * kTileElems ? kQElems : 4 * kTileElems;
  __shared__ __align__(16) bf16 smem[kSmemElems];
  auto q_s = reinterpret_cast<bf16 (*)[kStride]>(smem);  // [rows, D]
  auto k_tile = [&](int stage) {                          // [keys, D]
    return reinterpret_cast<bf16 (*)[kStride]>(smem + 2 * stage * kTileElems);
  };
  auto v_tile = [&](int stage) {  // [keys, D]
    return reinterpret_cast<bf16 (*)[kStride]>(smem + (2 * stage + 1) * kTileElems);
  };

  const AttentionWorkItem w = p.mma_items[blockIdx.x];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int g = lane / 4, t4 = lane % 4;  // mma fragment coordinates
  const int group = p.num_heads / p.num_kv_heads;
  const int rows = w.num_tokens * w.num_heads;

  for (int c = threadIdx.x; c < kRows * kChunks; c += blockDim.x) {
    const int r = c / kChunks, part = c % kChunks;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < rows) {
      const int t = w.token_begin + r / w.num_heads;
      const int h = w.kv_head * group + w.head_begin + r % w.num_heads;
      v = *reinterpret_cast<const uint4*>(p.q + static_cast<size_t>(t) * p.q_row_stride + static_cast<size_t>(h) * D + part * 8);
    }
    *reinterpret_cast<uint4*>(&q_s[r][part * 8]) = v;
  }
  // This thread's two rows (g and g + 8 of the warp's 16) and their causal limits.
  const int row0 = warp * 16 + g, row1 = row0 + 8;
  const int limit0 = row0 < rows ? p.positions[w.token_begin + row0 / w.num_heads] + 1 : 0;
  const int limit1 = row1 < rows ? p.positions[w.token_begin + row1 / w.num_heads] + 1 : 0;
  __syncthreads();

  // Q fragments of the warp's 16 rows, all of D: D / 16 k-steps of 4 registers.
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    // x4: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
    const int r = warp * 16 + (lane % 16);
    const int col = ks * 16 + (lane / 16) * 8;
    ldmatrix_x4(qf[ks], &q_s[r][col]);
  }

  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  const float scale = p.scale * kLog2e;
  const int32_t* table = p.block_tables + static_cast<size_t>(w.seq) * p.max_blocks_per_seq;
  const size_t kv_size = static_cast<size_t>(p.num_kv_heads) * D;

  const size_t v_offset = static_cast<size_t>(p.block_size) * kv_size;  // a block's V rows follow its K rows
  // Where 16-byte chunk `part` of this KV head's K row for `key` lies in the paged pool.
  auto k_chunk = [&](int key, int part) {
    const int block = table[key / p.block_size], offset = key % p.block_size;
    return p.kv_pool + (static_cast<size_t>(block) * 2 * p.block_size + offset) * kv_size +
           static_cast<size_t>(w.kv_head) * D + part * 8;
  };
  // Starts copying the K/V rows of keys [key0, key0 + kKeyTile) into a stage (zeros past key_end).
  auto load_tile_async = [&](int key0, int stage) {
    auto k_s = k_tile(stage);
    auto v_s = v_tile(stage);
    for (int c = threadIdx.x; c < kKeyTile * kChunks; c += blockDim.x) {
      const int j = c / kChunks, part = c % kChunks;
      const int key = key0 + j;
      const bool valid = key < w.key_end;
      // Past key_end any mapped address will do: nothing is read.
      const bf16* k_src = valid ? k_chunk(key, part) : p.kv_pool;
      cp_async_16(&k_s[j][part * 8], k_src, valid);
      cp_async_16(&v_s[j][part * 8], valid ? k_src + v_offset : k_src, valid);
    }
    cp_async_commit();
  };
  int stage = 0;
  __syncthreads();  // every warp holds its Q fragments: the stages may overwrite the Q tile
  if (w.key_begin < w.key_end) load_tile_async(w.key_begin, 0);
  for (int key0 = w.key_begin; key0 < w.key_end; key0 += kKeyTile) {
    if (key0 + kKeyTile < w.key_end) {
      load_tile_async(key0 + kKeyTile, stage ^ 1);
    } else {
      cp_async_commit();  // an empty group, so that wait<1> below still means "this tile has landed"
    }
    cp_async_wait<1>();
    __syncthreads();
    auto k_s = k_tile(stage);
    auto v_s = v_tile(stage);

    // S = Q K^T for 16 rows x 32 keys: 4 n-tiles of 8 keys.
    float s[4][4];
#pragma unroll
    for (int n = 0; n < 4; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
#pragma unroll
      for (int np = 0; np < 2; ++np) {  // two n-tiles per ldmatrix.x4
        // matrices: (keys np*16+0-7, k 0-7), (keys +0-7, k 8-15), (keys +8-15, k 0-7), (keys +8-15, k 8-15)
        uint32_t b[4];
        const int key = np * 16 + (lane / 16) * 8 + (lane % 8);
        const int col = ks * 16 + ((lane / 8) % 2) * 8;
        ldmatrix_x4(b, &k_s[key][col]);
        mma_bf16(s[2 * np], qf[ks], b[0], b[1]);
        mma_bf16(s[2 * np + 1], qf[ks], b[2], b[3]);
      }
    }
    // Mask, scale to log2 units, online softmax per row (a row's 32 scores live in the 4 threads of a quad).
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < 4; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = key0 + n * 8 + 2 * t4 + e;
        const bool in_range = key < w.key_end;
        s[n][e] = in_range && key < limit0 ? s[n][e] * scale : -INFINITY;
        s[n][2 + e] = in_range && key < limit1 ? s[n][2 + e] * scale : -INFINITY;
        mx0 = fmaxf(mx0, s[n][e]);
        mx1 = fmaxf(mx1, s[n][2 + e]);
      }
    }
#pragma unroll
    for (int off = 1; off < 4; off *= 2) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    const float new0 = fmaxf(m0, mx0), new1 = fmaxf(m1, mx1);
    const float use0 = new0 == -INFINITY ? 0.0f : new0, use1 = new1 == -INFINITY ? 0.0f : new1;
    const float corr0 = exp2f(m0 - use0), corr1 = exp2f(m1 - use1);
    m0 = new0;
    m1 = new1;
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int n = 0; n < 4; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        s[n][e] = exp2f(s[n][e] - use0);
        s[n][2 + e] = exp2f(s[n][2 + e] - use1);
        sum0 += s[n][e];
        sum1 += s[n][2 + e];
      }
    }
    l0 = l0 * corr0 + sum0;  // per-thread partial sums; the quad is reduced at the end
    l1 = l1 * corr1 + sum1;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= corr0;
      o[n][1] *= corr0;
      o[n][2] *= corr1;
      o[n][3] *= corr1;
    }
    // O += P V: P's score fragments become A fragments (k = keys), two k-steps of 16 keys.
#pragma unroll
    for (int kk = 0; kk < 2; ++kk) {
      uint32_t a[4];
      a[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
      a[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
      a[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int np = 0; np < D / 16; ++np) {  // two n-tiles (16 dims) per ldmatrix.x4.trans
        // matrices: (keys kk*16+0-7, dims np*16+0-7), (keys +8-15, dims +0-7), (keys +0-7, dims +8-15),
        // (keys +8-15, dims +8-15)
        uint32_t b[4];
        const int key = kk * 16 + ((lane / 8) % 2) * 8 + (lane % 8);
        const int col = np * 16 + (lane / 16) * 8;
        ldmatrix_x4_trans(b, &v_s[key][col]);
        mma_bf16(o[2 * np], a, b[0], b[1]);
        mma_bf16(o[2 * np + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // every warp is done with this stage before the next iteration refills it
    stage ^= 1;
  }
#pragma unroll
  for (int off = 1; off < 4; off *= 2) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = half ? row1 : row0;
    if (r >= rows) continue;
    const int t = w.token_begin + r / w.num_heads;
    const int h = w.kv_head * group + w.head_begin + r % w.num_heads;
    bf16* out = p.out + static_cast<size_t>(t) * p.num_heads * D + static_cast<size_t>(h) * D;
    const float inv = half ? inv1 : inv0;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      const int dim = n * 8 + 2 * t4;
      *reinterpret_cast<__nv_bfloat162*>(out + dim) =
          __floats2bfloat162_rn(o[n][2 * half] * inv, o[n][2 * half + 1] * inv);
    }
  }
#endif
}

template <int D, int G>
__global__ void __launch_bounds__(kWarps * kWarp) decode_attention_kernel(AttentionParams p) {
  pdl_trigger();
  pdl_wait();  // everything below may read what the previous kernel wrote
  decode_attention_tile<D, G>(p);
}

// The kernel held to few enough registers that 4 CTAs of a G = 4 tile share an SM (168 registers allow 3),
// with half the keys a step so that the cap costs no spills (ptxas -v): more warps with loads in flight
// against fewer loads a warp. The launcher uses it for G = 4 only.
template <int D>
__global__ void __launch_bounds__(kWarps * kWarp, 4) decode_attention_g4_capped_kernel(AttentionParams p) {
  pdl_trigger();
  pdl_wait();  // everything below may read what the previous kernel wrote
  decode_attention_tile<D, 4, 2>(p);
}

template <int D, int G>
cudaError_t launch_decode(const AttentionParams& p, dim3 grid, dim3 block, cudaStream_t stream,
                          const LaunchOptions& options) {
  // The register-capped build where it measured faster: G = 4 (Llama-3.1-8B, H200: offline +1.0%, decode
  // steps at batch 64 1.7% shorter; the uncapped G = 4 launch is deleted); for G = 2 it was 4-6% slower
  // (Qwen3-0.6B at batch 256), so the other groups run uncapped.
  if constexpr (G == 4) {
    return launch_kernel(decode_attention_g4_capped_kernel<D>, grid, block, 0, stream, options, p);
  } else {
    return launch_kernel(decode_attention_kernel<D, G>, grid, block, 0, stream, options, p);
  }
}

// Returns whether the decode kernel ran (and merged its own splits when combine_counters is set).
template <int D>
cudaError_t launch_items(const AttentionParams& p, cudaStream_t stream, const LaunchOptions& options, bool* merged) {
  *merged = false;
  if (p.num_items <= 0) return cudaSuccess;
  const dim3 grid(p.num_items), block(kWarps * kWarp);
  const int group = p.num_heads / p.num_kv_heads;
  if (p.decode && (group == 1 || group == 2 || group == 4 || group == 8)) {
    *merged = p.combine_counters != nullptr && p.decode_splits > 0;
    switch (group) {
      case 1: return launch_decode<D, 1>(p, grid, block, stream, options);
      case 2: return launch_decode<D, 2>(p, grid, block, stream, options);
      case 4: return launch_decode<D, 4>(p, grid, block, stream, options);
      default: return launch_decode<D, 8>(p, grid, block, stream, options);
    }
  }
  return launch_kernel(attention_kernel<D>, grid, block, 0, stream, options, p);
}

template <int D>
cudaError_t launch_for_dim(const AttentionParams& p, cudaStream_t stream, const LaunchOptions& options) {
  bool merged = false;
  cudaError_t err = launch_items<D>(p, stream, options, &merged);
  if (err != cudaSuccess) return err;
  if (p.num_mma_items > 0) {
    if constexpr (D == 64 || D == 128) {
      err = launch_kernel(attention_mma_kernel<D>, dim3(p.num_mma_items), dim3(kWarps * kWarp), 0, stream, options, p);
      if (err != cudaSuccess) return err;
    } else {
      return cudaErrorInvalidValue;
    }
  }
  if (p.num_combines == 0 || merged) return cudaSuccess;
  return launch_kernel(attention_combine_kernel<D>, dim3(p.num_combines), dim3(kWarps * kWarp), 0, stream, options, p);
}

}  // namespace

AttentionPlan plan_attention(const int32_t* query_starts, const int32_t* context_lens, int num_seqs, int num_heads,
                             int num_kv_heads, int target_blocks, int max_partials, bool use_mma) {
  AttentionPlan plan;
  const int group = num_heads / num_kv_heads;
  const int heads_per_tile = std::min(group, kAttentionRows);
  const int tokens_per_tile = std::max(1, kAttentionRows / group);
  const bool mma_ok = use_mma && group <= kAttentionMmaRows;
  const int mma_tokens_per_tile = std::max(1, kAttentionMmaRows / group);
  constexpr int kMmaMinTokens = 16;
  // Tiles first, unsplit.
  for (int s = 0; s < num_seqs; ++s) {
    const int begin = query_starts[s], end = query_starts[s + 1];
    const int context = context_lens[s];
    const bool mma = mma_ok && end - begin >= kMmaMinTokens;
    const int step = mma ? mma_tokens_per_tile : tokens_per_tile;
    for (int t = begin; t < end; t += step) {
      const int tokens = std::min(step, end - t);
      const int key_end = context - end + t + tokens;  // last token of the tile sees keys [0, its position]
      for (int kvh = 0; kvh < num_kv_heads; ++kvh) {
        if (mma) {
          plan.mma_items.push_back({s, t, tokens, 0, group, kvh, 0, key_end, -1});
          continue;
        }
        for (int h = 0; h < group; h += heads_per_tile) {
          plan.items.push_back({s, t, tokens, h, std::min(heads_per_tile, group - h), kvh, 0, key_end, -1});
        }
      }
    }
  }
  plan.decode = plan.mma_items.empty();
  for (int s = 0; s < num_seqs && plan.decode; ++s) plan.decode = query_starts[s + 1] - query_starts[s] == 1;
  plan.decode = plan.decode && group <= kAttentionRows;
  const int num_tiles = static_cast<int>(plan.items.size());
  if (num_tiles == 0 || num_tiles + static_cast<int>(plan.mma_items.size()) >= target_blocks) return plan;

  // Few tiles (decode, short batches): split each tile's keys so that about target_blocks blocks run.
  constexpr int kMinSplitKeys = 256;
  const int want_splits = (target_blocks + num_tiles - 1) / num_tiles;
  std::vector<AttentionWorkItem> split_items;
  split_items.reserve(static_cast<size_t>(target_blocks) * 2);
  for (const AttentionWorkItem& tile : plan.items) {
    const int keys = tile.key_end;
    int chunk = (keys + want_splits - 1) / want_splits;
    chunk = std::max(kMinSplitKeys, (chunk + kKeys - 1) / kKeys * kKeys);
    const int splits = (keys + chunk - 1) / chunk;
    if (splits <= 1 || plan.num_partials + splits > max_partials) {
      split_items.push_back(tile);
      continue;
    }
    plan.combines.push_back({tile.token_begin, tile.num_tokens, tile.head_begin, tile.num_heads, tile.kv_head,
                             plan.num_partials, splits});
    for (int sp = 0; sp < splits; ++sp) {
      AttentionWorkItem item = tile;
      item.key_begin = sp * chunk;
      item.key_end = std::min(keys, (sp + 1) * chunk);
      item.partial = plan.num_partials++;
      split_items.push_back(item);
    }
  }
  plan.items = std::move(split_items);
  return plan;
}

AttentionPlan plan_decode_attention(const int32_t* context_lens, int num_seqs, int bucket, int num_heads,
                                    int num_kv_heads, int splits, int min_split_keys) {
  AttentionPlan plan;
  const int group = num_heads / num_kv_heads;
  const int heads_per_tile = std::min(group, kAttentionRows);
  min_split_keys = std::max(1, min_split_keys);
  for (int s = 0; s < bucket; ++s) {
    const bool real = s < num_seqs;
    const int keys = real ? context_lens[s] : 0;
    // This sequence's splits: enough that each has at least min_split_keys keys, at most `splits`. The
    // grid keeps `splits` items per tile; the ones past `used` are marked unused (partial -2) and the
    // combine reads only the used ones (none when used is 1: that item writes the output itself).
    const int used = std::clamp((keys + min_split_keys - 1) / min_split_keys, 1, splits);
    const int chunk = std::max(kKeys, ((keys + used - 1) / used + kKeys - 1) / kKeys * kKeys);
    for (int kvh = 0; kvh < num_kv_heads; ++kvh) {
      for (int h = 0; h < group; h += heads_per_tile) {
        const int heads = std::min(heads_per_tile, group - h);
        const int tokens = real ? 1 : 0;
        if (splits == 1) {
          plan.items.push_back({s, s, tokens, h, heads, kvh, 0, keys, -1});
          continue;
        }
        plan.combines.push_back({s, tokens, h, heads, kvh, plan.num_partials, used > 1 ? used : 0});
        for (int sp = 0; sp < splits; ++sp) {
          const int begin = std::min(keys, sp * chunk), end = std::min(keys, (sp + 1) * chunk);
          const int partial = used == 1 ? (sp == 0 ? -1 : -2) : (sp < used ? plan.num_partials + sp : -2);
          plan.items.push_back({s, s, tokens, h, heads, kvh, begin, end, partial});
        }
        plan.num_partials += splits;
      }
    }
  }
  return plan;
}

cudaError_t launch_attention(const AttentionParams& p, cudaStream_t stream, const LaunchOptions& options) {
  if (p.num_heads <= 0 || p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0 || p.block_size <= 0 ||
      p.num_items < 0 || p.num_combines < 0 || (p.num_combines > 0 && (!p.partial_out || !p.partial_ml))) {
    return cudaErrorInvalidValue;
  }
  switch (p.head_dim) {
    case 16: return launch_for_dim<16>(p, stream, options);
    case 32: return launch_for_dim<32>(p, stream, options);
    case 64: return launch_for_dim<64>(p, stream, options);
    case 128: return launch_for_dim<128>(p, stream, options);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace tandem::backend::cuda
