// `tandem serve`'s worker layout (DESIGN.md §1): devices per role and memory shares per GPU.
#include <gtest/gtest.h>

#include "cli/serve_layout.h"

namespace tandem::cli {
namespace {

LayoutRequest request(const std::string& device, int gpus, int prefill = 1, int decode = 1) {
  LayoutRequest r;
  r.device = device;
  r.num_gpus = gpus;
  r.num_prefill_workers = prefill;
  r.num_decode_workers = decode;
  return r;
}

TEST(ServeLayout, TwoGpusPutPrefillOnTheFirstAndDecodeOnTheSecond) {
  for (const std::string device : {"auto", "cuda"}) {
    auto plan = plan_layout(request(device, 2));
    ASSERT_EQ(plan.size(), 2u);
    EXPECT_EQ(plan[0].role, "prefill");
    EXPECT_EQ(plan[0].device, "cuda:0");
    EXPECT_EQ(plan[1].role, "decode");
    EXPECT_EQ(plan[1].device, "cuda:1");
    // Alone on its GPU, each worker takes the whole utilization.
    EXPECT_DOUBLE_EQ(plan[0].gpu_memory_utilization, 0.9);
    EXPECT_DOUBLE_EQ(plan[1].gpu_memory_utilization, 0.9);
  }
}

TEST(ServeLayout, OneGpuIsSharedAndItsMemorySplitEvenly) {
  auto plan = plan_layout(request("cuda:0", 1));
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].device, "cuda:0");
  EXPECT_EQ(plan[1].device, "cuda:0");
  // The first takes 0.45 of the free memory; the second, starting after it, 0.45 / 0.55 of what is
  // then free: 0.45 of the original each.
  EXPECT_NEAR(plan[0].gpu_memory_utilization, 0.45, 1e-12);
  EXPECT_NEAR(plan[1].gpu_memory_utilization, 0.45 / 0.55, 1e-12);
  EXPECT_NEAR(plan[1].gpu_memory_utilization * (1 - plan[0].gpu_memory_utilization), 0.45, 1e-12);
  EXPECT_EQ(plan[0].share_index, 0);
  EXPECT_EQ(plan[1].share_index, 1);
  EXPECT_EQ(plan[1].share_count, 2);
  auto same = plan_layout(request("cuda", 1));
  EXPECT_EQ(same[1].device, "cuda:0");
}

TEST(ServeLayout, ThreeWorkersOnOneGpuEachGetAThird) {
  auto r = request("cuda:0", 1, 1, 2);
  r.gpu_memory_utilization = 0.6;
  auto plan = plan_layout(r);
  double free = 1.0;
  for (const auto& w : plan) {
    double taken = free * w.gpu_memory_utilization;
    EXPECT_NEAR(taken, 0.2, 1e-12) << w.role << w.index;
    free -= taken;
  }
}

TEST(ServeLayout, PerRoleDevicesOverrideAndNoGpuMeansCpu) {
  auto r = request("cuda", 2);
  r.prefill_device = "cuda:1";
  r.decode_device = "cuda:1";
  auto plan = plan_layout(r);
  EXPECT_EQ(plan[0].device, "cuda:1");
  EXPECT_EQ(plan[1].device, "cuda:1");
  EXPECT_EQ(plan[1].share_count, 2);
  auto cpu = plan_layout(request("auto", 0));
  EXPECT_EQ(cpu[0].device, "cpu");
  EXPECT_EQ(cpu[0].gpu_memory_utilization, 0);
  auto aggregated = plan_layout(request("cuda", 2, 0, 2));
  EXPECT_EQ(aggregated[0].role, "both");
  EXPECT_EQ(aggregated[0].device, "cuda:0");
  EXPECT_EQ(aggregated[1].device, "cuda:1");
}

TEST(ServeLayout, MissingOrMalformedDevicesAreRefused) {
  EXPECT_THROW(plan_layout(request("cuda", 0)), std::exception);
  EXPECT_THROW(plan_layout(request("cuda:2", 2)), std::exception);
  EXPECT_THROW(plan_layout(request("gpu0", 2)), std::exception);
  auto r = request("cpu", 0);
  r.decode_device = "cuda:0";
  EXPECT_THROW(plan_layout(r), std::exception);
  auto bad = request("cuda", 1);
  bad.gpu_memory_utilization = 1.5;
  EXPECT_THROW(plan_layout(bad), std::exception);
}

}  // namespace
}  // namespace tandem::cli
