// `--device` for tensor-parallel CUDA workers (parse_cuda_devices): which GPUs the ranks get, and the
// refusals that name both flags. Pure parsing; no GPU needed.
#include <gtest/gtest.h>

#include "backend/backend.h"

namespace tandem::backend {
namespace {

std::vector<int> ok(const std::string& device, int tp, int visible) {
  auto d = parse_cuda_devices(device, tp, visible);
  EXPECT_TRUE(d.ok()) << d.status().to_string();
  return d.ok() ? *d : std::vector<int>{};
}

std::string error(const std::string& device, int tp, int visible) {
  auto d = parse_cuda_devices(device, tp, visible);
  EXPECT_FALSE(d.ok()) << device << " tp " << tp;
  if (d.ok()) return "";
  EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("--device " + device), std::string::npos) << d.status().message();
  EXPECT_NE(d.status().message().find("--tensor-parallel-size"), std::string::npos) << d.status().message();
  return d.status().message();
}

TEST(CudaDevices, CudaTakesTheFirstNVisible) {
  EXPECT_EQ(ok("cuda", 1, 1), (std::vector<int>{0}));
  EXPECT_EQ(ok("cuda", 4, 8), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(ok("cuda", 2, -1), (std::vector<int>{0, 1}));
  EXPECT_NE(error("cuda", 2, 1).find("needs 2 GPUs, 1 visible"), std::string::npos);
}

TEST(CudaDevices, AListNamesTheRanksGpusInOrder) {
  EXPECT_EQ(ok("cuda:2,3", 2, 4), (std::vector<int>{2, 3}));
  EXPECT_EQ(ok("cuda:3,0,1,2", 4, 4), (std::vector<int>{3, 0, 1, 2}));
  EXPECT_EQ(ok("cuda:1", 1, 2), (std::vector<int>{1}));
}

TEST(CudaDevices, RefusalsSayWhatIsWrong) {
  EXPECT_NE(error("cuda:0", 2, 2).find("names 1 GPU(s) for 2"), std::string::npos);
  EXPECT_NE(error("cuda:0,1,2", 2, 4).find("names 3 GPU(s) for 2"), std::string::npos);
  EXPECT_NE(error("cuda:1,1", 2, 4).find("named twice"), std::string::npos);
  EXPECT_NE(error("cuda:0,5", 2, 4).find("cuda:5 does not exist (4 visible)"), std::string::npos);
  EXPECT_NE(error("cuda:0,", 2, 4).find("is not a device index"), std::string::npos);
  EXPECT_NE(error("cuda:a,b", 2, 4).find("'a' is not a device index"), std::string::npos);
  EXPECT_NE(error("cuda:-1,0", 2, 4).find("is not a device index"), std::string::npos);
  EXPECT_NE(error("cuda:", 1, 4).find("expected cuda"), std::string::npos);
  EXPECT_NE(error("gpu:0", 1, 4).find("expected cuda"), std::string::npos);
  EXPECT_FALSE(parse_cuda_devices("cuda", 0, 4).ok());
}

}  // namespace
}  // namespace tandem::backend
