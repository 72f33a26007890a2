// Constrained decoding in the engine (engine/constraint.h, step_masks.h) over the fake backend: the
// constraint's mask decides every token, sampled or greedy, drawn by the host sampler or on the
// "device"; EOS comes exactly where the constraint may end; specs are compiled at submit.
#include <gtest/gtest.h>

#include "engine/engine.h"
#include "test_util.h"

namespace tandem::engine {
namespace {

using testing::Collector;
using testing::FakeBackend;
using testing::make_request;

// Spec "seq:a,b,c": exactly tokens a, b, c, then the end.
class SequenceConstraint final : public TokenConstraint {
 public:
  explicit SequenceConstraint(std::vector<int32_t> tokens) : tokens_(std::move(tokens)) {}
  bool fill_allowed(int remaining_tokens, std::span<uint32_t> allowed) const override {
    EXPECT_GE(remaining_tokens, 1);
    std::fill(allowed.begin(), allowed.end(), 0u);
    if (pos_ < tokens_.size()) allowed[tokens_[pos_] >> 5] |= 1u << (tokens_[pos_] & 31);
    return pos_ == tokens_.size();
  }
  bool advance(int32_t token) override {
    if (pos_ >= tokens_.size() || token != tokens_[pos_]) return false;
    ++pos_;
    return true;
  }

 private:
  std::vector<int32_t> tokens_;
  size_t pos_ = 0;
};

class SequenceFactory final : public TokenConstraintFactory {
 public:
  explicit SequenceFactory(std::vector<int32_t> tokens) : tokens_(std::move(tokens)) {}
  std::unique_ptr<TokenConstraint> start() const override { return std::make_unique<SequenceConstraint>(tokens_); }

 private:
  std::vector<int32_t> tokens_;
};

class SequenceCompiler final : public ConstraintCompiler {
 public:
  StatusOr<std::shared_ptr<const TokenConstraintFactory>> compile(const std::string& spec) const override {
    if (spec.rfind("seq:", 0) != 0) return Status::InvalidArgument("unsupported spec '" + spec + "'");
    std::vector<int32_t> tokens;
    for (size_t i = 4; i < spec.size();) {
      const size_t comma = spec.find(',', i);
      tokens.push_back(std::stoi(spec.substr(i, comma - i)));
      i = comma == std::string::npos ? spec.size() : comma + 1;
    }
    return std::shared_ptr<const TokenConstraintFactory>(std::make_shared<SequenceFactory>(tokens));
  }
};

std::unique_ptr<Engine> make_engine(FakeBackend** raw, bool device_sampling) {
  auto backend = std::make_unique<FakeBackend>(64, 4);
  backend->device_sampling_ = device_sampling;
  *raw = backend.get();
  EngineOptions options;
  options.constraints = std::make_shared<SequenceCompiler>();
  return create_engine(std::move(backend), options);
}

void expect_sequence_then_eos(Collector& collector, const std::string& id, int index = 0) {
  const auto c = collector.get(id, index);
  ASSERT_GE(c.tokens.size(), 3u) << id;
  EXPECT_EQ(std::vector<int32_t>(c.tokens.begin(), c.tokens.begin() + 3), (std::vector<int32_t>{10, 20, 30})) << id;
  EXPECT_EQ(c.tokens.size(), 4u) << id;
  EXPECT_EQ(c.tokens.back(), FakeBackend::kVocab - 1) << id;  // EOS, allowed only once the sequence is done
  EXPECT_EQ(c.last.finish_reason, FinishReason::kStop) << id;
}

TEST(ConstrainedEngine, HostSamplerFollowsTheMaskGreedyAndSampled) {
  FakeBackend* backend = nullptr;
  auto engine = make_engine(&backend, /*device_sampling=*/false);
  Collector collector;
  for (int i = 0; i < 4; ++i) {
    Request r = make_request("r" + std::to_string(i), {1, 2, 3 + i}, 16);
    r.sampling.guided = "seq:10,20,30";
    r.sampling.temperature = i % 2 == 0 ? 0.0f : 1.0f;
    r.sampling.seed = i;
    if (i == 3) r.sampling.n = 2;
    ASSERT_TRUE(engine->submit(std::move(r), collector.callback()).ok());
  }
  ASSERT_TRUE(collector.wait_finished(5));
  for (int i = 0; i < 4; ++i) expect_sequence_then_eos(collector, "r" + std::to_string(i));
  expect_sequence_then_eos(collector, "r3", 1);
  // Unconstrained requests in the same engine are untouched.
  ASSERT_TRUE(engine->submit(make_request("free", {1, 2, 3}, 5), collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(6));
  EXPECT_EQ(collector.get("free").tokens.size(), 5u);
}

TEST(ConstrainedEngine, DeviceDrawGetsTheMasks) {
  FakeBackend* backend = nullptr;
  auto engine = make_engine(&backend, /*device_sampling=*/true);
  Collector collector;
  for (int i = 0; i < 3; ++i) {
    Request r = make_request("d" + std::to_string(i), {4, 5, 6 + i}, 16);
    r.sampling.guided = "seq:10,20,30";
    r.sampling.temperature = i == 0 ? 0.0f : 0.7f;
    ASSERT_TRUE(engine->submit(std::move(r), collector.callback()).ok());
  }
  ASSERT_TRUE(collector.wait_finished(3));
  for (int i = 0; i < 3; ++i) expect_sequence_then_eos(collector, "d" + std::to_string(i));
  bool masked = false;
  for (const backend::RowSampling& row : backend->sampled_rows_) masked = masked || row.mask_row >= 0;
  EXPECT_TRUE(masked) << "the constrained rows were not drawn on the device";
}

TEST(ConstrainedEngine, SpecsAreCompiledAtSubmit) {
  FakeBackend* backend = nullptr;
  auto engine = make_engine(&backend, false);
  Collector collector;
  Request bad = make_request("bad", {1, 2}, 4);
  bad.sampling.guided = "grammar: x";
  const Status s = engine->submit(std::move(bad), collector.callback());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("unsupported spec"), std::string::npos);
  // An engine without a compiler refuses constrained requests.
  auto plain = create_engine(std::make_unique<FakeBackend>(16, 4), EngineOptions{});
  Request r = make_request("x", {1, 2}, 4);
  r.sampling.guided = "seq:1";
  EXPECT_EQ(plain->submit(std::move(r), collector.callback()).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem::engine
