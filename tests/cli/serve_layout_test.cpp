// `tandem serve`'s worker layout (DESIGN.md §1): devices per role and memory shares per GPU; with
// tensor parallelism (docs/parallelism.md, "serve's layout"), GPU sets per worker, the TP flags' names in
// errors, and CPU threads by ranks.
#include <gtest/gtest.h>

#include "cli/serve_layout.h"

#include <functional>
#include <string>
#include <vector>

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


LayoutRequest tp_request(const std::string& device, int gpus, int prefill, int prefill_tp, int decode, int decode_tp) {
  LayoutRequest r = request(device, gpus, prefill, decode);
  r.prefill_tensor_parallel_size = prefill_tp;
  r.decode_tensor_parallel_size = decode_tp;
  return r;
}

std::vector<std::string> devices_of(const std::vector<WorkerPlacement>& plan) {
  std::vector<std::string> out;
  for (const auto& w : plan) out.push_back(w.device);
  return out;
}

// The error plan_layout throws, "" when it throws none.
std::string layout_error(const LayoutRequest& r) {
  try {
    plan_layout(r);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

using Devices = std::vector<std::string>;

TEST(ServeLayoutTp, WorkersGetDisjointGpuSetsOfTheirTpSizeWhenTheyFit) {
  // The four-GPU study: two prefill workers at TP 1, one decode worker at TP 2.
  auto plan = plan_layout(tp_request("cuda", 4, 2, 1, 1, 2));
  EXPECT_EQ(devices_of(plan), (Devices{"cuda:0", "cuda:1", "cuda:2,3"}));
  EXPECT_EQ(plan[2].gpus, (std::vector<int>{2, 3}));
  EXPECT_EQ(plan[0].tensor_parallel_size, 1);
  EXPECT_EQ(plan[2].tensor_parallel_size, 2);
  for (const auto& w : plan) {
    EXPECT_EQ(w.share_count, 1) << w.device;
    EXPECT_DOUBLE_EQ(w.gpu_memory_utilization, 0.9) << w.device;
  }
  // The reverse, and spare GPUs left at the end.
  EXPECT_EQ(devices_of(plan_layout(tp_request("auto", 4, 1, 2, 1, 1))), (Devices{"cuda:0,1", "cuda:2"}));
  EXPECT_EQ(devices_of(plan_layout(tp_request("cuda", 8, 1, 2, 2, 2))), (Devices{"cuda:0,1", "cuda:2,3", "cuda:4,5"}));
  // Aggregated workers at TP 2 go round the sets of two.
  EXPECT_EQ(devices_of(plan_layout(tp_request("cuda", 4, 0, 0, 3, 2))), (Devices{"cuda:0,1", "cuda:2,3", "cuda:0,1"}));
}

TEST(ServeLayoutTp, TensorParallelSizeSetsEveryRoleAndTheRoleFlagsOverrideIt) {
  LayoutRequest r = request("cuda", 4);
  r.tensor_parallel_size = 2;
  EXPECT_EQ(devices_of(plan_layout(r)), (Devices{"cuda:0,1", "cuda:2,3"}));
  EXPECT_EQ(role_tensor_parallel_flag(r, true), "--tensor-parallel-size");
  r.decode_tensor_parallel_size = 1;
  EXPECT_EQ(devices_of(plan_layout(r)), (Devices{"cuda:0,1", "cuda:2"}));
  EXPECT_EQ(role_tensor_parallel_size(r, false), 1);
  EXPECT_EQ(role_tensor_parallel_flag(r, false), "--decode-tensor-parallel-size");
  EXPECT_EQ(role_tensor_parallel_size(r, true), 2);
  r.prefill_tensor_parallel_size = 4;
  EXPECT_EQ(role_tensor_parallel_flag(r, true), "--prefill-tensor-parallel-size");
}

TEST(ServeLayoutTp, OneTpSizeTooWideForTwoSetsSharesOneSetLikeOneGpu) {
  auto plan = plan_layout(tp_request("cuda", 3, 1, 2, 1, 2));  // two sets of two need four GPUs
  EXPECT_EQ(devices_of(plan), (Devices{"cuda:0,1", "cuda:0,1"}));
  EXPECT_EQ(plan[1].share_index, 1);
  EXPECT_EQ(plan[1].share_count, 2);
  EXPECT_NEAR(plan[0].gpu_memory_utilization, 0.45, 1e-12);
  EXPECT_NEAR(plan[1].gpu_memory_utilization, 0.45 / 0.55, 1e-12);
}

TEST(ServeLayoutTp, MoreWorkersThanGpusShareWholeSetsWithinTheirRole) {
  // Seven GPUs' worth of workers on four: prefill gets cuda:0 and cuda:1 (its third worker back on
  // cuda:0), decode cuda:2,3 for both of its workers; no GPU is shared across roles.
  auto plan = plan_layout(tp_request("cuda", 4, 3, 1, 2, 2));
  EXPECT_EQ(devices_of(plan), (Devices{"cuda:0", "cuda:1", "cuda:0", "cuda:2,3", "cuda:2,3"}));
  EXPECT_EQ(plan[2].share_index, 1);
  EXPECT_EQ(plan[4].share_index, 1);
  EXPECT_EQ(plan[4].share_count, 2);
  EXPECT_EQ(plan[1].share_count, 1);
}

TEST(ServeLayoutTp, LayoutsThatDoNotFitAreRefusedNamingWhatTheyNeed) {
  // Different TP sizes cannot share a set: prefill TP 1 + decode TP 2 need three GPUs.
  std::string e = layout_error(tp_request("cuda", 2, 1, 1, 1, 2));
  EXPECT_NE(e.find("need at least 3 GPUs"), std::string::npos) << e;
  EXPECT_NE(e.find("2 visible"), std::string::npos) << e;
  // A worker wider than the machine, naming the flag that set its size.
  e = layout_error(tp_request("cuda", 2, 1, 1, 1, 4));
  EXPECT_NE(e.find("--decode-tensor-parallel-size 4 needs 4 GPUs"), std::string::npos) << e;
  LayoutRequest r = request("cuda", 2);
  r.tensor_parallel_size = 4;
  e = layout_error(r);
  EXPECT_NE(e.find("--tensor-parallel-size 4 needs 4 GPUs"), std::string::npos) << e;
  r.tensor_parallel_size = 0;
  EXPECT_NE(layout_error(r).find("--tensor-parallel-size must be at least 1"), std::string::npos);
}

TEST(ServeLayoutTp, NamedGpuListsMustMatchTheTpSizeAndShareOnlyWholeSets) {
  // --device cuda:0 for a TP 2 decode worker: one GPU named for two ranks.
  std::string e = layout_error(tp_request("cuda:0", 2, 1, 1, 1, 2));
  EXPECT_NE(e.find("--device cuda:0 names 1 GPU(s) for --decode-tensor-parallel-size 2"), std::string::npos) << e;
  LayoutRequest r = tp_request("cuda", 4, 1, 1, 1, 2);
  r.prefill_device = "cuda:3";
  r.decode_device = "cuda:1,0";
  EXPECT_EQ(devices_of(plan_layout(r)), (Devices{"cuda:3", "cuda:1,0"}));
  // Same set in another order: shared, as on one GPU.
  r = tp_request("cuda", 2, 1, 2, 1, 2);
  r.prefill_device = "cuda:0,1";
  r.decode_device = "cuda:1,0";
  auto plan = plan_layout(r);
  EXPECT_EQ(plan[1].share_count, 2);
  EXPECT_EQ(plan[1].share_index, 1);
  // Overlapping sets that differ: refused.
  r = tp_request("cuda", 3, 1, 2, 1, 2);
  r.prefill_device = "cuda:0,1";
  r.decode_device = "cuda:1,2";
  e = layout_error(r);
  EXPECT_NE(e.find("share some GPUs but not all"), std::string::npos) << e;
  r.decode_device = "cuda:2,2";
  EXPECT_NE(layout_error(r).find("named twice"), std::string::npos);
  r.decode_device = "cuda:2,x";
  EXPECT_NE(layout_error(r).find("--decode-device"), std::string::npos);
}

TEST(ServeLayoutTp, CpuWorkersShareTheCoresByRanks) {
  LayoutRequest r = tp_request("cpu", 0, 1, 1, 1, 2);
  r.num_cpu_cores = 6;
  auto plan = plan_layout(r);
  EXPECT_EQ(devices_of(plan), (Devices{"cpu", "cpu"}));
  EXPECT_TRUE(plan[1].gpus.empty());
  EXPECT_EQ(plan[0].threads, 2);  // one rank of three
  EXPECT_EQ(plan[1].threads, 4);  // two ranks of three
  EXPECT_EQ(plan[1].gpu_memory_utilization, 0);
  // Fewer cores than ranks: still a thread a rank.
  r.num_cpu_cores = 2;
  plan = plan_layout(r);
  EXPECT_EQ(plan[0].threads, 1);
  EXPECT_EQ(plan[1].threads, 2);
  // --threads is per worker, as given.
  r.threads = 3;
  plan = plan_layout(r);
  EXPECT_EQ(plan[0].threads, 3);
  EXPECT_EQ(plan[1].threads, 3);
}

TEST(ServeLayoutTp, TheLayoutLineNamesEveryWorkersDevicesAndTpSize) {
  EXPECT_EQ(describe_layout(plan_layout(tp_request("cuda", 6, 2, 1, 1, 2)), 6),
            "prefill-0 cuda:0 (TP1), prefill-1 cuda:1 (TP1), decode-0 cuda:2,3 (TP2); cuda:4,5 unused");
  LayoutRequest r = tp_request("cpu", 0, 1, 2, 1, 1);
  r.num_cpu_cores = 3;
  EXPECT_EQ(describe_layout(plan_layout(r), 0), "prefill-0 cpu (TP2, 2 threads), decode-0 cpu (TP1, 1 thread)");
}

}  // namespace
}  // namespace tandem::cli
