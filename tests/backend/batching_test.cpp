// A ragged batch must give every sequence what it gets alone: several sequences of different lengths
// in one step, scattered block ids, prefill chunks mixed with decode tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "backend/backend.h"
#include "backend/reference_decode.h"
#include "testing/reference_fixtures.h"
#include "model/weight_source.h"

namespace tandem::backend {
namespace {

using tandem::testing::relative_error;

struct Sequence {
  std::vector<int32_t> tokens;  // prompt, then generated
  std::vector<int32_t> blocks;
  int computed = 0;             // tokens whose KV is in the cache
};

// Builds one step: for each sequence, `chunk[s]` new tokens starting at its computed position.
struct StepBuilder {
  std::vector<int32_t> ids, positions, starts{0}, context, tables, logits_rows;
  int max_blocks = 0;
  void add(const Sequence& s, int chunk) {
    for (int i = 0; i < chunk; ++i) {
      ids.push_back(s.tokens[s.computed + i]);
      positions.push_back(s.computed + i);
    }
    starts.push_back(static_cast<int32_t>(ids.size()));
    context.push_back(s.computed + chunk);
    logits_rows.push_back(static_cast<int32_t>(ids.size()) - 1);
  }
  ForwardBatch build(const std::vector<Sequence*>& seqs) {
    max_blocks = 0;
    for (auto* s : seqs) max_blocks = std::max<int>(max_blocks, static_cast<int>(s->blocks.size()));
    tables.assign(seqs.size() * max_blocks, -1);
    for (size_t i = 0; i < seqs.size(); ++i) std::copy(seqs[i]->blocks.begin(), seqs[i]->blocks.end(), tables.begin() + i * max_blocks);
    return ForwardBatch{ids, positions, starts, context, tables, max_blocks, logits_rows};
  }
};

class Batching : public ::testing::Test {
 protected:
  void SetUp() override {
    weights_ = model::open_weight_source(std::string(TANDEM_TEST_DATA_DIR) + "/models/qwen3_gqa");
    BackendOptions options;
    options.num_kv_blocks = 64;
    backend_ = create_backend(*weights_, options);
    vocab_ = backend_->config().vocab_size;
  }
  std::unique_ptr<model::WeightSource> weights_;
  std::unique_ptr<Backend> backend_;
  int vocab_ = 0;
};

TEST_F(Batching, RaggedBatchWithChunkedPrefillMatchesEachSequenceAlone) {
  std::mt19937 rng(11);
  const std::vector<int> prompt_lens = {1, 16, 17, 45, 5};
  const int num_new = 12;
  // Blocks handed out in a shuffled order so no sequence has contiguous or ascending blocks.
  std::vector<int32_t> free_blocks(64);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng);

  std::vector<Sequence> seqs(prompt_lens.size());
  std::vector<ReferenceDecodeResult> alone;
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (int t = 0; t < prompt_lens[i]; ++t) seqs[i].tokens.push_back(static_cast<int32_t>(rng() % vocab_));
    const int blocks = (prompt_lens[i] + num_new + 15) / 16;
    for (int b = 0; b < blocks; ++b) { seqs[i].blocks.push_back(free_blocks.back()); free_blocks.pop_back(); }
  }
  {
    BackendOptions options;
    options.num_kv_blocks = 8;
    auto solo = create_backend(*weights_, options);
    for (auto& s : seqs) alone.push_back(reference_greedy_decode(*solo, s.tokens, num_new).value());
  }

  // Step k: sequences still prefilling take a chunk of up to 7 tokens; the others decode one token.
  std::vector<std::vector<float>> first_logits(seqs.size());
  std::vector<int> generated(seqs.size(), 0);
  for (int step = 0; step < 64; ++step) {
    StepBuilder builder;
    std::vector<Sequence*> active;
    std::vector<size_t> which;
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (generated[i] >= num_new) continue;
      const int remaining = static_cast<int>(seqs[i].tokens.size()) - seqs[i].computed;
      builder.add(seqs[i], std::min(remaining, 7));
      active.push_back(&seqs[i]);
      which.push_back(i);
    }
    if (active.empty()) break;
    ForwardBatch batch = builder.build(active);
    std::vector<float> logits(static_cast<size_t>(batch.num_logits()) * vocab_);
    ASSERT_TRUE(backend_->forward(batch, logits).ok());
    for (size_t r = 0; r < active.size(); ++r) {
      Sequence& s = *active[r];
      s.computed = batch.context_lens[r];
      if (s.computed < static_cast<int>(s.tokens.size())) continue;  // mid-prompt chunk: logits unused
      std::vector<float> row(logits.begin() + static_cast<long>(r) * vocab_, logits.begin() + static_cast<long>(r + 1) * vocab_);
      if (generated[which[r]] == 0) first_logits[which[r]] = row;
      s.tokens.push_back(argmax(row));
      ++generated[which[r]];
    }
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    std::vector<int32_t> got(seqs[i].tokens.begin() + prompt_lens[i], seqs[i].tokens.end());
    EXPECT_EQ(got, alone[i].tokens) << "sequence " << i;
    EXPECT_LT(relative_error(first_logits[i], alone[i].prefill_logits), 1e-5) << "sequence " << i;
  }
}

TEST_F(Batching, MalformedBatchIsRejectedNotRun) {
  const std::vector<int32_t> ids = {1, 2}, positions = {0, 1}, starts = {0, 2}, context = {2}, table = {70}, rows = {1};
  std::vector<float> logits(vocab_);
  Status s = backend_->forward(ForwardBatch{ids, positions, starts, context, table, 1, rows}, logits);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  const std::vector<int32_t> bad_ids = {1, vocab_};
  const std::vector<int32_t> ok_table = {3};
  s = backend_->forward(ForwardBatch{bad_ids, positions, starts, context, ok_table, 1, rows}, logits);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  const std::vector<int32_t> bad_positions = {5, 6};
  s = backend_->forward(ForwardBatch{ids, bad_positions, starts, context, ok_table, 1, rows}, logits);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
}

TEST_F(Batching, KvBlocksCopyBetweenBackendsExactly) {
  // What the transfer layer relies on: blocks read from one backend and written into other block ids
  // of another give the same continuation.
  BackendOptions options;
  options.num_kv_blocks = 16;
  auto other = create_backend(*weights_, options);
  std::vector<int32_t> prompt = {5, 9, 200, 17, 3, 3, 44, 81, 120, 7, 66, 2, 90, 91, 92, 93, 94, 95};
  auto expected = reference_greedy_decode(*backend_, prompt, 6).value();  // uses blocks 0.. on backend_
  const int blocks = 2;  // 18 prompt tokens
  std::vector<std::byte> buffer(backend_->kv_cache_spec().block_bytes());
  for (int layer = 0; layer < backend_->config().num_layers; ++layer) {
    for (int b = 0; b < blocks; ++b) {
      ASSERT_TRUE(backend_->read_kv_block(layer, b, buffer).ok());
      ASSERT_TRUE(other->write_kv_block(layer, 10 + b, buffer).ok());
    }
  }
  // Continue on `other` from the copied prompt KV: feed the last prompt token again at its position.
  std::vector<int32_t> table = {10, 11, 12};
  std::vector<int32_t> tokens = {prompt.back()};
  std::vector<int32_t> got;
  int context = static_cast<int>(prompt.size());
  std::vector<float> logits(backend_->config().vocab_size);
  for (int step = 0; step < 6; ++step) {
    const int32_t pos = context - 1;
    const int32_t starts[2] = {0, 1}, ctx[1] = {context}, rows[1] = {0};
    ASSERT_TRUE(other->forward(ForwardBatch{tokens, std::span<const int32_t>(&pos, 1), starts, ctx, table, 3, rows}, logits).ok());
    got.push_back(argmax(logits));
    tokens = {got.back()};
    ++context;
  }
  EXPECT_EQ(got, expected.tokens);
  EXPECT_EQ(other->read_kv_block(0, 16, buffer).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem::backend
