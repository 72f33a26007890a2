// The CUDA IPC path's choice and fallback rules, without a GPU (fake device memory): which transport a
// push takes, that an unopenable peer falls back to TCP once and for good, and that forget() waits for
// a device copy in flight.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

#include "fake_device_memory.h"
#include "testing/wait.h"
#include "transfer/expectations.h"
#include "transfer/transfer.h"
#include "transfer/transport_choice.h"

namespace tandem::transfer {
namespace {

using testing::FakeDeviceMemory;

constexpr size_t kBlockBytes = 256;

std::vector<std::byte> filled(uint8_t value) { return std::vector<std::byte>(kBlockBytes, static_cast<std::byte>(value)); }

TEST(PeerAddress, ParsesTcpOnlyAndDeviceAddresses) {
  PeerAddress plain = parse_peer_address("tcp://10.0.0.7:5555");
  EXPECT_EQ(plain.tcp, "10.0.0.7:5555");
  EXPECT_TRUE(plain.device_handles.empty());
  PeerAddress dev = parse_peer_address("tcp://127.0.0.1:41234;cuda_ipc=boot-1234/kvx1,cuda:0,0,0000:19:00.0,42");
  EXPECT_EQ(dev.tcp, "127.0.0.1:41234");
  EXPECT_EQ(dev.host_id, "boot-1234");
  EXPECT_EQ(dev.device_handles, "kvx1,cuda:0,0,0000:19:00.0,42");
  // Unknown parts are ignored, so older pushers and newer receivers interoperate.
  PeerAddress extra = parse_peer_address("tcp://h:1;rdma=xyz;cuda_ipc=b/d");
  EXPECT_EQ(extra.tcp, "h:1");
  EXPECT_EQ(extra.host_id, "b");
  EXPECT_EQ(extra.device_handles, "d");
  EXPECT_EQ(format_address("h:1", "b", "d"), "tcp://h:1;cuda_ipc=b/d");
  EXPECT_EQ(format_address("h:1", "b", ""), "tcp://h:1");
}

TEST(ChooseTransport, CudaIpcOnlyOnTheSameHostWithAReachableDevice) {
  FakeDeviceMemory mem(1, 4, kBlockBytes);
  PeerAddress peer{"127.0.0.1:1", "host-a", "fakedev-peer"};
  EXPECT_EQ(choose_transport(peer, "host-a", true, mem, false).transport, Transport::kCudaIpc);
  EXPECT_EQ(choose_transport(peer, "host-b", true, mem, false).reason, "other_host");
  EXPECT_EQ(choose_transport(peer, "host-a", false, mem, false).reason, "no_local_device_path");
  EXPECT_EQ(choose_transport(peer, "host-a", true, mem, true).reason, "device_handles_failed_before");
  EXPECT_EQ(choose_transport(PeerAddress{"127.0.0.1:1", "", ""}, "host-a", true, mem, false).reason, "peer_has_no_device_path");
  mem.reachable = false;  // e.g. two GPUs without peer access
  EXPECT_EQ(choose_transport(peer, "host-a", true, mem, false).reason, "device_not_reachable");
}

TEST(CudaIpcPath, HostMemoryGetsPlainTcp) {
  auto backend = create_transfer_backend("auto", create_host_kv_memory(1, 4, kBlockBytes), "127.0.0.1", 0);
  EXPECT_EQ(backend->name(), "tcp");
  EXPECT_EQ(backend->address().find(';'), std::string::npos);
  EXPECT_THROW(create_transfer_backend("cuda_ipc", create_host_kv_memory(1, 4, kBlockBytes), "127.0.0.1", 0), std::exception);
  EXPECT_THROW(create_transfer_backend("rdma", create_host_kv_memory(1, 4, kBlockBytes), "127.0.0.1", 0), std::exception);
}

struct Pair {
  std::shared_ptr<FakeDeviceMemory> src_mem = std::make_shared<FakeDeviceMemory>(2, 8, kBlockBytes);
  std::shared_ptr<FakeDeviceMemory> dst_mem = std::make_shared<FakeDeviceMemory>(2, 8, kBlockBytes);
  std::unique_ptr<TransferBackend> src;
  std::unique_ptr<TransferBackend> dst;
  std::vector<BlockCopy> copies = {{0, 1, 5}, {1, 1, 5}, {0, 2, 6}, {1, 2, 6}};
  explicit Pair(const std::string& src_kind = "auto", const std::string& dst_kind = "auto") {
    src = create_transfer_backend(src_kind, src_mem, "127.0.0.1", 0);
    dst = create_transfer_backend(dst_kind, dst_mem, "127.0.0.1", 0);
    for (int layer = 0; layer < 2; ++layer) {
      for (int b = 1; b <= 2; ++b) EXPECT_TRUE(src_mem->write_block(layer, b, filled(static_cast<uint8_t>(10 * layer + b))).ok());
    }
  }
  void expect_landed() {
    std::vector<std::byte> got(kBlockBytes);
    for (int layer = 0; layer < 2; ++layer) {
      for (int b = 1; b <= 2; ++b) {
        ASSERT_TRUE(dst_mem->read_block(layer, b + 4, got).ok());
        EXPECT_EQ(got, filled(static_cast<uint8_t>(10 * layer + b))) << "layer " << layer << " block " << b;
      }
    }
  }
};

TEST(CudaIpcPath, DeviceMemoryOnOneHostCopiesDeviceToDevice) {
  Pair p;
  EXPECT_EQ(p.src->name(), "cuda_ipc");
  EXPECT_NE(p.dst->address().find(";cuda_ipc="), std::string::npos);
  p.dst->expect("r1", {5, 6});
  auto stats = p.src->push(p.dst->address(), "r1", p.copies, 2000);
  ASSERT_TRUE(stats.ok()) << stats.status().to_string();
  EXPECT_EQ(stats->transport, "cuda_ipc");
  EXPECT_EQ(stats->num_blocks, 4);
  EXPECT_EQ(stats->num_bytes, static_cast<int64_t>(4 * kBlockBytes));
  EXPECT_GT(stats->seconds, 0);
  EXPECT_EQ(p.src_mem->copy_calls.load(), 1);
  p.expect_landed();
  p.dst->forget("r1");  // returns at once: the claim was released
}

TEST(CudaIpcPath, UnopenablePeerFallsBackToTcpForGood) {
  Pair p;
  p.src_mem->unopenable = true;
  p.dst->expect("r2", {5, 6});
  auto first = p.src->push(p.dst->address(), "r2", p.copies, 2000);
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  EXPECT_EQ(first->transport, "tcp");
  p.expect_landed();
  auto second = p.src->push(p.dst->address(), "r2", p.copies, 2000);
  ASSERT_TRUE(second.ok()) << second.status().to_string();
  EXPECT_EQ(second->transport, "tcp");
  EXPECT_EQ(p.src_mem->copy_calls.load(), 1) << "a peer whose handles failed is not tried again";
}

TEST(CudaIpcPath, UnreachableDeviceOrOtherHostUsesTcp) {
  Pair p;
  p.src_mem->reachable = false;
  p.dst->expect("r3", {5, 6});
  auto stats = p.src->push(p.dst->address(), "r3", p.copies, 2000);
  ASSERT_TRUE(stats.ok()) << stats.status().to_string();
  EXPECT_EQ(stats->transport, "tcp");
  p.expect_landed();

  Pair q;
  PeerAddress a = parse_peer_address(q.dst->address());
  std::string elsewhere = format_address(a.tcp, a.host_id + "-other", a.device_handles);
  q.dst->expect("r4", {5, 6});
  auto other = q.src->push(elsewhere, "r4", q.copies, 2000);
  ASSERT_TRUE(other.ok()) << other.status().to_string();
  EXPECT_EQ(other->transport, "tcp");
  EXPECT_EQ(q.src_mem->copy_calls.load(), 0);
  q.expect_landed();
}

TEST(CudaIpcPath, TcpOnlyPusherReachesADeviceReceiver) {
  Pair p("tcp", "auto");
  p.dst->expect("r5", {5, 6});
  auto stats = p.src->push(p.dst->address(), "r5", p.copies, 2000);
  ASSERT_TRUE(stats.ok()) << stats.status().to_string();
  EXPECT_EQ(stats->transport, "tcp");
  p.expect_landed();
}

TEST(CudaIpcPath, RefusedClaimCopiesNothing) {
  Pair p;
  auto stats = p.src->push(p.dst->address(), "r6", p.copies, 2000);
  EXPECT_EQ(stats.status().code(), StatusCode::kNotFound) << stats.status().to_string();
  EXPECT_EQ(p.src_mem->copy_calls.load(), 0);
}

TEST(Expectations, ForgetWaitsForAClaimInFlight) {
  Expectations e;
  e.expect("x", {1, 2});
  std::vector<int32_t> blocks = {1, 2};
  ASSERT_TRUE(e.claim("x", blocks).ok());
  auto forgot = std::async(std::launch::async, [&] { e.forget("x"); });
  // forget() has begun once a new claim is refused; until then a new claim succeeds and is given back.
  EXPECT_TRUE(tandem::testing::wait_until([&] {
    const Status s = e.claim("x", blocks);
    if (s.ok()) e.release("x");
    return s.code() == StatusCode::kNotFound;
  })) << "no new claim once forget began";
  // Begun, it waits for the claim still held; a forget() that did not wait would be done by now.
  EXPECT_EQ(forgot.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  e.release("x");
  EXPECT_EQ(forgot.wait_for(std::chrono::seconds(5)), std::future_status::ready);
}

}  // namespace
}  // namespace tandem::transfer
