// CpuBackend: the fp32 reference forward pass (Llama, Qwen2, Qwen3) over a paged KV cache, parallel
// over the cores with OpenMP. Numerically it follows transformers' eager fp32 path (RMSNorm, rotate-half
// RoPE with llama3 scaling, GQA softmax attention, SiLU MLP); it is the reference the GPU backend and the
// engine tests compare against.
// Owns fp32 copies of the weights and the KV pools. Driven by one thread (see backend.h).
//
// Tensor parallelism: given a CpuRank, the backend holds one rank's shard of the weights and KV heads
// (parallel/shard_plan.h) and its forward makes the rank's collectives: an all-reduce after o_proj and
// after down_proj, an all-gather of the vocabulary-split logits. Without one (world 1) it is the whole
// model with no collective, exactly the single-device path. TensorParallelCpuBackend drives the ranks.
#pragma once

#include <vector>

#include "backend/backend.h"
#include "parallel/communicator.h"
#include "parallel/shard_plan.h"

namespace tandem::backend::cpu {

// The dimensions the tensor-parallel split reads from a model's config.
parallel::ModelShape shard_shape(const model::ModelConfig& config);

// One tensor-parallel rank's part of the model, for the CpuBackend that holds it.
struct CpuRank {
  // Not owned; outlives the backend; used only from the thread that calls forward().
  parallel::Communicator* comm = nullptr;
  parallel::ShardPlan plan;  // from parallel::plan_shard for comm's rank and world size
  // Whether TANDEM_INJECT_DEVICE_FAULT_AT_STEP applies to this rank (the TP backend fails one rank).
  bool inject_faults = true;
};

class CpuBackend : public Backend {
 public:
  // Validates and converts every weight to fp32 (the shard of `rank` when given). Throws tandem::Error
  // on bad weights or options. config() is the whole model's; kv_cache_spec() the rank's heads.
  CpuBackend(const model::WeightSource& weights, const BackendOptions& options, const CpuRank* rank = nullptr);

  const model::ModelConfig& config() const override { return config_; }
  const KvCacheSpec& kv_cache_spec() const override { return kv_; }
  std::string device_name() const override { return "cpu"; }
  Status forward(const ForwardBatch& batch, std::span<float> logits) override;
  Status device_health() const override { return health_; }
  Status read_kv_block(int layer, int block, std::span<std::byte> out) override;
  Status write_kv_block(int layer, int block, std::span<const std::byte> in) override;

 private:
  struct LayerWeights {
    std::vector<float> input_norm;       // [hidden]
    // Sizes are this rank's (q_size_, kv_size_, inter_): the whole model's at world 1.
    std::vector<float> qkv;              // [q_size + 2 * kv_size, hidden]: q, k, v rows fused
    std::vector<float> qkv_bias;         // [q_size + 2 * kv_size] or empty
    std::vector<float> q_norm;           // [head_dim] or empty (Qwen3)
    std::vector<float> k_norm;           // [head_dim] or empty (Qwen3)
    std::vector<float> o_proj;           // [hidden, q_size]: this rank's columns
    std::vector<float> post_norm;        // [hidden]
    std::vector<float> gate_up;          // [2 * intermediate, hidden]: gate rows then up rows
    std::vector<float> down;             // [hidden, intermediate]: this rank's columns
  };

  // The vocabulary-split logits of every rank into `logits` [num_logits, vocab_size] (world > 1).
  Status gather_logits(int num_logits, std::span<float> logits);
  void attention(const ForwardBatch& batch, int layer, const float* q, float* out) const;
  void write_kv(const ForwardBatch& batch, int layer, const float* k, const float* v);
  void apply_rope(float* x, int num_heads, int position) const;
  std::byte* kv_block(int layer, int block) { return kv_pools_[layer].data() + static_cast<size_t>(block) * kv_.block_bytes(); }
  const std::byte* kv_block(int layer, int block) const { return kv_pools_[layer].data() + static_cast<size_t>(block) * kv_.block_bytes(); }
  // Stores row x [head_dim] as K (which 0) or V (which 1) of `slot`, KV head `head`, in the cache's dtype
  // (kv_codec.h); reads it back as fp32: a pointer into the block (fp32 cache) or to `scratch` [head_dim].
  void store_kv_row(std::byte* block, int which, int slot, int head, const float* x);
  const float* load_kv_row(const std::byte* block, int which, int slot, int head, float* scratch) const;

  model::ModelConfig config_;
  parallel::Communicator* comm_ = nullptr;  // null at world 1
  parallel::ShardPlan plan_;
  // This rank's q heads, KV heads, q_size, kv_size (head_dim units) and intermediate rows.
  int heads_ = 0, kv_heads_ = 0, q_size_ = 0, kv_size_ = 0, inter_ = 0;
  KvCacheSpec kv_;
  std::vector<float> embed_;    // [vocab, hidden], every rank
  std::vector<float> lm_head_;  // [plan_.vocab rows, hidden]; empty when head_is_embed_
  bool head_is_embed_ = false;  // tied embeddings at world 1: the logits read embed_ itself
  std::vector<float> final_norm_;  // [hidden]
  std::vector<LayerWeights> layers_;
  std::vector<float> inv_freq_;  // [head_dim / 2] RoPE inverse frequencies, llama3-scaled when configured
  // Per layer num_blocks blocks of kv_.block_bytes(): [2, block_size, kv_heads, head_dim] values in kv_.dtype,
  // then (FP8) their scales (backend.h).
  std::vector<std::vector<std::byte>> kv_pools_;

  // TANDEM_INJECT_DEVICE_FAULT_AT_STEP: the CPU has no sticky device errors, so an injected one is
  // simulated: that forward call and every later one fail with it. 0 (never) on a rank told not to inject.
  int fault_step_ = 0;
  int num_forwards_ = 0;
  Status health_;

  // Scratch, grown to the largest batch seen and reused (no allocation per step once warm).
  std::vector<float> hidden_, normed_, qkv_, attn_out_, gate_up_, mlp_out_;
  std::vector<float> shard_logits_, gathered_logits_;  // world > 1: [num_logits, vocab_shard], [world, ...]
};

}  // namespace tandem::backend::cpu
