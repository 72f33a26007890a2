// KV transfer backends: blocks arrive intact at their destinations, pushes need an expectation,
// and forget() is a barrier against late pushes. Every test runs on the TCP and the mock backend, and
// on the CUDA IPC path over fake device memory (its claim/release protocol, no GPU).
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "fake_device_memory.h"
#include "transfer/transfer.h"

namespace tandem::transfer {
namespace {

constexpr int kLayers = 3;
constexpr int kBlocks = 16;
constexpr size_t kBlockBytes = 1024;

std::vector<std::byte> pattern(int layer, int block, int salt) {
  std::vector<std::byte> bytes(kBlockBytes);
  for (size_t i = 0; i < kBlockBytes; ++i) bytes[i] = static_cast<std::byte>((layer * 31 + block * 7 + salt + i) & 0xff);
  return bytes;
}

class TransferTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<TransferBackend> make(std::shared_ptr<KvMemory> memory) {
    if (GetParam() == "tcp") return create_tcp_backend(std::move(memory), "127.0.0.1", 0);
    if (GetParam() == "device") return create_transfer_backend("cuda_ipc", std::move(memory), "127.0.0.1", 0);
    return create_mock_backend(std::move(memory), "test");
  }
  std::shared_ptr<KvMemory> memory(int layers, int blocks) {
    if (GetParam() == "device") return std::make_shared<testing::FakeDeviceMemory>(layers, blocks, kBlockBytes);
    return create_host_kv_memory(layers, blocks, kBlockBytes);
  }
};

TEST_P(TransferTest, PushedBlocksLandInTheirDestinations) {
  auto src_mem = memory(kLayers, kBlocks);
  auto dst_mem = memory(kLayers, kBlocks);
  auto src = make(src_mem);
  auto dst = make(dst_mem);
  std::vector<BlockCopy> copies;
  for (int layer = 0; layer < kLayers; ++layer) {
    for (int b = 0; b < 4; ++b) {
      ASSERT_TRUE(src_mem->write_block(layer, b, pattern(layer, b, 1)).ok());
      copies.push_back({layer, b, 10 + b});
    }
  }
  dst->expect("t1", {10, 11, 12, 13});
  auto stats = src->push(dst->address(), "t1", copies, 2000);
  ASSERT_TRUE(stats.ok()) << stats.status().to_string();
  EXPECT_EQ(stats->num_blocks, kLayers * 4);
  EXPECT_EQ(stats->num_bytes, static_cast<int64_t>(kLayers * 4 * kBlockBytes));
  EXPECT_EQ(stats->transport, GetParam() == "device" ? "cuda_ipc" : GetParam());
  std::vector<std::byte> got(kBlockBytes);
  for (int layer = 0; layer < kLayers; ++layer) {
    for (int b = 0; b < 4; ++b) {
      ASSERT_TRUE(dst_mem->read_block(layer, 10 + b, got).ok());
      EXPECT_EQ(got, pattern(layer, b, 1)) << "layer " << layer << " block " << b;
    }
  }
  // The connection is reused for the next push.
  auto again = src->push(dst->address(), "t1", copies, 2000);
  EXPECT_TRUE(again.ok()) << again.status().to_string();
}

TEST_P(TransferTest, PushWithoutExpectationOrAfterForgetIsRefused) {
  auto src_mem = memory(kLayers, kBlocks);
  auto dst_mem = memory(kLayers, kBlocks);
  auto src = make(src_mem);
  auto dst = make(dst_mem);
  ASSERT_TRUE(src_mem->write_block(0, 0, pattern(0, 0, 5)).ok());
  std::vector<BlockCopy> copies = {{0, 0, 3}};
  auto unexpected = src->push(dst->address(), "t2", copies, 2000);
  EXPECT_EQ(unexpected.status().code(), StatusCode::kNotFound) << unexpected.status().to_string();
  dst->expect("t2", {4});
  auto wrong_block = src->push(dst->address(), "t2", copies, 2000);
  EXPECT_EQ(wrong_block.status().code(), StatusCode::kInvalidArgument) << wrong_block.status().to_string();
  dst->expect("t2", {3});
  dst->forget("t2");
  auto late = src->push(dst->address(), "t2", copies, 2000);
  EXPECT_FALSE(late.ok());
  std::vector<std::byte> got(kBlockBytes);
  ASSERT_TRUE(dst_mem->read_block(0, 3, got).ok());
  EXPECT_EQ(got, std::vector<std::byte>(kBlockBytes)) << "a refused push must not write";
}

TEST_P(TransferTest, UnreachablePeerIsUnavailable) {
  auto src = make(memory(1, 1));
  std::string nowhere;
  {
    auto gone = make(memory(1, 1));
    nowhere = gone->address();
  }
  std::vector<BlockCopy> copies = {{0, 0, 0}};
  auto stats = src->push(nowhere, "t3", copies, 500);
  EXPECT_EQ(stats.status().code(), StatusCode::kUnavailable) << stats.status().to_string();
}

INSTANTIATE_TEST_SUITE_P(Backends, TransferTest, ::testing::Values("tcp", "mock", "device"));

}  // namespace
}  // namespace tandem::transfer
