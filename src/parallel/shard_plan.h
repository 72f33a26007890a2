// ShardPlan: which part of a decoder-only transformer one tensor-parallel rank holds (Megatron-LM's
// split, Shoeybi et al. 2019, §3): q/k/v and gate/up split by output rows (whole heads for attention),
// o and down split by input columns and followed by an all-reduce of their partial sums, lm_head split by
// vocabulary rows with an all-gather of the logits before sampling. Embeddings and norms are replicated.
// When the model has fewer KV heads than ranks, each KV head is replicated on the ranks whose q heads
// read it. Pure functions over the shape, so the split is tested alone; the backends apply it.
//
// Plain values; thread-safe to share.
#pragma once

#include "common/status.h"

namespace tandem::parallel {

// The dimensions that decide the split (a model::ModelConfig's; parallel does not depend on model).
struct ModelShape {
  int num_heads = 0;     // num_attention_heads
  int num_kv_heads = 0;  // num_key_value_heads
  int head_dim = 0;
  int intermediate_size = 0;
  int vocab_size = 0;
};

// [begin, end) of some dimension.
struct Range {
  int begin = 0;
  int end = 0;
  int size() const { return end - begin; }
  bool operator==(const Range&) const = default;
};

struct ShardPlan {
  int rank = 0;
  int world = 1;
  Range q_heads;       // of num_heads: q rows [begin * head_dim, end * head_dim), o columns likewise
  Range kv_heads;      // of num_kv_heads: k and v rows, and this rank's KV cache heads
  int kv_replicas = 1;  // ranks holding each KV head: world / num_kv_heads when fewer KV heads than ranks
  Range intermediate;  // gate and up rows, down columns
  Range vocab;         // lm_head rows; the logits this rank computes
  int vocab_shard = 0;  // the padded logits width every rank gathers: ceil(vocab_size / world)

  // q heads per KV head on this rank (the GQA group, as in the whole model).
  int group() const { return q_heads.size() / kv_heads.size(); }
};

// OK when `shape` splits over `world` ranks; otherwise InvalidArgument naming the dimension that does
// not divide (num_attention_heads % world, num_key_value_heads % world or world % num_key_value_heads,
// intermediate_size % world). The vocabulary always splits (the last ranks' shards may be shorter).
Status check_splittable(const ModelShape& shape, int world);

// Rank `rank`'s share. REQUIRES 0 <= rank < world; returns check_splittable's error otherwise.
StatusOr<ShardPlan> plan_shard(const ModelShape& shape, int rank, int world);

// Where KV head `kv_head` of the whole model lives: the first rank holding it (with replicas, ranks
// rank .. rank + kv_replicas - 1 all hold it) and its index among that rank's KV heads.
// REQUIRES check_splittable(shape, world).ok() and 0 <= kv_head < shape.num_kv_heads.
struct KvHeadHome {
  int rank = 0;
  int local_head = 0;
};
KvHeadHome kv_head_home(const ModelShape& shape, int world, int kv_head);

}  // namespace tandem::parallel
