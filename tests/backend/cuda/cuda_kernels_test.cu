// Each CUDA kernel against a plain CPU reference (double precision) on random inputs, including odd
// sizes: 1 token, block boundaries, head_dim 16/64/128, 1 and 8 KV heads, GQA groups wider than a tile,
// and the split-KV (flash-decoding) path. Skipped where no GPU is visible.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/kernels.cuh"

namespace tandem::backend::cuda {
namespace {

#define GPU_OR_SKIP()                                                          \
  do {                                                                         \
    int count_ = 0;                                                            \
    if (cudaGetDeviceCount(&count_) != cudaSuccess || count_ == 0) {           \
      cudaGetLastError();                                                      \
      GTEST_SKIP() << "no CUDA device";                                        \
    }                                                                          \
  } while (0)

#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call


// Host mirror of a device buffer; poisoned device memory unless uploaded.
template <typename T>
struct DeviceVec {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceVec(size_t count) : n(count) {
    EXPECT_EQ(cudaMalloc(&ptr, std::max<size_t>(1, n) * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemset(ptr, 0xff, std::max<size_t>(1, n) * sizeof(T)), cudaSuccess);  // NaN-poisoned for floats
  }
  explicit DeviceVec(const std::vector<T>& host) : DeviceVec(host.size()) { upload(host); }
  ~DeviceVec() { cudaFree(ptr); }
  void upload(const std::vector<T>& host) { EXPECT_EQ(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess); }
  std::vector<T> download() const {
    std::vector<T> host(n);
    EXPECT_EQ(cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }
};

std::vector<bf16> random_bf16(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<bf16> out(n);
  for (auto& v : out) v = __float2bfloat16(dist(rng));
  return out;
}

std::vector<float> to_float(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
  return out;
}

double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

class AddRmsNorm : public ::testing::TestWithParam<int> {};

TEST_P(AddRmsNorm, MatchesCpuWithAndWithoutResidualAddAndGather) {
  GPU_OR_SKIP();
  const int hidden = GetParam(), rows = 5;
  std::mt19937 rng(hidden);
  std::vector<float> residual(static_cast<size_t>(rows) * hidden);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  for (auto& v : residual) v = dist(rng);
  const auto delta = random_bf16(residual.size(), rng), weight = random_bf16(hidden, rng);
  DeviceVec<float> d_res(residual);
  DeviceVec<bf16> d_delta(delta), d_w(weight), d_out(static_cast<size_t>(rows) * hidden);
  CUDA_OK(launch_add_rms_norm(d_res.ptr, d_delta.ptr, d_w.ptr, d_out.ptr, nullptr, rows, hidden, 1e-6f, true, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<double> want_out(residual.size()), want_res(residual.size());
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < hidden; ++i) {
      const size_t k = static_cast<size_t>(r) * hidden + i;
      want_res[k] = residual[k] + __bfloat162float(delta[k]);
      ss += want_res[k] * want_res[k];
    }
    const double scale = 1.0 / std::sqrt(ss / hidden + 1e-6);
    for (int i = 0; i < hidden; ++i) {
      const size_t k = static_cast<size_t>(r) * hidden + i;
      want_out[k] = __bfloat162float(weight[i]) * want_res[k] * scale;
    }
  }
  EXPECT_LT(rel_error(d_res.download(), want_res), 1e-6);
  EXPECT_LT(rel_error(to_float(d_out.download()), want_out), 8e-3);

  // Gather mode (final norm): rows 3 and 3 again and 0, residual untouched.
  const std::vector<int32_t> pick = {3, 3, 0};
  DeviceVec<int32_t> d_rows(pick);
  DeviceVec<bf16> d_out2(pick.size() * hidden);
  const auto before = d_res.download();
  CUDA_OK(launch_add_rms_norm(d_res.ptr, d_delta.ptr, d_w.ptr, d_out2.ptr, d_rows.ptr, 3, hidden, 1e-6f, false, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(d_res.download(), before);
  std::vector<double> want_gather;
  for (int r : pick) {
    double ss = 0;
    std::vector<double> x(hidden);
    for (int i = 0; i < hidden; ++i) {
      x[i] = before[static_cast<size_t>(r) * hidden + i] + __bfloat162float(delta[static_cast<size_t>(r) * hidden + i]);
      ss += x[i] * x[i];
    }
    for (int i = 0; i < hidden; ++i) want_gather.push_back(__bfloat162float(weight[i]) * x[i] / std::sqrt(ss / hidden + 1e-6));
  }
  EXPECT_LT(rel_error(to_float(d_out2.download()), want_gather), 8e-3);
}

INSTANTIATE_TEST_SUITE_P(Sizes, AddRmsNorm, ::testing::Values(1, 64, 100, 1024, 4096));

struct QkvCase {
  int num_tokens, num_heads, num_kv_heads, head_dim;
  bool qk_norm, bias;
};

class QkvRope : public ::testing::TestWithParam<QkvCase> {};

TEST_P(QkvRope, NormRopeAndKvWriteMatchCpu) {
  GPU_OR_SKIP();
  const QkvCase c = GetParam();
  const int d = c.head_dim, half = d / 2, block_size = 16, num_blocks = 8;
  const int total_heads = c.num_heads + 2 * c.num_kv_heads;
  const size_t stride = static_cast<size_t>(total_heads) * d;
  std::mt19937 rng(c.num_tokens * 131 + d);
  const auto qkv = random_bf16(c.num_tokens * stride, rng);
  const auto bias = random_bf16(stride, rng, 0.1f);
  const auto q_norm = random_bf16(d, rng), k_norm = random_bf16(d, rng);
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) inv_freq[i] = 1.0f / std::pow(10000.0f, 2.0f * i / d);
  std::vector<int32_t> positions(c.num_tokens), slots(c.num_tokens);
  std::vector<int32_t> slot_order(num_blocks * block_size);
  std::iota(slot_order.begin(), slot_order.end(), 0);
  std::shuffle(slot_order.begin(), slot_order.end(), rng);
  for (int t = 0; t < c.num_tokens; ++t) {
    positions[t] = static_cast<int32_t>(rng() % 5000);
    slots[t] = slot_order[t];
  }
  const size_t kv_size = static_cast<size_t>(c.num_kv_heads) * d;
  const size_t pool_elems = static_cast<size_t>(num_blocks) * 2 * block_size * kv_size;
  DeviceVec<bf16> d_qkv(qkv), d_bias(bias), d_qn(q_norm), d_kn(k_norm), d_pool(pool_elems);
  DeviceVec<float> d_inv(inv_freq);
  DeviceVec<int32_t> d_pos(positions), d_slots(slots);
  QkvParams p;
  p.qkv = d_qkv.ptr;
  p.bias = c.bias ? d_bias.ptr : nullptr;
  p.q_norm = c.qk_norm ? d_qn.ptr : nullptr;
  p.k_norm = c.qk_norm ? d_kn.ptr : nullptr;
  p.inv_freq = d_inv.ptr;
  p.positions = d_pos.ptr;
  p.slots = d_slots.ptr;
  p.kv_pool = d_pool.ptr;
  p.num_tokens = c.num_tokens;
  p.num_heads = c.num_heads;
  p.num_kv_heads = c.num_kv_heads;
  p.head_dim = d;
  p.block_size = block_size;
  CUDA_OK(launch_qkv_rope_kv_write(p, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const auto got_qkv = to_float(d_qkv.download());
  const auto got_pool = to_float(d_pool.download());

  std::vector<float> got_q, got_k, got_v;
  std::vector<double> want_q, want_k, want_v;
  for (int t = 0; t < c.num_tokens; ++t) {
    const int block = slots[t] / block_size, off = slots[t] % block_size;
    for (int h = 0; h < total_heads; ++h) {
      std::vector<double> x(d);
      for (int i = 0; i < d; ++i) {
        x[i] = __bfloat162float(qkv[t * stride + h * d + i]) + (c.bias ? __bfloat162float(bias[h * d + i]) : 0.0);
      }
      const bool is_q = h < c.num_heads, is_k = !is_q && h < c.num_heads + c.num_kv_heads;
      if (is_q || is_k) {
        if (c.qk_norm) {
          double ss = 0;
          for (double v : x) ss += v * v;
          const double s = 1.0 / std::sqrt(ss / d + 1e-6);
          for (int i = 0; i < d; ++i) x[i] = __bfloat162float((is_q ? q_norm : k_norm)[i]) * x[i] * s;
        }
        std::vector<double> y(d);
        for (int i = 0; i < half; ++i) {
          const double angle = static_cast<double>(static_cast<float>(positions[t]) * inv_freq[i]);
          y[i] = x[i] * std::cos(angle) - x[i + half] * std::sin(angle);
          y[i + half] = x[i + half] * std::cos(angle) + x[i] * std::sin(angle);
        }
        x = y;
      }
      for (int i = 0; i < d; ++i) {
        if (is_q) {
          want_q.push_back(x[i]);
          got_q.push_back(got_qkv[t * stride + h * d + i]);
        } else {
          const int kvh = is_k ? h - c.num_heads : h - c.num_heads - c.num_kv_heads;
          const size_t at = ((static_cast<size_t>(block) * 2 + (is_k ? 0 : 1)) * block_size + off) * kv_size + kvh * d + i;
          (is_k ? want_k : want_v).push_back(x[i]);
          (is_k ? got_k : got_v).push_back(got_pool[at]);
        }
      }
    }
  }
  EXPECT_LT(rel_error(got_q, want_q), 8e-3);
  EXPECT_LT(rel_error(got_k, want_k), 8e-3);
  EXPECT_LT(rel_error(got_v, want_v), 8e-3);
}

INSTANTIATE_TEST_SUITE_P(Shapes, QkvRope,
                         ::testing::Values(QkvCase{1, 16, 8, 128, true, false}, QkvCase{17, 4, 1, 64, false, true},
                                           QkvCase{33, 32, 8, 128, false, false}, QkvCase{5, 8, 1, 16, true, true},
                                           QkvCase{3, 4, 2, 32, true, false}));

TEST(SiluAndMul, MatchesCpu) {
  GPU_OR_SKIP();
  const int tokens = 3, inter = 1000;
  std::mt19937 rng(5);
  const auto gu = random_bf16(static_cast<size_t>(tokens) * 2 * inter, rng, 3.0f);
  DeviceVec<bf16> d_gu(gu), d_out(static_cast<size_t>(tokens) * inter);
  CUDA_OK(launch_silu_and_mul(d_gu.ptr, d_out.ptr, tokens, inter, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<double> want;
  for (int t = 0; t < tokens; ++t) {
    for (int i = 0; i < inter; ++i) {
      const double g = __bfloat162float(gu[t * 2 * inter + i]), u = __bfloat162float(gu[t * 2 * inter + inter + i]);
      want.push_back(g / (1 + std::exp(-g)) * u);
    }
  }
  EXPECT_LT(rel_error(to_float(d_out.download()), want), 8e-3);
}

TEST(Embedding, CopiesRows) {
  GPU_OR_SKIP();
  std::mt19937 rng(6);
  const int vocab = 50, hidden = 72;
  const auto table = random_bf16(static_cast<size_t>(vocab) * hidden, rng);
  const std::vector<int32_t> ids = {49, 0, 7, 7};
  DeviceVec<bf16> d_table(table);
  DeviceVec<int32_t> d_ids(ids);
  DeviceVec<float> d_out(ids.size() * hidden);
  CUDA_OK(launch_embedding(d_ids.ptr, d_table.ptr, d_out.ptr, 4, hidden, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const auto got = d_out.download();
  for (size_t t = 0; t < ids.size(); ++t) {
    for (int i = 0; i < hidden; ++i) ASSERT_EQ(got[t * hidden + i], __bfloat162float(table[ids[t] * hidden + i]));
  }
}

// Attention: sequences given as (new tokens, context length).
struct AttentionCase {
  int num_heads, num_kv_heads, head_dim;
  std::vector<std::pair<int, int>> seqs;
  int target_blocks;  // small: no split; large: split keys across blocks
};

class Attention : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(Attention, MatchesCpuOverPagedCache) {
  GPU_OR_SKIP();
  const AttentionCase c = GetParam();
  const int d = c.head_dim, block_size = 16, group = c.num_heads / c.num_kv_heads;
  std::mt19937 rng(static_cast<unsigned>(d * 7 + c.num_heads + c.seqs.size()));
  int max_blocks = 0, total_blocks = 0;
  for (auto [q, ctx] : c.seqs) {
    max_blocks = std::max(max_blocks, (ctx + block_size - 1) / block_size);
    total_blocks += (ctx + block_size - 1) / block_size;
  }
  const int num_blocks = total_blocks + 3;
  std::vector<int32_t> free_blocks(num_blocks);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng);
  const int num_seqs = static_cast<int>(c.seqs.size());
  std::vector<int32_t> tables(static_cast<size_t>(num_seqs) * max_blocks, -1), starts{0}, context, positions;
  for (int s = 0; s < num_seqs; ++s) {
    const auto [q, ctx] = c.seqs[s];
    for (int b = 0; b < (ctx + block_size - 1) / block_size; ++b) {
      tables[static_cast<size_t>(s) * max_blocks + b] = free_blocks.back();
      free_blocks.pop_back();
    }
    for (int i = 0; i < q; ++i) positions.push_back(ctx - q + i);
    starts.push_back(starts.back() + q);
    context.push_back(ctx);
  }
  const int num_tokens = starts.back();
  const size_t kv_size = static_cast<size_t>(c.num_kv_heads) * d;
  const auto pool = random_bf16(static_cast<size_t>(num_blocks) * 2 * block_size * kv_size, rng);
  const int q_stride = (c.num_heads + 2 * c.num_kv_heads) * d;  // as in the fused qkv buffer
  const auto q = random_bf16(static_cast<size_t>(num_tokens) * q_stride, rng, 2.0f);

  for (bool use_mma : {false, true}) {
  if (use_mma && d != 64 && d != 128) continue;
  const AttentionPlan plan = plan_attention(starts.data(), context.data(), num_seqs, c.num_heads, c.num_kv_heads,
                                            c.target_blocks, 4096, use_mma);
  if (c.target_blocks > 1000) EXPECT_FALSE(plan.combines.empty()) << "the split path was not exercised";
  DeviceVec<bf16> d_pool(pool), d_q(q), d_out(static_cast<size_t>(num_tokens) * c.num_heads * d);
  DeviceVec<int32_t> d_tables(tables), d_pos(positions);
  DeviceVec<AttentionWorkItem> d_items(plan.items);
  DeviceVec<AttentionCombineItem> d_combines(plan.combines);
  DeviceVec<AttentionWorkItem> d_mma(plan.mma_items);
  DeviceVec<float> d_po(static_cast<size_t>(std::max(1, plan.num_partials)) * kAttentionRows * d);
  DeviceVec<float> d_pml(static_cast<size_t>(std::max(1, plan.num_partials)) * kAttentionRows * 2);
  AttentionParams p;
  p.q = d_q.ptr;
  p.q_row_stride = q_stride;
  p.kv_pool = d_pool.ptr;
  p.block_tables = d_tables.ptr;
  p.max_blocks_per_seq = max_blocks;
  p.positions = d_pos.ptr;
  p.out = d_out.ptr;
  p.items = d_items.ptr;
  p.combines = d_combines.ptr;
  p.mma_items = d_mma.ptr;
  p.num_mma_items = static_cast<int>(plan.mma_items.size());
  p.partial_out = d_po.ptr;
  p.partial_ml = d_pml.ptr;
  p.num_items = static_cast<int>(plan.items.size());
  p.num_combines = static_cast<int>(plan.combines.size());
  p.num_heads = c.num_heads;
  p.num_kv_heads = c.num_kv_heads;
  p.head_dim = d;
  p.block_size = block_size;
  p.scale = 1.0f / std::sqrt(static_cast<float>(d));
  CUDA_OK(launch_attention(p, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const auto got = to_float(d_out.download());

  std::vector<double> want(got.size());
  for (int s = 0; s < num_seqs; ++s) {
    for (int t = starts[s]; t < starts[s + 1]; ++t) {
      const int keys = positions[t] + 1;
      for (int h = 0; h < c.num_heads; ++h) {
        const int kvh = h / group;
        std::vector<double> score(keys);
        double mx = -INFINITY;
        for (int j = 0; j < keys; ++j) {
          const int block = tables[static_cast<size_t>(s) * max_blocks + j / block_size], off = j % block_size;
          const size_t at = ((static_cast<size_t>(block) * 2) * block_size + off) * kv_size + kvh * d;
          double dot = 0;
          for (int i = 0; i < d; ++i) dot += __bfloat162float(q[t * q_stride + h * d + i]) * __bfloat162float(pool[at + i]);
          score[j] = dot / std::sqrt(static_cast<double>(d));
          mx = std::max(mx, score[j]);
        }
        double denom = 0;
        for (auto& v : score) denom += (v = std::exp(v - mx));
        for (int i = 0; i < d; ++i) {
          double acc = 0;
          for (int j = 0; j < keys; ++j) {
            const int block = tables[static_cast<size_t>(s) * max_blocks + j / block_size], off = j % block_size;
            const size_t at = ((static_cast<size_t>(block) * 2 + 1) * block_size + off) * kv_size + kvh * d;
            acc += score[j] * __bfloat162float(pool[at + i]);
          }
          want[(static_cast<size_t>(t) * c.num_heads + h) * d + i] = acc / denom;
        }
      }
    }
  }
  EXPECT_LT(rel_error(got, want), 8e-3) << (use_mma ? "tensor-core prefill tiles" : "SIMT tiles only") << ", "
                                       << plan.mma_items.size() << " mma tiles";
  }
}

const std::vector<std::pair<int, int>> kMixed = {{1, 1}, {1, 17}, {5, 5}, {16, 16}, {17, 40}, {3, 600}, {1, 33}};
const std::vector<std::pair<int, int>> kLongDecode = {{1, 3000}, {1, 1}, {2, 1025}};
const std::vector<std::pair<int, int>> kLongPrefill = {{200, 700}, {130, 130}, {16, 16}, {64, 97}, {1, 5}};

INSTANTIATE_TEST_SUITE_P(
    Shapes, Attention,
    ::testing::Values(AttentionCase{16, 8, 128, kMixed, 1}, AttentionCase{8, 1, 64, kMixed, 1},
                      AttentionCase{8, 8, 64, kMixed, 1}, AttentionCase{32, 1, 128, kMixed, 1},
                      AttentionCase{4, 2, 16, kMixed, 1}, AttentionCase{4, 1, 32, {{40, 40}, {1, 1}}, 1},
                      AttentionCase{16, 8, 128, kLongDecode, 100000}, AttentionCase{32, 8, 128, kLongDecode, 100000},
                      AttentionCase{8, 1, 64, kMixed, 100000}, AttentionCase{16, 8, 128, kLongPrefill, 1},
                      AttentionCase{32, 8, 128, kLongPrefill, 1}, AttentionCase{64, 1, 64, kLongPrefill, 1},
                      AttentionCase{128, 1, 128, {{20, 20}}, 1}));

}  // namespace
}  // namespace tandem::backend::cuda
