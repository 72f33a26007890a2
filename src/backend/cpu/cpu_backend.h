// CpuBackend: the fp32 reference forward pass (Llama, Qwen2, Qwen3) over a paged KV cache, parallel
// over the cores with OpenMP. Numerically it follows transformers' eager fp32 path (RMSNorm, rotate-half
// RoPE with llama3 scaling, GQA softmax attention, SiLU MLP); it is the reference the GPU backend and the
// engine tests compare against.
// Owns fp32 copies of the weights and the KV pools. Driven by one thread (see backend.h).
#pragma once

#include <vector>

#include "backend/backend.h"

namespace tandem::backend::cpu {

class CpuBackend : public Backend {
 public:
  // Validates and converts every weight to fp32. Throws tandem::Error on bad weights or options.
  CpuBackend(const model::WeightSource& weights, const BackendOptions& options);

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
    std::vector<float> qkv;              // [q_size + 2 * kv_size, hidden]: q, k, v rows fused
    std::vector<float> qkv_bias;         // [q_size + 2 * kv_size] or empty
    std::vector<float> q_norm;           // [head_dim] or empty (Qwen3)
    std::vector<float> k_norm;           // [head_dim] or empty (Qwen3)
    std::vector<float> o_proj;           // [hidden, q_size]
    std::vector<float> post_norm;        // [hidden]
    std::vector<float> gate_up;          // [2 * intermediate, hidden]: gate rows then up rows
    std::vector<float> down;             // [hidden, intermediate]
  };

  void attention(const ForwardBatch& batch, int layer, const float* q, float* out) const;
  void write_kv(const ForwardBatch& batch, int layer, const float* k, const float* v);
  void apply_rope(float* x, int num_heads, int position) const;
  float* kv_block(int layer, int block) { return kv_pools_[layer].data() + static_cast<size_t>(block) * kv_.block_elements(); }
  const float* kv_block(int layer, int block) const { return kv_pools_[layer].data() + static_cast<size_t>(block) * kv_.block_elements(); }

  model::ModelConfig config_;
  KvCacheSpec kv_;
  std::vector<float> embed_;    // [vocab, hidden]
  std::vector<float> lm_head_;  // [vocab, hidden]; empty when tied to embed_
  std::vector<float> final_norm_;  // [hidden]
  std::vector<LayerWeights> layers_;
  std::vector<float> inv_freq_;  // [head_dim / 2] RoPE inverse frequencies, llama3-scaled when configured
  std::vector<std::vector<float>> kv_pools_;  // per layer [num_blocks, 2, block_size, kv_heads, head_dim]

  // TANDEM_INJECT_DEVICE_FAULT_AT_STEP: the CPU has no sticky device errors, so an injected one is
  // simulated: that forward call and every later one fail with it.
  const int fault_step_ = injected_device_fault_step();
  int num_forwards_ = 0;
  Status health_;

  // Scratch, grown to the largest batch seen and reused (no allocation per step once warm).
  std::vector<float> hidden_, normed_, qkv_, attn_out_, gate_up_, mlp_out_;
};

}  // namespace tandem::backend::cpu
