// The TCP transfer backend's pool of idle connections: a receiver that goes away (a decode worker that
// restarts comes back on a new port) leaves nothing open behind in the pusher. Found by
// bench/chaos_soak.py: each decode worker restart left a CLOSE_WAIT socket in every prefill worker.
#include <dirent.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "transfer/transfer.h"

namespace tandem::transfer {
namespace {

int open_fds() {
  int n = 0;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  while (readdir(dir) != nullptr) ++n;
  closedir(dir);
  return n;
}

TEST(TcpTransferPool, ConnectionsToReceiversThatWentAwayAreClosed) {
  auto src = create_tcp_backend(create_host_kv_memory(1, 4, 64), "127.0.0.1", 0);
  const std::vector<BlockCopy> copies = {{0, 0, 1}};
  // Each push goes to a receiver that is gone right after it: its pooled connection is dead.
  auto push_to_a_receiver_that_then_goes = [&](const std::string& id) {
    auto dst = create_tcp_backend(create_host_kv_memory(1, 4, 64), "127.0.0.1", 0);
    dst->expect(id, {1});
    auto stats = src->push(dst->address(), id, copies, 2000);
    ASSERT_TRUE(stats.ok()) << stats.status().to_string();
  };
  push_to_a_receiver_that_then_goes("warm-up");
  const int before = open_fds();
  for (int i = 0; i < 8; ++i) push_to_a_receiver_that_then_goes("t" + std::to_string(i));
  // The last receiver's connection may still be pooled; the seven before it must be closed.
  EXPECT_LE(open_fds(), before + 1);
}

}  // namespace
}  // namespace tandem::transfer
