// The prefill worker's checks of a RemotePrefill (from the request plane or a NATS prefill-queue payload)
// and the KV copy list it derives from one.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "worker/remote_prefill_checks.h"

namespace tandem::worker {
namespace {

const LocalKvGeometry kLocal{"bf16", 16, 2, 4096};

// A decode worker's request for a 40-token prompt (3 blocks) into its blocks 7, 8, 9.
rpc::pb::RemotePrefill request(int num_cached_tokens) {
  rpc::pb::RemotePrefill rp;
  rp.set_request_id("r");
  for (int i = 0; i < 40; ++i) rp.add_prompt_token_ids(i + 1);
  for (int b : {7, 8, 9}) rp.add_dest_block_ids(b);
  rp.set_num_cached_tokens(num_cached_tokens);
  rp.set_dest_block_size(16);
  rp.set_dest_num_layers(2);
  rp.set_dest_block_bytes(4096);
  rp.set_dest_kv_dtype("bf16");
  return rp;
}

TEST(RemotePrefillChecks, CopiesSkipTheCachedPrefixLayerMajor) {
  const auto rp = request(16);  // the first block is cached on the decode worker
  ASSERT_TRUE(check_remote_prefill(rp, kLocal).ok());
  auto copies = remote_prefill_copies(rp, {30, 31, 32});
  ASSERT_TRUE(copies.ok());
  std::vector<std::tuple<int, int, int>> got;
  for (const auto& c : *copies) got.emplace_back(c.layer, c.src_block, c.dst_block);
  EXPECT_EQ(got, (std::vector<std::tuple<int, int, int>>{{0, 31, 8}, {0, 32, 9}, {1, 31, 8}, {1, 32, 9}}));
  EXPECT_EQ(remote_prefill_copies(rp, {30, 31}).status().code(), StatusCode::kInternal);  // fewer blocks came back
}

TEST(RemotePrefillChecks, RefusesOtherGeometryAndDtype) {
  auto rp = request(0);
  rp.set_dest_kv_dtype("fp8");
  const Status dtype = check_remote_prefill(rp, kLocal);
  EXPECT_EQ(dtype.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(dtype.message().find("fp8"), std::string::npos) << dtype.message();
  rp = request(0);
  rp.set_dest_block_size(32);
  EXPECT_EQ(check_remote_prefill(rp, kLocal).code(), StatusCode::kInvalidArgument);
}

// Found reading the pull loop while adding prefill_queue_message_fuzz: a negative
// num_cached_tokens, which any queue publisher can send, made the push read the prefill's block list
// before its start (a heap read out of bounds).
TEST(RemotePrefillChecks, RefusesCachedTokensOutsideThePrompt) {
  for (int cached : {-16, -1, 41, INT32_MIN}) {
    const Status s = check_remote_prefill(request(cached), kLocal);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << cached;
    EXPECT_NE(s.message().find("num_cached_tokens"), std::string::npos) << s.message();
  }
  EXPECT_TRUE(check_remote_prefill(request(40), kLocal).ok());
}


// Found reading the cluster registration while adding prefill_queue_message_fuzz: the decode worker's KV
// descriptor from etcd was read with nlohmann's value<int>(), which throws on a string (uncaught on the
// prefill worker's pull or request-plane thread: the process ended) and converts 1e300 with an
// undefined cast. A malformed descriptor is now a disagreement.
TEST(RemotePrefillChecks, KvDescriptorFromEtcd) {
  auto rp = request(0);
  rp.set_transfer_address("10.0.0.2:7000");
  const nlohmann::json good = {{"transfer_address", "10.0.0.2:7000"}, {"block_size", 16}, {"num_layers", 2},
                               {"block_bytes", 4096}, {"kv_cache_dtype", "bf16"}};
  EXPECT_TRUE(kv_descriptor_matches(good, rp));
  nlohmann::json without_dtype = good;
  without_dtype.erase("kv_cache_dtype");  // written by a worker that predates the field
  EXPECT_TRUE(kv_descriptor_matches(without_dtype, rp));
  for (const auto& [key, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"block_size", "16"}, {"block_size", 1e300}, {"block_size", 16.0}, {"num_layers", nullptr},
           {"block_bytes", -1}, {"transfer_address", 7000}, {"kv_cache_dtype", 1}, {"block_size", 17}}) {
    nlohmann::json bad = good;
    bad[key] = value;
    EXPECT_FALSE(kv_descriptor_matches(bad, rp)) << bad.dump();
  }
  EXPECT_FALSE(kv_descriptor_matches(nlohmann::json::array(), rp));
}

}  // namespace
}  // namespace tandem::worker
