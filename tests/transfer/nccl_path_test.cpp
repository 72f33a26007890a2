// The NCCL KV path without GPUs: the address part that offers it, the choice between CUDA IPC, NCCL and
// TCP (auto picks NCCL where CUDA IPC cannot reach and both sides offer it; --kv-transfer nccl puts it
// first; never two ranks on one GPU), and the handshake over real TCP connections with fake links: blocks
// land in order, a link is made once per pair and reused, a refused claim sends nothing, and a peer
// without NCCL or a link that fails falls back to TCP for good.
#include <gtest/gtest.h>

#include "fake_device_memory.h"
#include "common/error.h"
#include "fake_link_memory.h"
#include "transfer/transfer.h"
#include "transfer/transport_choice.h"

namespace tandem::transfer {
namespace {

constexpr size_t kBlockBytes = 512;

std::vector<std::byte> pattern(int layer, int block) {
  std::vector<std::byte> bytes(kBlockBytes);
  for (size_t i = 0; i < kBlockBytes; ++i) bytes[i] = static_cast<std::byte>((layer * 29 + block * 11 + i) & 0xff);
  return bytes;
}

TEST(NcclAddress, CarriesTheHostAndTheGpuAndRoundTrips) {
  const std::string a = format_address("10.0.0.2:4000", "boot-1", "", "0000:19:00.0");
  EXPECT_EQ(a, "tcp://10.0.0.2:4000;nccl=boot-1/0000:19:00.0");
  PeerAddress p = parse_peer_address(a);
  EXPECT_EQ(p.tcp, "10.0.0.2:4000");
  EXPECT_EQ(p.nccl_host, "boot-1");
  EXPECT_EQ(p.nccl_device, "0000:19:00.0");
  EXPECT_TRUE(p.device_handles.empty());
  PeerAddress both = parse_peer_address(format_address("h:1", "boot-1", "HANDLES", "0000:3b:00.0"));
  EXPECT_EQ(both.device_handles, "HANDLES");
  EXPECT_EQ(both.nccl_device, "0000:3b:00.0");
  // Malformed or absent parts offer nothing; unknown parts are ignored.
  EXPECT_TRUE(parse_peer_address("tcp://h:1;nccl=noslash").nccl_device.empty());
  EXPECT_TRUE(parse_peer_address("tcp://h:1;nccl=/x").nccl_device.empty());
  EXPECT_EQ(parse_peer_address("tcp://h:1;future=1;nccl=b/0000:01:00.0").nccl_device, "0000:01:00.0");
  EXPECT_EQ(format_address("h:1", "boot", ""), "tcp://h:1");
}

TEST(NcclChoice, AutoTakesNcclOnlyWhereCudaIpcCannotReach) {
  testing::FakeDeviceMemory memory(1, 4, kBlockBytes);
  const LocalPaths local{.cuda_ipc = true, .nccl_device = "0000:19:00.0", .nccl_first = false};
  PeerAddress same_host = parse_peer_address(format_address("h:1", "boot", "fakedev0", "0000:3b:00.0"));
  // Reachable on this host: CUDA IPC, as before.
  EXPECT_EQ(choose_transport(same_host, "boot", local, memory, false, false).transport, Transport::kCudaIpc);
  // Not reachable (another container's GPU): NCCL.
  memory.reachable = false;
  TransportChoice c = choose_transport(same_host, "boot", local, memory, false, false);
  EXPECT_EQ(c.transport, Transport::kNccl);
  EXPECT_EQ(c.reason, "device_not_reachable_nccl");
  // Another host: NCCL.
  PeerAddress other = parse_peer_address(format_address("h:1", "boot-2", "fakedev0", "0000:19:00.0"));
  c = choose_transport(other, "boot", local, memory, false, false);
  EXPECT_EQ(c.transport, Transport::kNccl);
  EXPECT_EQ(c.reason, "other_host_nccl");
  // The peer offers no NCCL, or its link failed before: TCP.
  PeerAddress no_nccl = parse_peer_address(format_address("h:1", "boot-2", "fakedev0"));
  EXPECT_EQ(choose_transport(no_nccl, "boot", local, memory, false, false).transport, Transport::kTcp);
  c = choose_transport(other, "boot", local, memory, false, true);
  EXPECT_EQ(c.transport, Transport::kTcp);
  EXPECT_EQ(c.reason, "nccl_failed_before");
  // This side has no NCCL: TCP.
  EXPECT_EQ(choose_transport(other, "boot", LocalPaths{.cuda_ipc = true, .nccl_device = "", .nccl_first = false}, memory,
                             false, false)
                .transport,
            Transport::kTcp);
  // One GPU on both sides (NCCL refuses two ranks on one GPU): never NCCL.
  PeerAddress same_gpu = parse_peer_address(format_address("h:1", "boot", "fakedev0", "0000:19:00.0"));
  EXPECT_EQ(choose_transport(same_gpu, "boot", local, memory, false, false).transport, Transport::kTcp);
}

TEST(NcclChoice, RequestedNcclComesFirstButNeverOnOneGpu) {
  testing::FakeDeviceMemory memory(1, 4, kBlockBytes);
  const LocalPaths local{.cuda_ipc = true, .nccl_device = "0000:19:00.0", .nccl_first = true};
  PeerAddress reachable = parse_peer_address(format_address("h:1", "boot", "fakedev0", "0000:3b:00.0"));
  TransportChoice c = choose_transport(reachable, "boot", local, memory, false, false);
  EXPECT_EQ(c.transport, Transport::kNccl);
  EXPECT_EQ(c.reason, "nccl_requested");
  PeerAddress same_gpu = parse_peer_address(format_address("h:1", "boot", "fakedev0", "0000:19:00.0"));
  c = choose_transport(same_gpu, "boot", local, memory, false, false);
  EXPECT_EQ(c.transport, Transport::kCudaIpc) << "one GPU: CUDA IPC still serves it";
  c = choose_transport(same_gpu, "boot", LocalPaths{.cuda_ipc = false, .nccl_device = "0000:19:00.0", .nccl_first = true},
                       memory, false, false);
  EXPECT_EQ(c.transport, Transport::kTcp);
  EXPECT_EQ(c.reason, "same_gpu_no_nccl");
}

TEST(NcclChoice, FailedCudaIpcMovesToNcclAndAFailedLinkToTcp) {
  testing::FakeDeviceMemory memory(1, 4, kBlockBytes);
  PeerTransports transports("boot", LocalPaths{.cuda_ipc = true, .nccl_device = "0000:19:00.0", .nccl_first = false});
  const std::string address = format_address("h:1", "boot", "fakedev0", "0000:3b:00.0");
  const PeerAddress peer = parse_peer_address(address);
  EXPECT_EQ(transports.choose(address, peer, memory).transport, Transport::kCudaIpc);
  transports.mark_failed(address, "cudaIpcOpenMemHandle failed");
  EXPECT_EQ(transports.choose(address, peer, memory).transport, Transport::kNccl);
  transports.mark_link_failed(address, "ncclCommInitRank failed");
  TransportChoice c = transports.choose(address, peer, memory);
  EXPECT_EQ(c.transport, Transport::kTcp);
  EXPECT_EQ(c.reason, "nccl_failed_before");
  // Without NCCL on this side a failed CUDA IPC goes to TCP, as it always did.
  PeerTransports ipc_only("boot", true);
  EXPECT_EQ(ipc_only.choose(address, peer, memory).transport, Transport::kCudaIpc);
  ipc_only.mark_failed(address, "x");
  EXPECT_EQ(ipc_only.choose(address, peer, memory).reason, "device_handles_failed_before");
}

// A prefill-side and a decode-side backend over fake link memories on "different GPUs".
struct LinkPair {
  std::shared_ptr<testing::FakeLinkMemory> src_mem = std::make_shared<testing::FakeLinkMemory>(2, 16, kBlockBytes, "0000:19:00.0");
  std::shared_ptr<testing::FakeLinkMemory> dst_mem = std::make_shared<testing::FakeLinkMemory>(2, 16, kBlockBytes, "0000:3b:00.0");
  std::unique_ptr<TransferBackend> src, dst;
  std::vector<BlockCopy> copies;

  explicit LinkPair(const std::string& src_kind = "nccl", const std::string& dst_kind = "nccl") {
    src = create_transfer_backend(src_kind, src_mem, "127.0.0.1", 0);
    dst = create_transfer_backend(dst_kind, dst_mem, "127.0.0.1", 0);
    for (int layer = 0; layer < 2; ++layer) {
      for (int b = 0; b < 3; ++b) {
        EXPECT_TRUE(src_mem->write_block(layer, b, pattern(layer, b)).ok());
        // Out of order on purpose: the receiver places blocks by the claim's order, not by number.
        copies.push_back({layer, b, 9 - 2 * b});
      }
    }
  }
  void expect_landed() {
    std::vector<std::byte> got(kBlockBytes);
    for (const BlockCopy& c : copies) {
      ASSERT_TRUE(dst_mem->read_block(c.layer, c.dst_block, got).ok());
      EXPECT_EQ(got, pattern(c.layer, c.src_block)) << "layer " << c.layer << " block " << c.dst_block;
    }
  }
};

TEST(NcclPath, BlocksMoveOverOneLinkPerPairReusedAcrossPushes) {
  LinkPair p;
  EXPECT_EQ(p.src->name(), "nccl");
  EXPECT_NE(p.dst->address().find(";nccl="), std::string::npos);
  p.dst->expect("n1", {9, 7, 5});
  auto stats = p.src->push(p.dst->address(), "n1", p.copies, 2000);
  ASSERT_TRUE(stats.ok()) << stats.status().to_string();
  EXPECT_EQ(stats->transport, "nccl");
  EXPECT_EQ(stats->num_blocks, 6);
  EXPECT_EQ(stats->num_bytes, static_cast<int64_t>(6 * kBlockBytes));
  p.expect_landed();
  p.dst->forget("n1");  // returns at once: the receiver released its claim
  p.dst->expect("n2", {9, 7, 5});
  auto again = p.src->push(p.dst->address(), "n2", p.copies, 2000);
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ(again->transport, "nccl");
  EXPECT_EQ(p.src_mem->opens.load(), 1) << "the pair's link is made once";
  EXPECT_EQ(p.dst_mem->opens.load(), 1);
  EXPECT_EQ(p.src_mem->sends.load(), 2);
}

TEST(NcclPath, RefusedClaimSendsNothing) {
  LinkPair p;
  auto unknown = p.src->push(p.dst->address(), "nope", p.copies, 2000);
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound) << unknown.status().to_string();
  p.dst->expect("n3", {9, 7});  // block 5 was not reserved for this transfer
  auto outside = p.src->push(p.dst->address(), "n3", p.copies, 2000);
  EXPECT_EQ(outside.status().code(), StatusCode::kInvalidArgument) << outside.status().to_string();
  EXPECT_EQ(p.src_mem->sends.load(), 0);
  EXPECT_EQ(p.src_mem->opens.load(), 0);
}

TEST(NcclPath, FailingLinkFallsBackToTcpForGood) {
  LinkPair p;
  p.src_mem->fail_send = true;
  p.dst->expect("n4", {9, 7, 5});
  auto first = p.src->push(p.dst->address(), "n4", p.copies, 500);
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  EXPECT_EQ(first->transport, "tcp");
  p.expect_landed();
  auto second = p.src->push(p.dst->address(), "n4", p.copies, 500);
  ASSERT_TRUE(second.ok()) << second.status().to_string();
  EXPECT_EQ(second->transport, "tcp");
  EXPECT_EQ(p.src_mem->sends.load(), 1) << "a peer whose link failed is not tried again";
  p.dst->forget("n4");
}

TEST(NcclPath, LinkThatCannotBeMadeFallsBackToTcp) {
  LinkPair p;
  p.src_mem->fail_open = true;
  p.dst->expect("n5", {9, 7, 5});
  auto stats = p.src->push(p.dst->address(), "n5", p.copies, 500);
  ASSERT_TRUE(stats.ok()) << stats.status().to_string();
  EXPECT_EQ(stats->transport, "tcp");
  p.expect_landed();
  p.dst->forget("n5");
}

TEST(NcclPath, AutoUsesNcclBetweenGpusThatCannotMapEachOther) {
  LinkPair p("auto", "auto");
  EXPECT_NE(p.dst->address().find(";nccl="), std::string::npos);
  p.dst->expect("n6", {9, 7, 5});
  auto stats = p.src->push(p.dst->address(), "n6", p.copies, 2000);
  ASSERT_TRUE(stats.ok()) << stats.status().to_string();
  EXPECT_EQ(stats->transport, "nccl");
  p.expect_landed();
}

TEST(NcclPath, ReceiverWithoutNcclGetsTcp) {
  auto src_mem = std::make_shared<testing::FakeLinkMemory>(2, 16, kBlockBytes, "0000:19:00.0");
  auto dst_mem = create_host_kv_memory(2, 16, kBlockBytes);
  auto src = create_transfer_backend("nccl", src_mem, "127.0.0.1", 0);
  auto dst = create_transfer_backend("auto", dst_mem, "127.0.0.1", 0);
  EXPECT_EQ(dst->address().find(";nccl="), std::string::npos);
  ASSERT_TRUE(src_mem->write_block(0, 1, pattern(0, 1)).ok());
  dst->expect("n7", {4});
  std::vector<BlockCopy> copies = {{0, 1, 4}};
  auto stats = src->push(dst->address(), "n7", copies, 2000);
  ASSERT_TRUE(stats.ok()) << stats.status().to_string();
  EXPECT_EQ(stats->transport, "tcp");
  std::vector<std::byte> got(kBlockBytes);
  ASSERT_TRUE(dst_mem->read_block(0, 4, got).ok());
  EXPECT_EQ(got, pattern(0, 1));
  // A receiver that lies about its NCCL path (advertised, then refuses the frame) sends the pusher to TCP too.
  PeerAddress a = parse_peer_address(dst->address());
  auto pretended = src->push(format_address(a.tcp, "boot-x", "", "0000:aa:00.0"), "n7", copies, 2000);
  ASSERT_TRUE(pretended.ok()) << pretended.status().to_string();
  EXPECT_EQ(pretended->transport, "tcp");
}

TEST(NcclPath, RequestedWithoutANcclPathIsRefusedNamingTheFlag) {
  try {
    create_transfer_backend("nccl", create_host_kv_memory(1, 4, kBlockBytes), "127.0.0.1", 0);
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--kv-transfer nccl"), std::string::npos) << e.what();
  }
  try {
    create_transfer_backend("rdma", create_host_kv_memory(1, 4, kBlockBytes), "127.0.0.1", 0);
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("auto, tcp, cuda_ipc or nccl"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tandem::transfer
