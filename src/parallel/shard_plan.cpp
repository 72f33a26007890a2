// The Megatron-style tensor-parallel split of a model's dimensions (see shard_plan.h).
#include "parallel/shard_plan.h"

#include <algorithm>
#include <string>

namespace tandem::parallel {
namespace {

Status cannot_split(int world, const std::string& why) {
  return Status::InvalidArgument("cannot split the model over " + std::to_string(world) + " tensor-parallel ranks: " + why);
}

}  // namespace

Status check_splittable(const ModelShape& s, int world) {
  if (world < 1) return Status::InvalidArgument("the tensor-parallel size must be at least 1, not " + std::to_string(world));
  if (s.num_heads <= 0 || s.num_kv_heads <= 0 || s.head_dim <= 0 || s.intermediate_size <= 0 || s.vocab_size <= 0 ||
      s.num_heads % s.num_kv_heads != 0) {
    return Status::InvalidArgument("the model's shape is malformed (heads, KV heads, head_dim, intermediate_size, vocab)");
  }
  const std::string w = std::to_string(world);
  if (s.num_heads % world != 0) {
    return cannot_split(world, "num_attention_heads (" + std::to_string(s.num_heads) + ") is not a multiple of " + w);
  }
  if (s.num_kv_heads >= world && s.num_kv_heads % world != 0) {
    return cannot_split(world, "num_key_value_heads (" + std::to_string(s.num_kv_heads) + ") is not a multiple of " + w);
  }
  // Fewer KV heads than ranks: each rank's q heads must all read one KV head, which it then holds.
  if (s.num_kv_heads < world && world % s.num_kv_heads != 0) {
    return cannot_split(world, w + " is not a multiple of num_key_value_heads (" + std::to_string(s.num_kv_heads) +
                                   "), so some rank's q heads would read two KV heads");
  }
  if (s.intermediate_size % world != 0) {
    return cannot_split(world, "intermediate_size (" + std::to_string(s.intermediate_size) + ") is not a multiple of " + w);
  }
  return Status::Ok();
}

StatusOr<ShardPlan> plan_shard(const ModelShape& s, int rank, int world) {
  TANDEM_RETURN_IF_ERROR(check_splittable(s, world));
  if (rank < 0 || rank >= world) {
    return Status::InvalidArgument("rank " + std::to_string(rank) + " is outside [0, " + std::to_string(world) + ")");
  }
  ShardPlan p;
  p.rank = rank;
  p.world = world;
  const int heads = s.num_heads / world;
  p.q_heads = {rank * heads, (rank + 1) * heads};
  if (s.num_kv_heads >= world) {
    const int kv = s.num_kv_heads / world;
    p.kv_heads = {rank * kv, (rank + 1) * kv};
    p.kv_replicas = 1;
  } else {
    p.kv_replicas = world / s.num_kv_heads;
    const int kv_head = rank / p.kv_replicas;
    p.kv_heads = {kv_head, kv_head + 1};
  }
  const int inter = s.intermediate_size / world;
  p.intermediate = {rank * inter, (rank + 1) * inter};
  p.vocab_shard = (s.vocab_size + world - 1) / world;
  const int vocab_begin = std::min(s.vocab_size, rank * p.vocab_shard);
  p.vocab = {vocab_begin, std::min(s.vocab_size, vocab_begin + p.vocab_shard)};
  return p;
}

KvHeadHome kv_head_home(const ModelShape& s, int world, int kv_head) {
  if (s.num_kv_heads >= world) {
    const int per_rank = s.num_kv_heads / world;
    return {kv_head / per_rank, kv_head % per_rank};
  }
  return {kv_head * (world / s.num_kv_heads), 0};
}

}  // namespace tandem::parallel
