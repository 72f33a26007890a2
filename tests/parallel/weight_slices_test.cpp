// What each tensor-parallel rank keeps of each checkpoint tensor (the CUDA backend uploads exactly these
// slices): the kind and range per tensor name, and on every fixture that the ranks' slices read through
// read_slice put back together give the whole tensor (KV rows replicated when there are fewer KV heads
// than ranks).
#include <gtest/gtest.h>

#include <cstring>

#include "model/weight_source.h"
#include "parallel/weight_slices.h"

namespace tandem::parallel {
namespace {

using Kind = SlicedTensor::Kind;

ModelShape shape_of(const model::ModelConfig& c) {
  return ModelShape{.num_heads = c.num_heads, .num_kv_heads = c.num_kv_heads, .head_dim = c.head_dim,
                    .intermediate_size = c.intermediate_size, .vocab_size = c.vocab_size};
}

const model::TensorSpec& find(const std::vector<model::TensorSpec>& specs, const std::string& name) {
  for (const auto& s : specs) {
    if (s.name == name) return s;
  }
  ADD_FAILURE() << "no tensor " << name;
  return specs.front();
}

TEST(WeightSlices, KindsAndRangesFollowTheShardPlan) {
  auto weights = model::open_weight_source(std::string(TANDEM_TEST_DATA_DIR) + "/models/qwen3_gqa");
  const model::ModelConfig& c = weights->config();
  const auto specs = model::expected_tensors(c);
  const ShardPlan p = *plan_shard(shape_of(c), 1, 2);
  const int64_t d = c.head_dim;
  auto slice = [&](const std::string& name) { return shard_slice(find(specs, name), c, p); };
  SlicedTensor q = slice("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(q.kind, Kind::kRows);
  EXPECT_EQ(q.begin, p.q_heads.begin * d);
  EXPECT_EQ(q.end, p.q_heads.end * d);
  EXPECT_EQ(q.cols(), c.hidden_size);
  SlicedTensor k = slice("model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(k.kind, Kind::kRows);
  EXPECT_EQ(k.begin, p.kv_heads.begin * d);
  SlicedTensor o = slice("model.layers.0.self_attn.o_proj.weight");
  EXPECT_EQ(o.kind, Kind::kColumns);
  EXPECT_EQ(o.rows(), c.hidden_size);
  EXPECT_EQ(o.cols(), p.q_heads.size() * d);
  EXPECT_EQ(slice("model.layers.0.mlp.up_proj.weight").kind, Kind::kRows);
  SlicedTensor down = slice("model.layers.0.mlp.down_proj.weight");
  EXPECT_EQ(down.kind, Kind::kColumns);
  EXPECT_EQ(down.begin, p.intermediate.begin);
  EXPECT_EQ(slice("model.embed_tokens.weight").kind, Kind::kWhole);
  EXPECT_EQ(slice("model.layers.0.input_layernorm.weight").kind, Kind::kWhole);
  EXPECT_EQ(slice("model.layers.0.self_attn.q_norm.weight").kind, Kind::kWhole);
  // World 1 and no plan keep everything.
  EXPECT_EQ(shard_slice(find(specs, "model.layers.0.self_attn.q_proj.weight"), c, *plan_shard(shape_of(c), 0, 1)).kind, Kind::kWhole);
  EXPECT_EQ(shard_slice(find(specs, "model.layers.0.mlp.down_proj.weight"), c, std::nullopt).kind, Kind::kWhole);
}

// Every fixture at world 2 and 4: for each tensor the ranks' slices, placed at their rows or columns,
// equal the whole tensor read at once, bit for bit (a replicated KV head's rows are read by each of its
// ranks and must equal the whole's too).
TEST(WeightSlices, RanksSlicesReassembleEveryTensorOfEveryFixture) {
  for (const std::string name : {"qwen3_gqa", "llama_gqa_rope3", "qwen2_gqa_tied_fp16", "llama_mqa_tied_bf16", "qwen3_mqa_tied_bf16"}) {
    auto weights = model::open_weight_source(std::string(TANDEM_TEST_DATA_DIR) + "/models/" + name);
    const model::ModelConfig& c = weights->config();
    for (int world : {2, 4}) {
      std::vector<ShardPlan> plans;
      for (int r = 0; r < world; ++r) plans.push_back(*plan_shard(shape_of(c), r, world));
      std::vector<std::byte> scratch;
      for (const model::TensorSpec& spec : model::expected_tensors(c)) {
        std::vector<float> whole(static_cast<size_t>(model::num_elements(spec.shape)));
        weights->read(spec, model::DType::kF32, whole.data());
        const int64_t rows = spec.shape[0], cols = spec.shape.size() > 1 ? spec.shape[1] : 1;
        std::vector<int> covered(whole.size(), 0);
        for (int r = 0; r < world; ++r) {
          const SlicedTensor t = shard_slice(spec, c, plans[r]);
          std::vector<float> part(t.elements());
          read_slice(*weights, t, model::DType::kF32, part.data(), scratch);
          for (int64_t i = 0; i < t.rows(); ++i) {
            for (int64_t j = 0; j < t.cols(); ++j) {
              const int64_t wi = t.kind == Kind::kRows ? t.begin + i : i, wj = t.kind == Kind::kColumns ? t.begin + j : j;
              const size_t at = static_cast<size_t>(wi * cols + wj);
              ASSERT_EQ(std::memcmp(&part[static_cast<size_t>(i * t.cols() + j)], &whole[at], sizeof(float)), 0)
                  << name << " world " << world << " rank " << r << " " << spec.name;
              ++covered[at];
            }
          }
        }
        const bool kv = spec.name.find("k_proj") != std::string::npos || spec.name.find("v_proj") != std::string::npos;
        const int replicas = kv ? plans[0].kv_replicas : 1;
        const bool whole_kind = shard_slice(spec, c, plans[0]).kind == Kind::kWhole;
        for (size_t i = 0; i < covered.size(); ++i) {
          ASSERT_EQ(covered[i], whole_kind ? world : replicas) << name << " world " << world << " " << spec.name << " element " << i;
        }
        (void)rows;
      }
    }
  }
}

}  // namespace
}  // namespace tandem::parallel
