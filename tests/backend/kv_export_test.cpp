// The text form of a KvExport (what travels in a transfer address): round trip, and refusal of
// malformed text.
#include <gtest/gtest.h>

#include "backend/backend.h"

namespace tandem::backend {
namespace {

TEST(KvExportText, RoundTripsEveryField) {
  KvExport e;
  e.device = "cuda:1";
  e.device_ordinal = 1;
  e.pci_bus_id = "0000:19:00.0";
  e.process_id = 123456;
  e.spec.num_layers = 32;
  e.spec.num_blocks = 70000;
  e.spec.block_size = 16;
  e.spec.num_kv_heads = 8;
  e.spec.head_dim = 128;
  e.spec.dtype = model::DType::kBF16;
  e.layer_stride_bytes = 4587585536ull;
  for (int i = 0; i < 64; ++i) e.handle.push_back(static_cast<std::byte>(i * 37 + 1));
  const std::string text = encode_kv_export(e);
  EXPECT_EQ(text.find_first_of("; /\n"), std::string::npos) << text;
  EXPECT_EQ(text.rfind("kvx1,cuda:1,1,0000:19:00.0,123456,32,70000,16,8,128,BF16,4587585536,01", 0), 0u) << text;
  auto back = decode_kv_export(text);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->device, e.device);
  EXPECT_EQ(back->device_ordinal, 1);
  EXPECT_EQ(back->pci_bus_id, e.pci_bus_id);
  EXPECT_EQ(back->process_id, e.process_id);
  EXPECT_EQ(back->spec.num_layers, 32);
  EXPECT_EQ(back->spec.num_blocks, 70000);
  EXPECT_EQ(back->spec.block_size, 16);
  EXPECT_EQ(back->spec.num_kv_heads, 8);
  EXPECT_EQ(back->spec.head_dim, 128);
  EXPECT_EQ(back->spec.dtype, model::DType::kBF16);
  EXPECT_EQ(back->layer_stride_bytes, e.layer_stride_bytes);
  EXPECT_EQ(back->handle, e.handle);
}

TEST(KvExportText, MalformedTextIsRefused) {
  EXPECT_FALSE(decode_kv_export("").ok());
  EXPECT_FALSE(decode_kv_export("kvx1,cuda:0").ok());
  EXPECT_FALSE(decode_kv_export("kvx2,cuda:0,0,-,1,2,3,16,8,128,BF16,100,00").ok());
  EXPECT_FALSE(decode_kv_export("kvx1,cuda:0,0,-,1,2,3,16,8,128,BF16,100,0g").ok());
  EXPECT_FALSE(decode_kv_export("kvx1,cuda:0,0,-,1,2,3,16,8,128,Q4,100,00").ok());
  EXPECT_FALSE(decode_kv_export("kvx1,cuda:0,x,-,1,2,3,16,8,128,BF16,100,00").ok());
  EXPECT_TRUE(decode_kv_export("kvx1,cuda:0,0,-,1,2,3,16,8,128,BF16,100,00").ok());
}

}  // namespace
}  // namespace tandem::backend
