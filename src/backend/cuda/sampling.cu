// The sampling kernel (sampling.cuh): one 1024-thread CTA per row. Truncation works like the host
// sampler's: a histogram of the kept tokens by distance below the maximum finds the bucket that top_k or
// top_p cuts; inside that bucket, the cut (and a draw that lands there) is found by radix selection on
// a 64-bit key that orders tokens as the host's sort does (logit descending, then id ascending), eight
// 8-bit digits from the top, each digit one pass over the row with a 256-bin histogram of counts or
// masses. No sort and no scratch memory: a pass re-reads the row, which stays in L2.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <cfloat>

#include "backend/cuda/launch.cuh"
#include "backend/cuda/sampling.cuh"
#include "backend/cuda/sampling_keys.cuh"

namespace tandem::backend::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kBucketsPerUnit = 16;  // as engine::Sampler
constexpr int kNumBuckets = 32 * kBucketsPerUnit;
constexpr int kNoBucket = -1;

using BlockReduceF = cub::BlockReduce<float, kThreads>;
using BlockReduceD = cub::BlockReduce<double, kThreads>;
using BlockReduceI = cub::BlockReduce<int, kThreads>;
using BlockReduceU64 = cub::BlockReduce<unsigned long long, kThreads>;
using BlockScanD = cub::BlockScan<double, kThreads>;

struct Shared {
  union {
    BlockReduceF::TempStorage reduce_f;
    BlockReduceD::TempStorage reduce_d;
    BlockReduceI::TempStorage reduce_i;
    BlockReduceU64::TempStorage reduce_u64;
    BlockScanD::TempStorage scan_d;
  } cub;
  int bucket_count[kNumBuckets];
  double bucket_mass[kNumBuckets];
  double digit_weight[256];
  // Broadcast slots.
  float max_logit;
  double total;
  int chosen;
  int digit;
  double remaining;
  int num_top;
  uint64_t top_keys[kMaxTopLogprobs];
};

struct MaxOf {
  template <typename T>
  __device__ T operator()(const T& a, const T& b) const { return b > a ? b : a; }
};
struct MinOf {
  template <typename T>
  __device__ T operator()(const T& a, const T& b) const { return b < a ? b : a; }
};



// p / p_max for x <= max: zero below e^-87, like the host's exp_nonpositive; NaN counts as zero.
__device__ __forceinline__ float relative_prob(float x, float max_logit) {
  const float d = x - max_logit;
  return d >= -87.0f ? expf(d) : 0.0f;
}

__device__ __forceinline__ int bucket_of(float x, float max_logit) {
  const float scaled = (max_logit - x) * kBucketsPerUnit;
  return static_cast<int>(scaled < kNumBuckets - 1 ? scaled : static_cast<float>(kNumBuckets - 1));
}

// Among the tokens with weight(i) > 0, in the host's order (key descending), finds the first token at
// which the running weight reaches `target` (>= when inclusive, > otherwise) and returns its key; 0
// when the members' total weight never gets there. Every thread gets the result.
template <typename Weight>
__device__ uint64_t select_by_running_weight(Shared& sh, const float* row, int vocab, Weight weight, double target,
                                             bool inclusive) {
  uint64_t prefix = 0, mask = 0;
  if (threadIdx.x == 0) sh.remaining = target;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += kThreads) sh.digit_weight[d] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const float x = row[i];
      const uint64_t key = order_key(x, i);
      if ((key & mask) != prefix) continue;
      const double w = weight(i, x);
      if (w > 0) atomicAdd(&sh.digit_weight[(key >> shift) & 0xff], w);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double cum = 0;
      int digit = -1;
      for (int d = 255; d >= 0; --d) {
        const double h = sh.digit_weight[d];
        if (h <= 0) continue;
        if (inclusive ? cum + h >= sh.remaining : cum + h > sh.remaining) {
          digit = d;
          break;
        }
        cum += h;
      }
      sh.digit = digit;
      if (digit >= 0) sh.remaining -= cum;
    }
    __syncthreads();
    const int digit = sh.digit;
    if (digit < 0) return 0;
    prefix |= static_cast<uint64_t>(digit) << shift;
    mask |= 0xffull << shift;
  }
  return prefix;
}

// The first token in id order among those with weight(i) > 0 at which the running weight exceeds
// `target`, or -1 when rounding leaves the target just past the last of them. Threads own contiguous
// id ranges so that a block scan of their sums gives each its starting weight.
template <typename Weight>
__device__ int first_in_id_order_past(Shared& sh, const float* row, int vocab, Weight weight, double target) {
  const int per = (vocab + kThreads - 1) / kThreads;
  const int begin = min(vocab, static_cast<int>(threadIdx.x) * per), end = min(vocab, begin + per);
  float own = 0;  // at most `per` terms of at most 1 each: float is exact enough, the scan adds in double
  for (int i = begin; i < end; ++i) own += static_cast<float>(weight(i, row[i]));
  double before;
  if (threadIdx.x == 0) sh.chosen = vocab;
  BlockScanD(sh.cub.scan_d).ExclusiveSum(static_cast<double>(own), before);
  __syncthreads();
  if (own > 0 && before <= target && target < before + own) {
    double cum = before;
    int pick = -1, last = -1;
    for (int i = begin; i < end; ++i) {
      const double w = weight(i, row[i]);
      if (w <= 0) continue;
      cum += w;
      last = i;
      if (cum > target) {
        pick = i;
        break;
      }
    }
    atomicMin(&sh.chosen, pick >= 0 ? pick : last);
  }
  __syncthreads();
  const int chosen = sh.chosen;
  __syncthreads();
  return chosen < vocab ? chosen : -1;
}

// The row's token (valid in thread 0; every thread must call it). `row` is edited and scaled, m its max.
__device__ int draw_token(Shared& sh, const float* row, int vocab, const RowSampling& p, float m) {

  if (p.temperature <= 0.0f) {
    int first = vocab;
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      if (row[i] == m) {
        first = i;
        break;
      }
    }
    const int argmax = BlockReduceI(sh.cub.reduce_i).Reduce(first, MinOf());
    return argmax < vocab ? argmax : 0;
  }

  const bool top_k_on = p.top_k > 0 && p.top_k < vocab;
  if (p.min_p <= 0.0f && !top_k_on && p.top_p >= 1.0f) {
    // Untruncated: every token, in id order.
    auto prob = [m](int, float x) { return static_cast<double>(relative_prob(x, m)); };
    float own = 0;
    for (int i = threadIdx.x; i < vocab; i += kThreads) own += relative_prob(row[i], m);
    const double total = BlockReduceD(sh.cub.reduce_d).Sum(static_cast<double>(own));
    if (threadIdx.x == 0) sh.total = total;
    __syncthreads();
    int pick = first_in_id_order_past(sh, row, vocab, prob, p.uniform * sh.total);
    if (pick < 0) {  // rounding: the last token with any mass, as the host
      int last = -1;
      for (int i = threadIdx.x; i < vocab; i += kThreads) {
        if (relative_prob(row[i], m) > 0.0f) last = i;
      }
      pick = BlockReduceI(sh.cub.reduce_i).Reduce(last, MaxOf());
    }
    return pick >= 0 ? pick : 0;
  }

  // Histogram of the tokens that survive min_p, by distance below the maximum.
  const float min_rel = p.min_p > 0.0f ? p.min_p : 0.0f;
  auto bucket_if_kept = [m, min_rel](float x) {
    const float pr = relative_prob(x, m);
    return pr > 0.0f && pr >= min_rel ? bucket_of(x, m) : kNoBucket;
  };
  for (int b = threadIdx.x; b < kNumBuckets; b += kThreads) {
    sh.bucket_count[b] = 0;
    sh.bucket_mass[b] = 0;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float x = row[i];
    const int b = bucket_if_kept(x);
    if (b == kNoBucket) continue;
    atomicAdd(&sh.bucket_count[b], 1);
    atomicAdd(&sh.bucket_mass[b], static_cast<double>(relative_prob(x, m)));
  }
  __syncthreads();

  // Candidates = the kept tokens of buckets [0, full_end), plus the tokens of bucket `cut` whose key is
  // at least key_floor (the cut bucket's share, when top_k or top_p cuts inside it).
  int full_end = kNumBuckets, cut = kNoBucket;
  uint64_t key_floor = 0;
  // The cut bucket's candidates weighted by count or by mass (the lambdas read cut and key_floor when
  // called, so they follow the cut as top_k and top_p move it).
  auto cut_weight = [&](bool mass) {
    return [&, mass](int i, float x) -> double {
      if (bucket_if_kept(x) != cut || order_key(x, i) < key_floor) return 0.0;
      return mass ? static_cast<double>(relative_prob(x, m)) : 1.0;
    };
  };

  if (top_k_on) {
    int kept = 0;
    for (int b = 0; b < kNumBuckets; ++b) kept += sh.bucket_count[b];
    if (kept > p.top_k) {
      int cum = 0, b = 0;
      while (cum + sh.bucket_count[b] < p.top_k) cum += sh.bucket_count[b++];
      full_end = b;
      cut = b;
      // The (top_k - cum)-th best token of bucket b is the last one kept.
      key_floor = select_by_running_weight(sh, row, vocab, cut_weight(false), static_cast<double>(p.top_k - cum), true);
    }
  }
  if (p.top_p < 1.0f) {
    double kept_mass = 0;
    for (int b = 0; b < full_end; ++b) kept_mass += sh.bucket_mass[b];
    if (cut != kNoBucket) {
      auto mass = cut_weight(true);
      double own = 0;
      for (int i = threadIdx.x; i < vocab; i += kThreads) own += mass(i, row[i]);
      const double cut_mass = BlockReduceD(sh.cub.reduce_d).Sum(own);
      if (threadIdx.x == 0) sh.total = cut_mass;
      __syncthreads();
      kept_mass += sh.total;
      __syncthreads();
    }
    const double limit = static_cast<double>(p.top_p) * kept_mass;
    double above = 0;
    int b = 0;
    while (b < full_end && above + sh.bucket_mass[b] < limit) above += sh.bucket_mass[b++];
    if (b < full_end) {  // the boundary falls inside bucket b, which becomes the cut bucket, whole
      full_end = b;
      cut = b;
      key_floor = 0;
    }
    if (cut != kNoBucket) {
      // Keep the cut bucket's tokens, best first, while the mass above them is below the limit: up to
      // and including the first at which the running mass reaches it.
      const uint64_t last_kept = select_by_running_weight(sh, row, vocab, cut_weight(true), limit - above, true);
      if (last_kept != 0) key_floor = last_kept;
    }
  }

  // The draw: whole buckets in id order, then the cut bucket's share best first.
  auto full_prob = [&](int, float x) {
    const int b = bucket_if_kept(x);
    return b != kNoBucket && b < full_end ? static_cast<double>(relative_prob(x, m)) : 0.0;
  };
  double own_full = 0, own_cut = 0;
  auto cut_mass = cut_weight(true);
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float x = row[i];
    own_full += full_prob(i, x);
    if (cut != kNoBucket) own_cut += cut_mass(i, x);
  }
  const double full_mass = BlockReduceD(sh.cub.reduce_d).Sum(own_full);
  if (threadIdx.x == 0) sh.total = full_mass;
  __syncthreads();
  const double full_total = sh.total;
  __syncthreads();
  const double cut_total_local = BlockReduceD(sh.cub.reduce_d).Sum(own_cut);
  if (threadIdx.x == 0) sh.total = cut_total_local;
  __syncthreads();
  const double cut_total = sh.total;
  __syncthreads();

  const double target = p.uniform * (full_total + cut_total);
  int pick = -1;
  if (target < full_total) pick = first_in_id_order_past(sh, row, vocab, full_prob, target);
  if (pick < 0 && cut != kNoBucket) {
    const uint64_t key = select_by_running_weight(sh, row, vocab, cut_mass, target - full_total, false);
    if (key != 0) {
      pick = id_of_key(key);
    } else {  // rounding: the cut bucket's last candidate, as the host's cand_.back()
      unsigned long long lowest = ~0ull;
      for (int i = threadIdx.x; i < vocab; i += kThreads) {
        const float x = row[i];
        if (cut_mass(i, x) > 0) lowest = min(lowest, static_cast<unsigned long long>(order_key(x, i)));
      }
      const unsigned long long least = BlockReduceU64(sh.cub.reduce_u64).Reduce(lowest, MinOf());
      if (threadIdx.x == 0) sh.chosen = least != ~0ull ? id_of_key(least) : -1;
      __syncthreads();
      pick = sh.chosen;
    }
  }
  if (pick < 0) {  // rounding with no cut bucket: the last whole-bucket candidate in id order
    int last = -1;
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      if (full_prob(i, row[i]) > 0) last = i;
    }
    pick = BlockReduceI(sh.cub.reduce_i).Reduce(last, MaxOf());
    if (threadIdx.x == 0) sh.chosen = pick;
    __syncthreads();
    pick = sh.chosen;
  }
  return pick >= 0 ? pick : 0;
}

// The log-softmax at the chosen token and at the num_logprobs best tokens, as Sampler::fill_logprobs.
__device__ void fill_logprobs(Shared& sh, const float* row, int vocab, int num_top, float m, int chosen, RowLogprobs* out) {
  float own = 0;
  for (int i = threadIdx.x; i < vocab; i += kThreads) own += relative_prob(row[i], m);
  const double total = BlockReduceD(sh.cub.reduce_d).Sum(static_cast<double>(own));
  if (threadIdx.x == 0) sh.total = total;
  __syncthreads();
  const float lse = m + static_cast<float>(log(sh.total));
  __syncthreads();
  num_top = min(num_top, vocab);
  if (num_top > 0) {
    auto every = [](int, float x) { return isnan(x) ? 0.0 : 1.0; };
    const uint64_t last = select_by_running_weight(sh, row, vocab, every, static_cast<double>(num_top), true);
    if (threadIdx.x == 0) sh.num_top = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const float x = row[i];
      if (isnan(x)) continue;
      const uint64_t key = order_key(x, i);
      if (key < last) continue;
      const int slot = atomicAdd(&sh.num_top, 1);
      if (slot < kMaxTopLogprobs) sh.top_keys[slot] = key;
    }
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  out->chosen = row[chosen] - lse;
  const int n = num_top > 0 ? min(sh.num_top, kMaxTopLogprobs) : 0;
  for (int a = 1; a < n; ++a) {  // at most 20: insertion sort, best first
    const uint64_t key = sh.top_keys[a];
    int b = a;
    for (; b > 0 && sh.top_keys[b - 1] < key; --b) sh.top_keys[b] = sh.top_keys[b - 1];
    sh.top_keys[b] = key;
  }
  out->num_top = n;
  for (int j = 0; j < n; ++j) {
    const int id = id_of_key(sh.top_keys[j]);
    out->top_ids[j] = id;
    out->top_logprobs[j] = row[id] - lse;
  }
}

__global__ void __launch_bounds__(kThreads) sample_rows_kernel(float* logits, const RowSampling* rows, const LogitEdit* edits,
                                                                const uint32_t* masks, int32_t* tokens, RowLogprobs* logprobs,
                                                                int vocab) {
  pdl_trigger();
  pdl_wait();  // the logits come from the previous kernel
  __shared__ Shared sh;
  float* row = logits + static_cast<size_t>(blockIdx.x) * vocab;
  const RowSampling p = rows[blockIdx.x];

  // The edits, in the host sampler's order; each token appears once per row.
  for (int e = p.edits_begin + static_cast<int>(threadIdx.x); e < p.edits_end; e += kThreads) {
    const LogitEdit edit = edits[e];
    if (edit.token < 0 || edit.token >= vocab) continue;
    float x = row[edit.token] + edit.bias;
    if (edit.masked) {
      x = -INFINITY;
    } else {
      if (edit.repetition != 1.0f) x = x > 0.0f ? x / edit.repetition : x * edit.repetition;
      x -= edit.subtract;
    }
    row[edit.token] = x;
  }
  __syncthreads();
  // Constrained decoding: tokens outside the allowed mask are -inf (an edit cannot bring them back: the
  // host masks after logit_bias, and penalties keep -inf).
  if (p.mask_row >= 0 && masks != nullptr) {
    const uint32_t* mask = masks + static_cast<size_t>(p.mask_row) * ((vocab + 31) / 32);
    for (int t = static_cast<int>(threadIdx.x); t < vocab; t += kThreads) {
      if (!((mask[t >> 5] >> (t & 31)) & 1u)) row[t] = -INFINITY;
    }
    __syncthreads();
  }

  // Scale (as the host: only when the temperature is neither 0 nor 1) and find the maximum.
  const bool scale = p.temperature > 0.0f && p.temperature != 1.0f;
  const float inv = scale ? 1.0f / p.temperature : 1.0f;
  float local_max = -INFINITY;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    float x = row[i];
    if (scale) row[i] = x = x * inv;
    local_max = x > local_max ? x : local_max;  // NaN never wins
  }
  const float block_max = BlockReduceF(sh.cub.reduce_f).Reduce(local_max, MaxOf());
  if (threadIdx.x == 0) sh.max_logit = block_max;
  __syncthreads();
  const float m = sh.max_logit;

  const int pick = draw_token(sh, row, vocab, p, m);
  if (threadIdx.x == 0) {
    tokens[blockIdx.x] = pick;
    sh.chosen = pick;
  }
  __syncthreads();
  const int chosen = sh.chosen;
  __syncthreads();
  if (p.num_logprobs >= 0 && logprobs != nullptr) fill_logprobs(sh, row, vocab, p.num_logprobs, m, chosen, &logprobs[blockIdx.x]);
}

}  // namespace

cudaError_t launch_sample_rows(float* logits, const RowSampling* rows, const LogitEdit* edits, const uint32_t* masks,
                               int32_t* tokens, RowLogprobs* logprobs, int num_rows, int vocab, cudaStream_t stream,
                               const LaunchOptions& options) {
  if (num_rows < 0 || vocab <= 0) return cudaErrorInvalidValue;
  if (num_rows == 0) return cudaSuccess;
  return launch_kernel(sample_rows_kernel, dim3(num_rows), dim3(kThreads), 0, stream, options, logits, rows, edits,
                       masks, tokens, logprobs, vocab);
}

}  // namespace tandem::backend::cuda
