// Paged attention (see attention.cuh): the SIMT kernel that runs any work item, the combine kernel that
// merges split items, the planners, and launch_attention, which sends decode tiles to the decode kernel
// (decode_attention.cu) and tensor-core tiles to the prefill kernel (prefill_attention.cu).
#include "backend/cuda/attention.cuh"

#include <algorithm>
#include <cmath>

#include "backend/cuda/attention_kernels.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/warp.cuh"

namespace tandem::backend::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kRowsPerWarp = kAttentionRows / kWarps;
constexpr int kKeys = 32;  // keys per shared-memory tile: one per lane when scoring

// Scores are kept in log2 units (q pre-scaled by scale * log2(e)) so exp2f does the exponentials.
// kFp8: the keys come from the FP8 cache, dequantized (value * scale) as they are staged in shared memory.
template <int D, bool kFp8>
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
      if (key < w.key_end && kFp8) {
        const Fp8KvRow row = fp8_kv_row<D>(p, table[key / p.block_size], key % p.block_size, w.kv_head);
        fp8x8_to_float(*reinterpret_cast<const uint2*>(row.k + part * 8), kf);
        fp8x8_to_float(*reinterpret_cast<const uint2*>(row.v + part * 8), vf);
        const float k_scale = *row.k_scale, v_scale = *row.v_scale;
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          kf[e] *= k_scale;
          vf[e] *= v_scale;
        }
      } else if (key < w.key_end) {
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

template <int D>
cudaError_t launch_for_dim(const AttentionParams& p, cudaStream_t stream, const LaunchOptions& options) {
  bool merged = false;  // the decode kernel merged its own splits
  if (p.num_items > 0) {
    cudaError_t err;
    if (p.decode && decode_attention_supports(p.num_heads / p.num_kv_heads)) {
      merged = p.combine_counters != nullptr && p.decode_splits > 0;
      err = launch_decode_attention(p, stream, options);
    } else {
      err = p.kv_pool_fp8
                ? launch_kernel(attention_kernel<D, true>, dim3(p.num_items), dim3(kWarps * kWarp), 0, stream, options, p)
                : launch_kernel(attention_kernel<D, false>, dim3(p.num_items), dim3(kWarps * kWarp), 0, stream, options, p);
    }
    if (err != cudaSuccess) return err;
  }
  if (p.num_mma_items > 0) {
    const cudaError_t err = launch_prefill_attention(p, stream, options);
    if (err != cudaSuccess) return err;
  }
  if (p.num_combines == 0 || merged) return cudaSuccess;
  return launch_kernel(attention_combine_kernel<D>, dim3(p.num_combines), dim3(kWarps * kWarp), 0, stream,
                       options, p);
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
