// The whole CUDA backend (bf16) against transformers' fp32 fixtures (greedy tokens equal for the first 16
// steps, logits within 2e-2 relative), against the CPU backend, and against itself one sequence at a
// time: a ragged batch with chunked prefill and prefix-cached context gives what each sequence gets alone.
// Skipped where no GPU is visible.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <unistd.h>
#include <numeric>
#include <random>

// The fixtures live in the source tree at build time; TANDEM_TEST_DATA_DIR in the environment moves
// them (the GPU machine runs these binaries from another checkout).
inline const char* tandem_gpu_test_data_dir() {
  const char* env = std::getenv("TANDEM_TEST_DATA_DIR");
  return env ? env : TANDEM_BUILD_TEST_DATA_DIR;
}

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/reference_decode.h"
#include "common/error.h"
#include "engine/sampler.h"
#include "model/weight_source.h"
#include "testing/reference_fixtures.h"

namespace tandem::backend {
namespace {

using tandem::testing::relative_error;

#define GPU_OR_SKIP() \
  if (cuda::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device"

std::string fixture(const std::string& name) { return std::string(tandem_gpu_test_data_dir()) + "/models/" + name; }

std::unique_ptr<Backend> make_gpu(const model::WeightSource& weights, int num_blocks) {
  BackendOptions options;
  options.device = "cuda:0";
  options.num_kv_blocks = num_blocks;
  return create_backend(weights, options);
}

// Why not "free-running greedy equal for 16 steps": the fixtures' references are fp32 and their greedy
// paths have top-2 gaps down to 1e-3 (tests/data/README.md), smaller than bf16 rounding. The fp32 CPU
// backend given the same weights rounded to bf16 already leaves the reference path within 16 steps on
// qwen3_gqa (step 9) and misses the 2e-2 logits bound by weight rounding alone on fp32 checkpoints
// (llama_gqa_rope3 prompt of 17: 1.7e-2, qwen3_gqa: 2.0e-2; measured 2026-11-25). So the test follows the
// reference path (teacher forcing) and requires, at each of the first 16 steps, our argmax to be the
// reference token or within bf16 noise of it (gap <= kTieBand * rms(logits)); the logits bound is 2e-2
// where the checkpoint is bf16 (exact in our weights) and 3e-2 where bf16 rounds the weights.
constexpr double kTieBand = 0.15;

class CudaTransformersReference : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaTransformersReference, FollowsTheReferenceGreedyPathAndLogitsMatchInBf16) {
  GPU_OR_SKIP();
  const std::string name = GetParam();
  auto weights = model::open_weight_source(fixture(name));
  const bool exact_weights = weights->config().torch_dtype == "bfloat16";
  const double logits_bound = exact_weights ? 2e-2 : 3e-2;
  auto backend = make_gpu(*weights, 8);
  EXPECT_EQ(backend->device_name(), "cuda:0");
  const int vocab = backend->config().vocab_size;
  auto references = tandem::testing::load_references(name);
  ASSERT_EQ(references.size(), 4u);
  int exact = 0, total = 0;
  for (const auto& ref : references) {
    // Prefill the prompt, then feed the reference's greedy tokens one by one (blocks 0..).
    std::vector<int32_t> tokens = ref.ids;
    std::vector<int32_t> table(8);
    for (int b = 0; b < 8; ++b) table[b] = b;
    int computed = 0;
    for (int step = 0; step < 16; ++step) {
      const int n = static_cast<int>(tokens.size()) - computed;
      std::vector<int32_t> ids(tokens.begin() + computed, tokens.end()), positions(n);
      for (int i = 0; i < n; ++i) positions[i] = computed + i;
      const int32_t starts[2] = {0, n}, context[1] = {static_cast<int32_t>(tokens.size())}, rows[1] = {n - 1};
      std::vector<float> logits(vocab);
      Status st = backend->forward(ForwardBatch{ids, positions, starts, context, table, 8, rows}, logits);
      ASSERT_TRUE(st.ok()) << st.to_string();
      if (step == 0) {
        EXPECT_LT(relative_error(logits, ref.last_logits), logits_bound) << name << " prompt of " << ref.ids.size();
      }
      const int32_t ours = argmax(logits), theirs = ref.greedy[step];
      double rms = 0;
      for (float v : logits) rms += static_cast<double>(v) * v;
      rms = std::sqrt(rms / vocab);
      ++total;
      if (ours == theirs) {
        ++exact;
      } else {
        EXPECT_LE(logits[ours] - logits[theirs], kTieBand * rms)
            << name << " prompt of " << ref.ids.size() << " step " << step << ": ours " << ours << " reference " << theirs;
      }
      computed = static_cast<int>(tokens.size());
      tokens.push_back(theirs);
    }
  }
  RecordProperty("exact_greedy_steps", exact);
  std::printf("%s: argmax equal to the reference on %d of %d steps\n", name.c_str(), exact, total);
  EXPECT_GE(exact, total * 3 / 4) << name;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaTransformersReference,
                         ::testing::Values("llama_gqa_rope3", "llama_mqa_tied_bf16", "qwen2_gqa_tied_fp16", "qwen3_gqa",
                                           "qwen3_mqa_tied_bf16"));

struct Sequence {
  std::vector<int32_t> tokens;
  std::vector<int32_t> blocks;
  int computed = 0;
};

// Runs `seqs` together: sequences still prefilling take chunks of up to `chunk` tokens, the others
// decode one token; each sequence generates `num_new` tokens. Returns each one's first logits row.
std::vector<std::vector<float>> run_ragged(Backend& backend, std::vector<Sequence>& seqs, const std::vector<int>& prompt_lens,
                                           int num_new, int chunk) {
  const int vocab = backend.config().vocab_size;
  std::vector<std::vector<float>> first(seqs.size());
  std::vector<int> generated(seqs.size(), 0);
  for (int step = 0; step < 1000; ++step) {
    std::vector<int32_t> ids, positions, starts{0}, context, tables, rows;
    std::vector<size_t> which;
    int max_blocks = 1;
    for (auto& s : seqs) max_blocks = std::max<int>(max_blocks, static_cast<int>(s.blocks.size()));
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (generated[i] >= num_new) continue;
      Sequence& s = seqs[i];
      const int take = std::min(chunk, static_cast<int>(s.tokens.size()) - s.computed);
      for (int k = 0; k < take; ++k) {
        ids.push_back(s.tokens[s.computed + k]);
        positions.push_back(s.computed + k);
      }
      starts.push_back(static_cast<int32_t>(ids.size()));
      context.push_back(s.computed + take);
      rows.push_back(static_cast<int32_t>(ids.size()) - 1);
      std::vector<int32_t> table(max_blocks, -1);
      std::copy(s.blocks.begin(), s.blocks.end(), table.begin());
      tables.insert(tables.end(), table.begin(), table.end());
      which.push_back(i);
    }
    if (which.empty()) break;
    std::vector<float> logits(rows.size() * vocab);
    Status st = backend.forward(ForwardBatch{ids, positions, starts, context, tables, max_blocks, rows}, logits);
    EXPECT_TRUE(st.ok()) << st.to_string();
    if (!st.ok()) break;
    for (size_t r = 0; r < which.size(); ++r) {
      Sequence& s = seqs[which[r]];
      s.computed = context[r];
      if (s.computed < static_cast<int>(s.tokens.size())) continue;
      std::vector<float> row(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
      if (generated[which[r]] == 0) first[which[r]] = row;
      s.tokens.push_back(argmax(row));
      ++generated[which[r]];
    }
  }
  (void)prompt_lens;
  return first;
}

TEST(CudaBatching, RaggedChunkedBatchMatchesOneAtATimeAndTheCpuBackend) {
  GPU_OR_SKIP();
  auto weights = model::open_weight_source(fixture("qwen3_gqa"));
  const int vocab = weights->config().vocab_size;
  std::mt19937 rng(11);
  const std::vector<int> prompt_lens = {1, 16, 17, 45, 5, 100};
  const int num_new = 12;
  std::vector<int32_t> free_blocks(96);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng);
  std::vector<Sequence> seqs(prompt_lens.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (int t = 0; t < prompt_lens[i]; ++t) seqs[i].tokens.push_back(static_cast<int32_t>(rng() % vocab));
    for (int b = 0; b < (prompt_lens[i] + num_new + 15) / 16; ++b) {
      seqs[i].blocks.push_back(free_blocks.back());
      free_blocks.pop_back();
    }
  }
  const std::vector<Sequence> prompts = seqs;

  // Alone, on a fresh GPU backend and on the CPU backend.
  std::vector<ReferenceDecodeResult> alone_gpu, alone_cpu;
  {
    auto solo = make_gpu(*weights, 16);
    BackendOptions cpu_options;
    cpu_options.num_kv_blocks = 16;
    auto cpu = create_backend(*weights, cpu_options);
    for (const auto& s : prompts) {
      alone_gpu.push_back(reference_greedy_decode(*solo, s.tokens, num_new).value());
      alone_cpu.push_back(reference_greedy_decode(*cpu, s.tokens, num_new).value());
    }
  }
  for (int chunk : {7, 1000}) {
    std::vector<Sequence> batch = prompts;
    auto gpu = make_gpu(*weights, 96);
    auto first = run_ragged(*gpu, batch, prompt_lens, num_new, chunk);
    for (size_t i = 0; i < batch.size(); ++i) {
      std::vector<int32_t> got(batch[i].tokens.begin() + prompt_lens[i], batch[i].tokens.end());
      EXPECT_EQ(got, alone_gpu[i].tokens) << "sequence " << i << " chunk " << chunk;
      EXPECT_LT(relative_error(first[i], alone_gpu[i].prefill_logits), 1e-2) << "sequence " << i << " chunk " << chunk;
      EXPECT_LT(relative_error(first[i], alone_cpu[i].prefill_logits), 2e-2) << "sequence " << i << " vs cpu";
      EXPECT_EQ(got, alone_cpu[i].tokens) << "sequence " << i << " vs cpu";
    }
  }
}

TEST(CudaBatching, KvBlocksRoundTripAndContinueOnAnotherBackend) {
  GPU_OR_SKIP();
  auto weights = model::open_weight_source(fixture("qwen3_gqa"));
  auto a = make_gpu(*weights, 16);
  auto b = make_gpu(*weights, 16);
  EXPECT_EQ(a->kv_cache_spec().dtype, model::DType::kBF16);
  std::vector<int32_t> prompt = {5, 9, 200, 17, 3, 3, 44, 81, 120, 7, 66, 2, 90, 91, 92, 93, 94, 95};
  auto expected = reference_greedy_decode(*a, prompt, 6).value();
  std::vector<std::byte> buffer(a->kv_cache_spec().block_bytes());
  for (int layer = 0; layer < a->config().num_layers; ++layer) {
    for (int blk = 0; blk < 2; ++blk) {
      ASSERT_TRUE(a->read_kv_block(layer, blk, buffer).ok());
      ASSERT_TRUE(b->write_kv_block(layer, 10 + blk, buffer).ok());
    }
  }
  std::vector<int32_t> table = {10, 11, 12}, tokens = {prompt.back()}, got;
  int context = static_cast<int>(prompt.size());
  std::vector<float> logits(a->config().vocab_size);
  for (int step = 0; step < 6; ++step) {
    const int32_t pos = context - 1, starts[2] = {0, 1}, ctx[1] = {context}, rows[1] = {0};
    ASSERT_TRUE(b->forward(ForwardBatch{tokens, std::span<const int32_t>(&pos, 1), starts, ctx, table, 3, rows}, logits).ok());
    got.push_back(argmax(logits));
    tokens = {got.back()};
    ++context;
  }
  EXPECT_EQ(got, expected.tokens);
  EXPECT_EQ(b->read_kv_block(0, 16, buffer).code(), StatusCode::kInvalidArgument);
}

// Decode steps replayed from CUDA graphs (batch buckets, padded block tables, fixed KV splits) give the
// logits of the same steps run eagerly: batch sizes 3 then 2 (buckets 4 and 2), contexts crossing
// 256 tokens (block-table width bucket 16 -> 32 blocks).
TEST(CudaGraphs, DecodeStepsMatchEagerSteps) {
  GPU_OR_SKIP();
  auto weights = model::open_weight_source(fixture("qwen3_gqa"));
  const int vocab = weights->config().vocab_size;
  BackendOptions options;
  options.device = "cuda:0";
  options.num_kv_blocks = 64;
  auto graphed = create_backend(*weights, options);
  options.cuda_graphs = false;
  auto eager = create_backend(*weights, options);
  std::mt19937 rng(3);
  const std::vector<int> prompt_lens = {250, 7, 120};
  std::vector<Sequence> seqs(3);
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (int t = 0; t < prompt_lens[i]; ++t) seqs[i].tokens.push_back(static_cast<int32_t>(rng() % vocab));
    for (int b = 0; b < 20; ++b) seqs[i].blocks.push_back(static_cast<int32_t>(i * 20 + b));
  }
  // Prefill each on both backends.
  for (auto* backend : {graphed.get(), eager.get()}) {
    for (auto& s : seqs) {
      const int n = static_cast<int>(s.tokens.size());
      std::vector<int32_t> positions(n);
      std::iota(positions.begin(), positions.end(), 0);
      const int32_t starts[2] = {0, n}, ctx[1] = {n}, rows[1] = {n - 1};
      std::vector<float> logits(vocab);
      ASSERT_TRUE(backend->forward(ForwardBatch{s.tokens, positions, starts, ctx, s.blocks, 20, rows}, logits).ok());
    }
  }
  std::vector<int> context = prompt_lens;
  for (int step = 0; step < 12; ++step) {
    const int batch = step < 6 ? 3 : 2;
    std::vector<int32_t> ids, positions, starts{0}, ctx, tables, rows;
    for (int i = 0; i < batch; ++i) {
      ids.push_back(static_cast<int32_t>(rng() % vocab));
      positions.push_back(context[i]);
      starts.push_back(i + 1);
      ctx.push_back(++context[i]);
      const int blocks = (context[i] + 15) / 16;
      for (int b = 0; b < 20; ++b) tables.push_back(b < blocks ? seqs[i].blocks[b] : -1);
      rows.push_back(i);
    }
    // Narrow block tables while every context fits, as an engine would send them.
    int width = 1;
    for (int c : ctx) width = std::max(width, (c + 15) / 16);
    std::vector<int32_t> narrow;
    for (int i = 0; i < batch; ++i) narrow.insert(narrow.end(), tables.begin() + i * 20, tables.begin() + i * 20 + width);
    std::vector<float> a(static_cast<size_t>(batch) * vocab), b(a.size());
    ASSERT_TRUE(graphed->forward(ForwardBatch{ids, positions, starts, ctx, narrow, width, rows}, a).ok());
    ASSERT_TRUE(eager->forward(ForwardBatch{ids, positions, starts, ctx, narrow, width, rows}, b).ok());
    EXPECT_LT(relative_error(a, b), 2e-3) << "step " << step;
    for (int i = 0; i < batch; ++i) {
      EXPECT_EQ(argmax(std::span<const float>(a).subspan(i * vocab, vocab)),
                argmax(std::span<const float>(b).subspan(i * vocab, vocab)))
          << "step " << step << " sequence " << i;
    }
  }
}

// KV transfer over CUDA IPC between two processes sharing the GPU (issue 8 item 4): the parent
// prefills a prompt and exports its pools; a child process (this binary, filtered to
// CudaIpc.ChildRole) opens them, copies the prompt's blocks into its own pool, decodes the continuation,
// and pushes its copies back into two other blocks of the parent. The continuation equals the parent's,
// and the pushed blocks equal the originals byte for byte.
void write_export(const std::string& path, const KvExport& e) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fprintf(f, "%s %d %lld %d %zu\n", e.device.c_str(), e.device_ordinal, static_cast<long long>(e.process_id),
               e.spec.num_blocks, e.layer_stride_bytes);
  for (std::byte b : e.handle) std::fprintf(f, "%02x", static_cast<unsigned>(b));
  std::fprintf(f, "\n");
  std::fclose(f);
}

KvExport read_export(const std::string& path, const KvCacheSpec& geometry) {
  KvExport e;
  std::ifstream in(path);
  long long pid = 0;
  std::string hex;
  in >> e.device >> e.device_ordinal >> pid >> e.spec.num_blocks >> e.layer_stride_bytes >> hex;
  e.process_id = pid;
  const int blocks = e.spec.num_blocks;
  e.spec = geometry;
  e.spec.num_blocks = blocks;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) e.handle.push_back(static_cast<std::byte>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return e;
}

const std::vector<int32_t> kIpcPrompt = {5, 9, 200, 17, 3, 3, 44, 81, 120, 7, 66, 2, 90, 91, 92, 93, 94, 95};

TEST(CudaIpc, PrefillInOneProcessDecodeInAnother) {
  GPU_OR_SKIP();
  if (std::getenv("TANDEM_IPC_FILE")) GTEST_SKIP() << "child process";
  auto weights = model::open_weight_source(fixture("qwen3_gqa"));
  auto a = make_gpu(*weights, 16);
  auto expected = reference_greedy_decode(*a, kIpcPrompt, 6).value();  // KV of the prompt in blocks 0, 1
  auto exported = a->export_kv_handles();
  ASSERT_TRUE(exported.ok()) << exported.status().to_string();
  EXPECT_EQ(a->copy_blocks_from_peer(*exported, std::vector<int32_t>{0}, std::vector<int32_t>{1}).code(),
            StatusCode::kUnavailable);  // not in the exporting process
  const std::string dir = ::testing::TempDir();
  const std::string handle_file = dir + "/tandem_ipc_handle.txt", out_file = dir + "/tandem_ipc_tokens.txt";
  write_export(handle_file, *exported);
  std::remove(out_file.c_str());
  char exe[4096] = {};
  ASSERT_GT(readlink("/proc/self/exe", exe, sizeof(exe) - 1), 0);
  const std::string cmd = "TANDEM_IPC_FILE=" + handle_file + " TANDEM_IPC_OUT=" + out_file + " " + exe +
                          " --gtest_filter=CudaIpc.ChildRole > " + dir + "/tandem_ipc_child.log 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "child failed; see " << dir << "/tandem_ipc_child.log";
  std::ifstream in(out_file);
  std::vector<int32_t> got;
  for (int32_t t; in >> t;) got.push_back(t);
  EXPECT_EQ(got, expected.tokens);
  std::vector<std::byte> original(a->kv_cache_spec().block_bytes()), pushed(original.size());
  for (int layer = 0; layer < a->config().num_layers; ++layer) {
    for (int b = 0; b < 2; ++b) {
      ASSERT_TRUE(a->read_kv_block(layer, b, original).ok());
      ASSERT_TRUE(a->read_kv_block(layer, 5 + b, pushed).ok());
      // Block 1 holds the decoded tokens' K/V past the prompt in the parent; compare the prompt's slots.
      const size_t slots = b == 0 ? 16 : 2;
      const size_t half = original.size() / 2, slot_bytes = half / 16;
      EXPECT_TRUE(std::equal(original.begin(), original.begin() + slots * slot_bytes, pushed.begin())) << "K layer " << layer;
      EXPECT_TRUE(std::equal(original.begin() + half, original.begin() + half + slots * slot_bytes, pushed.begin() + half))
          << "V layer " << layer;
    }
  }
}

TEST(CudaIpc, ChildRole) {
  const char* handle_file = std::getenv("TANDEM_IPC_FILE");
  const char* out_file = std::getenv("TANDEM_IPC_OUT");
  if (!handle_file || !out_file) GTEST_SKIP() << "runs as the child of CudaIpc.PrefillInOneProcessDecodeInAnother";
  auto weights = model::open_weight_source(fixture("qwen3_gqa"));
  auto b = make_gpu(*weights, 16);
  const KvExport peer = read_export(handle_file, b->kv_cache_spec());
  Status st = b->copy_blocks_from_peer(peer, std::vector<int32_t>{0, 1}, std::vector<int32_t>{10, 11});
  ASSERT_TRUE(st.ok()) << st.to_string();
  std::vector<int32_t> table = {10, 11, 12}, tokens = {kIpcPrompt.back()}, got;
  int context = static_cast<int>(kIpcPrompt.size());
  std::vector<float> logits(b->config().vocab_size);
  for (int step = 0; step < 6; ++step) {
    const int32_t pos = context - 1, starts[2] = {0, 1}, ctx[1] = {context}, rows[1] = {0};
    ASSERT_TRUE(b->forward(ForwardBatch{tokens, std::span<const int32_t>(&pos, 1), starts, ctx, table, 3, rows}, logits).ok());
    got.push_back(argmax(logits));
    tokens = {got.back()};
    ++context;
  }
  st = b->copy_blocks_to_peer(peer, std::vector<int32_t>{10, 11}, std::vector<int32_t>{5, 6});
  ASSERT_TRUE(st.ok()) << st.to_string();
  std::ofstream out(out_file);
  for (int32_t t : got) out << t << "\n";
}

// forward_greedy returns the argmax of the logits forward() returns for the same step, on a prefill
// batch (eager) and on decode steps (graphs), and the default (host) implementation agrees.
TEST(CudaGreedy, ForwardGreedyEqualsArgmaxOfForward) {
  GPU_OR_SKIP();
  auto weights = model::open_weight_source(fixture("qwen3_gqa"));
  const int vocab = weights->config().vocab_size;
  auto backend = make_gpu(*weights, 32);
  std::mt19937 rng(9);
  std::vector<int32_t> ids, positions, starts{0}, ctx, tables, rows;
  const std::vector<int> lens = {5, 40, 1};
  for (size_t s = 0; s < lens.size(); ++s) {
    for (int t = 0; t < lens[s]; ++t) {
      ids.push_back(static_cast<int32_t>(rng() % vocab));
      positions.push_back(t);
    }
    starts.push_back(static_cast<int32_t>(ids.size()));
    ctx.push_back(lens[s]);
    rows.push_back(static_cast<int32_t>(ids.size()) - 1);
    for (int b = 0; b < 4; ++b) tables.push_back(static_cast<int32_t>(s * 4 + b));
  }
  rows.push_back(2);  // a mid-prompt row too
  for (int step = 0; step < 4; ++step) {
    const ForwardBatch batch{ids, positions, starts, ctx, tables, 4, rows};
    std::vector<float> logits(rows.size() * vocab);
    std::vector<int32_t> greedy(rows.size()), host_greedy(rows.size());
    ASSERT_TRUE(backend->forward(batch, logits).ok());
    ASSERT_TRUE(backend->forward_greedy(batch, greedy).ok());
    ASSERT_TRUE(backend->Backend::forward_greedy(batch, host_greedy).ok());
    for (size_t r = 0; r < rows.size(); ++r) {
      EXPECT_EQ(greedy[r], argmax(std::span<const float>(logits).subspan(r * vocab, vocab))) << "step " << step << " row " << r;
    }
    EXPECT_EQ(greedy, host_greedy);
    // The device draw through the backend (staging, edits, logprobs back, the graph path on decode
    // steps) against the engine's host sampler on forward()'s logits.
    engine::Sampler sampler(vocab, weights->config().eos_token_ids);
    std::vector<engine::SamplingParams> params(rows.size());
    std::vector<RowSampling> draws(rows.size());
    std::vector<LogitEdit> edits;
    std::vector<int32_t> sampled(rows.size()), history(ids.begin(), ids.end());
    std::vector<RowLogprobs> device_logprobs(rows.size());
    std::vector<int32_t> want(rows.size());
    std::vector<float> want_chosen_logprob(rows.size());
    for (size_t r = 0; r < rows.size(); ++r) {
      engine::SamplingParams& sp = params[r];
      sp.temperature = r == 0 ? 0.0f : 0.9f;
      sp.top_k = r == 1 ? 40 : 0;
      sp.top_p = r == 2 ? 0.8f : 1.0f;
      sp.presence_penalty = r == 3 ? 0.4f : 0.0f;
      sp.repetition_penalty = r == 2 ? 1.2f : 1.0f;
      sp.logprobs = static_cast<int>(r % 2) * 5;
      sp.seed = 50 + step * 10 + r;
      engine::SampleInput in;
      in.params = &sp;
      in.seed = *sp.seed;
      in.output_token_ids = history;
      engine::TokenLogprobs want_logprobs;
      want[r] = sampler.sample(std::span<const float>(logits).subspan(r * vocab, vocab), in, &want_logprobs);
      want_chosen_logprob[r] = want_logprobs.logprob;
      draws[r] = engine::Sampler::device_row(in);
      draws[r].edits_begin = static_cast<int>(edits.size());
      sampler.device_edits(in, &edits);
      draws[r].edits_end = static_cast<int>(edits.size());
    }
    DeviceSamplingStep sampling_step;
    sampling_step.rows = draws;
    sampling_step.edits = edits;
    sampling_step.tokens = sampled;
    sampling_step.logprobs = device_logprobs;
    ASSERT_TRUE(backend->forward_sampled(batch, sampling_step).ok());
    for (size_t r = 0; r < rows.size(); ++r) {
      EXPECT_EQ(sampled[r], want[r]) << "step " << step << " row " << r;
      if (draws[r].num_logprobs >= 0) {
        EXPECT_NEAR(device_logprobs[r].chosen, want_chosen_logprob[r], 1e-3) << "step " << step << " row " << r;
      }
    }
    // Next: one decode token per sequence (the graph path).
    ids.clear(); positions.clear(); rows.clear();
    starts = {0};
    for (size_t s = 0; s < lens.size(); ++s) {
      ids.push_back(greedy[s]);
      positions.push_back(ctx[s]);
      starts.push_back(static_cast<int32_t>(s + 1));
      ctx[s] += 1;
      rows.push_back(static_cast<int32_t>(s));
    }
  }
  std::vector<int32_t> wrong(1);
  EXPECT_EQ(backend->forward_greedy(ForwardBatch{ids, positions, starts, ctx, tables, 4, rows}, wrong).code(),
            StatusCode::kInvalidArgument);
}

TEST(CudaBackendErrors, MalformedBatchIsRejected) {
  GPU_OR_SKIP();
  auto weights = model::open_weight_source(fixture("qwen3_gqa"));
  auto backend = make_gpu(*weights, 4);
  const std::vector<int32_t> ids = {1, 2}, positions = {0, 1}, starts = {0, 2}, context = {2}, table = {70}, rows = {1};
  std::vector<float> logits(backend->config().vocab_size);
  EXPECT_EQ(backend->forward(ForwardBatch{ids, positions, starts, context, table, 1, rows}, logits).code(),
            StatusCode::kInvalidArgument);
}

TEST(CudaBackendErrors, TooManyKvBlocksSaysWhatWasAskedAndWhichFlag) {
  GPU_OR_SKIP();
  auto weights = model::open_weight_source(fixture("qwen3_gqa"));
  try {
    make_gpu(*weights, 2000000000);
    FAIL() << "expected an out-of-memory error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("GiB"), std::string::npos) << what;
    EXPECT_NE(what.find("--num-kv-blocks"), std::string::npos) << what;
  }
}

TEST(CudaBackendErrors, PoolSizedFromFreeMemory) {
  GPU_OR_SKIP();
  auto weights = model::open_weight_source(fixture("qwen3_gqa"));
  BackendOptions options;
  options.device = "cuda:0";
  options.gpu_memory_utilization = 0.05;
  auto backend = create_backend(*weights, options);
  EXPECT_GT(backend->kv_cache_spec().num_blocks, 1000);
}

}  // namespace
}  // namespace tandem::backend
