// Tensor parallelism on GPUs: the NCCL communicator and the tensor-parallel CUDA backend.
//  - one GPU: NCCL's one-rank collectives (blocking, stream-ordered, inside a CUDA graph) leave the data as
//    it is and a failed group stays failed; the tensor-parallel path at TP 1 (sharded loading, an NCCL
//    all-reduce after o and down, the logits gathered, in the decode graphs too) gives the plain backend's
//    logits and KV to the bit, alone, batched (graph buckets with padding), greedy and chunked.
//  - two or more GPUs (skipped otherwise; tools/gpu/tp_multi_gpu.sh runs them): TP 2 follows TP 1's greedy
//    path within bf16 noise, including a model with fewer KV heads than ranks, and continues from KV
//    written by a TP 1 backend.
//  - a faulting rank fails the step and every later one without a hang (TpFault, in its own process).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <random>

inline const char* tandem_gpu_test_data_dir() {
  const char* env = std::getenv("TANDEM_TEST_DATA_DIR");
  return env ? env : TANDEM_BUILD_TEST_DATA_DIR;
}

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/nccl_communicator.h"
#include "backend/reference_decode.h"
#include "common/error.h"
#include "model/weight_source.h"
#include "testing/reference_fixtures.h"

namespace tandem::backend {
namespace {

using tandem::testing::relative_error;

#define GPU_OR_SKIP() \
  if (cuda::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device"
#define GPUS_OR_SKIP(n) \
  if (cuda::cuda_device_count() < (n)) GTEST_SKIP() << "needs " << (n) << " CUDA devices"

std::string fixture(const std::string& name) { return std::string(tandem_gpu_test_data_dir()) + "/models/" + name; }

std::unique_ptr<Backend> make(const model::WeightSource& weights, const std::string& device, int tp, bool tp_path,
                              int num_blocks = 64) {
  BackendOptions options;
  options.device = device;
  options.num_kv_blocks = num_blocks;
  options.tensor_parallel_size = tp;
  return tp_path ? cuda::create_tensor_parallel_cuda_backend(weights, options) : create_backend(weights, options);
}

TEST(Nccl, IdRoundTripsAsHex) {
  cuda::NcclId id{};
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<std::byte>(i * 7 + 3);
  const std::string hex = cuda::encode_nccl_id(id);
  EXPECT_EQ(hex.size(), 256u);
  EXPECT_EQ(*cuda::decode_nccl_id(hex), id);
  EXPECT_EQ(cuda::decode_nccl_id(hex.substr(2)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::decode_nccl_id("zz" + hex.substr(2)).status().code(), StatusCode::kInvalidArgument);
}

// One rank: every collective is the identity, in all three forms; a graph holding an all-reduce replays;
// an aborted group fails every later call with the reason.
TEST(Nccl, OneRankCollectivesBlockingStreamOrderedAndCaptured) {
  GPU_OR_SKIP();
  ASSERT_TRUE(cuda::nccl_available().ok()) << cuda::nccl_available().to_string();
  std::printf("NCCL %s\n", cuda::nccl_version().c_str());
  const int devices[1] = {0};
  auto comms = cuda::make_nccl_communicators(devices);
  ASSERT_TRUE(comms.ok()) << comms.status().to_string();
  cuda::NcclCommunicator& comm = *(*comms)[0];
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.world_size(), 1);
  const size_t n = 4099;
  std::vector<float> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<float>(i) * 0.25f - 100.0f;
  float *a = nullptr, *b = nullptr;
  ASSERT_EQ(cudaMalloc(&a, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&b, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(a, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  std::vector<float> back(n);
  auto expect_a_unchanged = [&](const char* what) {
    ASSERT_EQ(cudaMemcpy(back.data(), a, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(back, host) << what;
  };

  ASSERT_TRUE(comm.all_reduce_sum(std::span<float>(a, n)).ok());
  expect_a_unchanged("blocking all_reduce_sum");
  ASSERT_TRUE(comm.all_gather(std::span<const float>(a, n), std::span<float>(b, n)).ok());
  ASSERT_EQ(cudaMemcpy(back.data(), b, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, host) << "all_gather";
  ASSERT_TRUE(comm.broadcast(std::span<float>(a, n), 0).ok());
  expect_a_unchanged("broadcast");
  EXPECT_EQ(comm.broadcast(std::span<float>(a, n), 1).code(), StatusCode::kInvalidArgument);

  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_TRUE(comm.all_reduce_sum(a, n, cuda::NcclType::kFloat32, stream).ok());
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  expect_a_unchanged("stream-ordered all_reduce_sum");
  // Captured as the decode graphs capture it (thread-local mode), then replayed twice.
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  Status in_capture = comm.all_reduce_sum(a, n, cuda::NcclType::kFloat32, stream);
  Status gather_in_capture = comm.all_gather(a, b, n * sizeof(float), stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(in_capture.ok()) << in_capture.to_string();
  ASSERT_TRUE(gather_in_capture.ok()) << gather_in_capture.to_string();
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaMemset(b, 0, n * sizeof(float)), cudaSuccess);
  for (int i = 0; i < 2; ++i) ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  expect_a_unchanged("graph replay");
  ASSERT_EQ(cudaMemcpy(back.data(), b, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, host) << "captured all_gather";
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);

  comm.abort(Status::Internal("rank 0 lost its GPU"));
  Status after = comm.all_reduce_sum(std::span<float>(a, n));
  EXPECT_EQ(after.code(), StatusCode::kInternal);
  EXPECT_NE(after.message().find("rank 0 lost its GPU"), std::string::npos);
  EXPECT_FALSE(comm.all_reduce_sum(a, n, cuda::NcclType::kFloat32, stream).ok());
  cudaStreamDestroy(stream);
  cudaFree(a);
  cudaFree(b);
}

// Teacher-forced decode on one backend: the prompt, then `forced` one token a step; the logits of every
// step ([1 + forced.size()][vocab]).
std::vector<std::vector<float>> forced_logits(Backend& backend, const std::vector<int32_t>& prompt, const std::vector<int32_t>& forced,
                                              int first_block = 0) {
  const int vocab = backend.config().vocab_size;
  const int total = static_cast<int>(prompt.size() + forced.size());
  const int blocks = (total + 15) / 16;
  std::vector<int32_t> table(blocks);
  std::iota(table.begin(), table.end(), first_block);
  std::vector<std::vector<float>> out;
  std::vector<int32_t> ids = prompt, positions(prompt.size());
  std::iota(positions.begin(), positions.end(), 0);
  int context = static_cast<int>(prompt.size());
  for (size_t step = 0; step <= forced.size(); ++step) {
    const int32_t starts[2] = {0, static_cast<int32_t>(ids.size())}, ctx[1] = {context}, rows[1] = {static_cast<int32_t>(ids.size()) - 1};
    std::vector<float> logits(vocab);
    Status s = backend.forward(ForwardBatch{ids, positions, starts, ctx, table, blocks, rows}, logits);
    EXPECT_TRUE(s.ok()) << s.to_string();
    out.push_back(logits);
    if (step == forced.size()) break;
    ids = {forced[step]};
    positions = {context};
    ++context;
  }
  return out;
}

std::vector<int32_t> random_prompt(int vocab, int n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> p(n);
  for (auto& t : p) t = static_cast<int32_t>(rng() % vocab);
  return p;
}

class TpOne : public ::testing::TestWithParam<std::string> {};

TEST_P(TpOne, EqualsThePlainBackendToTheBit) {
  GPU_OR_SKIP();
  auto weights = model::open_weight_source(fixture(GetParam()));
  const int vocab = weights->config().vocab_size;
  auto plain = make(*weights, "cuda:0", 1, false);
  auto tp = make(*weights, "cuda:0", 1, true);
  EXPECT_EQ(tp->kv_cache_spec().num_kv_heads, plain->kv_cache_spec().num_kv_heads);
  EXPECT_EQ(tp->kv_cache_spec().block_bytes(), plain->kv_cache_spec().block_bytes());

  // Alone: prefill of 40 then 20 decode steps (CUDA graphs), the plain backend's greedy path forced on both.
  const std::vector<int32_t> prompt = random_prompt(vocab, 40, 7);
  auto reference = reference_greedy_decode(*plain, prompt, 20).value();
  const auto a = forced_logits(*plain, prompt, reference.tokens, 8);
  const auto b = forced_logits(*tp, prompt, reference.tokens, 8);
  ASSERT_EQ(a.size(), b.size());
  for (size_t step = 0; step < a.size(); ++step) EXPECT_EQ(a[step], b[step]) << GetParam() << " step " << step;
  // Its KV, block by block.
  std::vector<std::byte> ka(plain->kv_cache_spec().block_bytes()), kb(ka.size());
  for (int layer = 0; layer < plain->config().num_layers; ++layer) {
    for (int block = 8; block < 12; ++block) {
      ASSERT_TRUE(plain->read_kv_block(layer, block, ka).ok());
      ASSERT_TRUE(tp->read_kv_block(layer, block, kb).ok());
      ASSERT_EQ(ka, kb) << "layer " << layer << " block " << block;
    }
  }

  // A ragged batch (a chunk of a prefill beside two decodes), then three sequences decoding together
  // (graph bucket 4, one padding row), greedy on the device.
  const std::vector<int32_t> ids = random_prompt(vocab, 23, 9);
  std::vector<int32_t> positions(23);
  std::iota(positions.begin(), positions.begin() + 21, 0);
  positions[21] = 40;  // sequence 1 continues the prompt above (blocks 8..)
  positions[22] = 60;
  const int32_t starts[4] = {0, 21, 22, 23}, ctx[3] = {21, 41, 61}, rows[3] = {20, 21, 22};
  std::vector<int32_t> tables = {30, 31, 32, 33, 34, 8, 9, 10, 11, 12, 8, 9, 10, 11, 12};
  // Sequence 2 reads sequence 1's blocks (as a prefix-cache hit would) and writes position 60 into
  // block 11 of the plain backend and of the TP backend alike.
  std::vector<float> la(3 * static_cast<size_t>(vocab)), lb(la.size());
  ASSERT_TRUE(plain->forward(ForwardBatch{ids, positions, starts, ctx, tables, 5, rows}, la).ok());
  ASSERT_TRUE(tp->forward(ForwardBatch{ids, positions, starts, ctx, tables, 5, rows}, lb).ok());
  EXPECT_EQ(la, lb) << "ragged batch";
  for (int step = 0; step < 6; ++step) {
    const std::vector<int32_t> next = random_prompt(vocab, 3, 100 + step);
    const int32_t pos[3] = {21 + step, 41 + step, 61 + step}, c2[3] = {22 + step, 42 + step, 62 + step}, s2[4] = {0, 1, 2, 3};
    const int32_t r2[3] = {0, 1, 2};
    std::vector<int32_t> tb = {30, 31, 32, 33, 34, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49};
    std::vector<int32_t> ta(3), tt(3);
    ASSERT_TRUE(plain->forward_greedy(ForwardBatch{next, pos, s2, c2, tb, 5, r2}, ta).ok());
    ASSERT_TRUE(tp->forward_greedy(ForwardBatch{next, pos, s2, c2, tb, 5, r2}, tt).ok());
    EXPECT_EQ(ta, tt) << "batched greedy step " << step;
  }
  EXPECT_TRUE(tp->device_health().ok());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TpOne, ::testing::Values("qwen3_gqa", "llama_mqa_tied_bf16", "qwen2_gqa_tied_fp16"));

TEST(TpDevices, MoreRanksThanGpusIsRefusedNamingTheFlags) {
  GPU_OR_SKIP();
  auto weights = model::open_weight_source(fixture("qwen3_gqa"));
  const int visible = cuda::cuda_device_count();
  try {
    make(*weights, "cuda", visible + 1, false);
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--tensor-parallel-size " + std::to_string(visible + 1)), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("visible"), std::string::npos) << e.what();
  }
}

// bf16 noise: TP 2 sums the o/down partial results in another order (and in bf16 across ranks), so its
// logits differ from TP 1's by rounding; its argmax must be TP 1's or within kTieBand * rms of it.
constexpr double kTieBand = 0.15;

void expect_follows(const std::vector<std::vector<float>>& one, const std::vector<std::vector<float>>& two, const std::string& what) {
  ASSERT_EQ(one.size(), two.size());
  for (size_t step = 0; step < one.size(); ++step) {
    EXPECT_LT(relative_error(two[step], one[step]), 3e-2) << what << " step " << step;
    const int32_t a = argmax(one[step]), b = argmax(two[step]);
    double rms = 0;
    for (float x : one[step]) rms += static_cast<double>(x) * x;
    rms = std::sqrt(rms / one[step].size());
    EXPECT_LE(one[step][a] - one[step][b], kTieBand * rms) << what << " step " << step << ": TP 2 chose " << b << ", TP 1 " << a;
  }
}

class TpTwo : public ::testing::TestWithParam<std::string> {};

TEST_P(TpTwo, FollowsTpOneWithinBf16NoiseAndContinuesItsKv) {
  GPUS_OR_SKIP(2);
  auto weights = model::open_weight_source(fixture(GetParam()));
  const int vocab = weights->config().vocab_size;
  auto one = make(*weights, "cuda:0", 1, false);
  auto two = make(*weights, "cuda:0,1", 2, false);
  EXPECT_EQ(two->device_name(), "cuda:0,1");
  EXPECT_EQ(two->kv_cache_spec().num_kv_heads, weights->config().num_kv_heads);
  const std::vector<int32_t> prompt = random_prompt(vocab, 40, 7);
  auto reference = reference_greedy_decode(*one, prompt, 16).value();
  expect_follows(forced_logits(*one, prompt, reference.tokens), forced_logits(*two, prompt, reference.tokens), GetParam());
  // KV written by TP 1 (the prompt's blocks 0..2) continues on TP 2, and back.
  std::vector<std::byte> block(one->kv_cache_spec().block_bytes());
  for (int layer = 0; layer < weights->config().num_layers; ++layer) {
    for (int b = 0; b < 3; ++b) {
      ASSERT_TRUE(one->read_kv_block(layer, b, block).ok());
      ASSERT_TRUE(two->write_kv_block(layer, 20 + b, block).ok());
      std::vector<std::byte> again(block.size());
      ASSERT_TRUE(two->read_kv_block(layer, 20 + b, again).ok());
      ASSERT_EQ(again, block) << "layer " << layer << " block " << b;
    }
  }
  EXPECT_TRUE(two->device_health().ok());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TpTwo, ::testing::Values("qwen3_gqa", "llama_mqa_tied_bf16", "qwen3_mqa_tied_bf16"));

// A rank that faults (TANDEM_INJECT_DEVICE_FAULT_AT_STEP, applied to the last rank: a real illegal-address
// fault) fails the step and every later one without a hang, the NCCL group aborted: at TP 2 where two GPUs
// are, else at TP 1 through the tensor-parallel path. Run in its own process with the variable set (the
// fault poisons that GPU's context for the rest of the process): tools/gpu/tp_multi_gpu.sh, and
// bench/results/2026-12-02-h200-tp1/run.sh on one GPU.
TEST(TpFault, FailingRankFailsTheWorkerWithoutHanging) {
  GPU_OR_SKIP();
  if (injected_device_fault_step() <= 0) GTEST_SKIP() << "set TANDEM_INJECT_DEVICE_FAULT_AT_STEP";
  auto weights = model::open_weight_source(fixture("qwen3_gqa"));
  const bool two_gpus = cuda::cuda_device_count() >= 2;
  auto two = two_gpus ? make(*weights, "cuda:0,1", 2, false) : make(*weights, "cuda:0", 1, true);
  auto r = reference_greedy_decode(*two, random_prompt(weights->config().vocab_size, 20, 1), 8);
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(two->device_health().ok());
  std::vector<float> logits(weights->config().vocab_size);
  const int32_t ids[1] = {1}, pos[1] = {0}, starts[2] = {0, 1}, ctx[1] = {1}, table[1] = {0}, rows[1] = {0};
  EXPECT_FALSE(two->forward(ForwardBatch{ids, pos, starts, ctx, table, 1, rows}, logits).ok());
}

}  // namespace
}  // namespace tandem::backend
