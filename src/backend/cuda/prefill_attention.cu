// The tensor-core prefill attention kernel (see attention.cuh): tiles of 64 query rows of chunks of >= 16
// tokens, head_dim 64 or 128, mma.sync on sm_80 and later.
#include "backend/cuda/attention_kernels.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/warp.cuh"

#include <cmath>
#include <cstdint>

namespace tandem::backend::cuda {
namespace {

using bf16 = __nv_bfloat16;

// Tensor-core prefill tiles (mma.sync m16n8k16 bf16, fp32 accumulators; FlashAttention-2's
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
//
// FP8 cache (kFp8): a stage is filled through registers instead (8 e4m3 bytes and the row's scale a chunk,
// dequantized to bf16 as value * scale), issued for the next tile before this one's mma as the cp.async
// path does; the tensor-core part is the same.
template <int D, bool kFp8>
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
    if constexpr (kFp8) {
      for (int c = threadIdx.x; c < kKeyTile * kChunks; c += blockDim.x) {
        const int j = c / kChunks, part = c % kChunks;
        const int key = key0 + j;
        uint4 kb = make_uint4(0, 0, 0, 0), vb = kb;
        if (key < w.key_end) {
          const Fp8KvRow row = fp8_kv_row<D>(p, table[key / p.block_size], key % p.block_size, w.kv_head);
          float kf[8], vf[8];
          fp8x8_to_float(*reinterpret_cast<const uint2*>(row.k + part * 8), kf);
          fp8x8_to_float(*reinterpret_cast<const uint2*>(row.v + part * 8), vf);
          const float k_scale = *row.k_scale, v_scale = *row.v_scale;
          kb = make_uint4(pack_bf16(kf[0] * k_scale, kf[1] * k_scale), pack_bf16(kf[2] * k_scale, kf[3] * k_scale),
                          pack_bf16(kf[4] * k_scale, kf[5] * k_scale), pack_bf16(kf[6] * k_scale, kf[7] * k_scale));
          vb = make_uint4(pack_bf16(vf[0] * v_scale, vf[1] * v_scale), pack_bf16(vf[2] * v_scale, vf[3] * v_scale),
                          pack_bf16(vf[4] * v_scale, vf[5] * v_scale), pack_bf16(vf[6] * v_scale, vf[7] * v_scale));
        }
        *reinterpret_cast<uint4*>(&k_s[j][part * 8]) = kb;
        *reinterpret_cast<uint4*>(&v_s[j][part * 8]) = vb;
      }
    } else {
      for (int c = threadIdx.x; c < kKeyTile * kChunks; c += blockDim.x) {
        const int j = c / kChunks, part = c % kChunks;
        const int key = key0 + j;
        const bool valid = key < w.key_end;
        // Past key_end any mapped address will do: nothing is read.
        const bf16* k_src = valid ? k_chunk(key, part) : p.kv_pool;
        cp_async_16(&k_s[j][part * 8], k_src, valid);
        cp_async_16(&v_s[j][part * 8], valid ? k_src + v_offset : k_src, valid);
      }
    }
    cp_async_commit();  // FP8: an empty group, so the waits below count groups alike on both paths
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


}  // namespace

cudaError_t launch_prefill_attention(const AttentionParams& p, cudaStream_t stream, const LaunchOptions& options) {
  const dim3 grid(p.num_mma_items), block(kWarps * kWarp);
  switch (p.head_dim) {
    case 64:
      return p.kv_pool_fp8 ? launch_kernel(attention_mma_kernel<64, true>, grid, block, 0, stream, options, p)
                           : launch_kernel(attention_mma_kernel<64, false>, grid, block, 0, stream, options, p);
    case 128:
      return p.kv_pool_fp8 ? launch_kernel(attention_mma_kernel<128, true>, grid, block, 0, stream, options, p)
                           : launch_kernel(attention_mma_kernel<128, false>, grid, block, 0, stream, options, p);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace tandem::backend::cuda
