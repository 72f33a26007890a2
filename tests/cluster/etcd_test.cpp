// The etcd v3 gateway client (src/cluster/etcd.h): encodings against RFC 4648's vectors, and the
// client against a real etcd on loopback (skipped when etcd is not installed, failed in CI), with etcdctl as the
// reference reader and writer; with etcd's authentication on, the client's token, its renewal, and
// what a refused password, a missing user and a role without the prefix come back as.
#include "cluster/etcd.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <thread>

#include "harness.h"
#include "testing/dependencies.h"

namespace tandem::cluster {
namespace {

using testing::EtcdServer;

TEST(Base64, Rfc4648Vectors) {
  // RFC 4648 §10.
  const std::pair<std::string, std::string> cases[] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                                       {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
                                                       {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : cases) {
    EXPECT_EQ(base64_encode(plain), encoded);
    auto back = base64_decode(encoded);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, plain);
  }
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes += static_cast<char>(i);
  EXPECT_EQ(*base64_decode(base64_encode(bytes)), bytes);
  EXPECT_FALSE(base64_decode("Zm9v!").ok());
}

TEST(EtcdUrl, ParsesEndpointsAndRefusesOtherSchemes) {
  auto one = parse_etcd_url("etcd://10.0.0.5:2379");
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].host, "10.0.0.5");
  EXPECT_EQ((*one)[0].port, 2379);
  auto three = parse_etcd_url("etcd://a:1,b:2,c:3");
  ASSERT_TRUE(three.ok());
  EXPECT_EQ(three->size(), 3u);
  EXPECT_FALSE(parse_etcd_url("http://a:1").ok());
  EXPECT_FALSE(parse_etcd_url("etcd://a").ok());
  EXPECT_FALSE(parse_etcd_url("etcd://").ok());
}

TEST(PrefixEnd, IsTheNextKeyAfterThePrefix) {
  EXPECT_EQ(prefix_end("/tandem/ns/"), "/tandem/ns0");  // '/' + 1 == '0'
  EXPECT_EQ(prefix_end("a\xff"), "b");
}

class EtcdClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TANDEM_SKIP_OR_FAIL_IF_MISSING(!EtcdServer::available(), "etcd and etcdctl (Debian packages etcd-server, etcd-client)");
    server_ = std::make_unique<EtcdServer>();
    ASSERT_TRUE(server_->ok());
    auto endpoints = parse_etcd_url(server_->url());
    ASSERT_TRUE(endpoints.ok());
    client_ = std::make_unique<EtcdClient>(*endpoints);
  }
  std::unique_ptr<EtcdServer> server_;
  std::unique_ptr<EtcdClient> client_;
};

TEST_F(EtcdClientTest, PutAndGet_AgreeWithEtcdctl) {
  ASSERT_TRUE(client_->put("/p/a", "{\"x\": 1}").ok());
  ASSERT_TRUE(server_->put("/p/b", "from-etcdctl"));
  ASSERT_TRUE(server_->put("/q", "outside"));
  EXPECT_EQ(server_->get_prefix("/p/")["/p/a"], "{\"x\": 1}");
  auto range = client_->get_prefix("/p/");
  ASSERT_TRUE(range.ok()) << range.status().message();
  ASSERT_EQ(range->kvs.size(), 2u);
  EXPECT_EQ(range->kvs[0].key, "/p/a");
  EXPECT_EQ(range->kvs[1].value, "from-etcdctl");
  EXPECT_GT(range->revision, 0);
  auto missing = client_->get("/nothing");
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(missing->kvs.empty());
  ASSERT_TRUE(client_->delete_key("/p/a").ok());
  EXPECT_EQ(server_->get_prefix("/p/").count("/p/a"), 0u);
}

TEST_F(EtcdClientTest, Lease_KeepsKeysWhileAliveAndRevokeRemovesThem) {
  auto lease = client_->grant_lease(5);
  ASSERT_TRUE(lease.ok()) << lease.status().message();
  ASSERT_TRUE(client_->put("/l/k", "v", *lease).ok());
  auto ttl = client_->keep_alive(*lease);
  ASSERT_TRUE(ttl.ok());
  EXPECT_EQ(*ttl, 5);
  EXPECT_EQ(server_->get_prefix("/l/").count("/l/k"), 1u);
  ASSERT_TRUE(client_->revoke(*lease).ok());
  EXPECT_EQ(server_->get_prefix("/l/").count("/l/k"), 0u);
  auto gone = client_->keep_alive(*lease);
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(*gone, 0);  // the signal to grant a new lease
}

TEST_F(EtcdClientTest, Watcher_SnapshotThenPutsAndDeletes) {
  ASSERT_TRUE(server_->put("/w/before", "1"));
  std::mutex mu;
  std::vector<std::string> seen;
  EtcdWatcher watcher(
      *client_, "/w/",
      [&](const std::vector<KeyValue>& kvs) {
        std::lock_guard<std::mutex> lock(mu);
        for (const auto& kv : kvs) seen.push_back("snapshot " + kv.key + "=" + kv.value);
      },
      [&](const std::vector<WatchEvent>& events) {
        std::lock_guard<std::mutex> lock(mu);
        for (const auto& e : events) seen.push_back((e.deleted ? "delete " : "put ") + e.kv.key + "=" + e.kv.value);
      });
  auto wait_for = [&](size_t n) {
    for (int i = 0; i < 250; ++i) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (seen.size() >= n) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  };
  ASSERT_TRUE(wait_for(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the watch is open once the snapshot is in
  ASSERT_TRUE(server_->put("/w/new", "2"));
  ASSERT_TRUE(server_->put("/x/other", "3"));
  ASSERT_TRUE(client_->delete_key("/w/before").ok());
  ASSERT_TRUE(wait_for(3));
  watcher.stop();
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0], "snapshot /w/before=1");
  EXPECT_EQ(seen[1], "put /w/new=2");
  EXPECT_EQ(seen[2], "delete /w/before=");
}

TEST_F(EtcdClientTest, Unreachable_IsUnavailableNamingTheAddress) {
  server_->stop();
  EtcdClient client({{"127.0.0.1", static_cast<uint16_t>(testing::free_port())}}, 500);
  auto r = client.get("/k");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("127.0.0.1:"), std::string::npos);
}

// etcd with authentication on: root administers (etcdctl logs in as root from then on), user "tandem"
// may read and write /t/ only.
class EtcdAuthClientTest : public EtcdClientTest {
 protected:
  void SetUp() override {
    EtcdClientTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    int status = 0;
    server_->ctl("role add root", &status);  // may exist already
    for (const std::string args :
         {"user add root --new-user-password=rootpw", "user grant-role root root", "role add tandem",
          "role grant-permission tandem readwrite --prefix=true /t/", "user add tandem --new-user-password=tandem-pw",
          "user grant-role tandem tandem", "auth enable"}) {
      const std::string out = server_->ctl(args, &status);
      ASSERT_EQ(status, 0) << args << ": " << out;
    }
    server_->set_ctl_user("root:rootpw");
  }
  EtcdClient client(const std::string& user, const std::string& password) const {
    return EtcdClient(*parse_etcd_url(server_->url()), EtcdCredentials{user, password, nullptr});
  }
};

TEST_F(EtcdAuthClientTest, RightPassword_CallsCarryTheToken_AndANewOneIsTakenWhenEtcdDropsIt) {
  EtcdClient tandem = client("tandem", "tandem-pw");
  ASSERT_TRUE(tandem.check_access("/t/").ok());
  ASSERT_TRUE(tandem.put("/t/a", "1").ok());
  EXPECT_EQ(server_->get_prefix("/t/")["/t/a"], "1");  // read by etcdctl as root
  // Setting the user's password (to the same one) drops every token it has: the next call is refused
  // once, then made again with a new token.
  const std::string password_file = ::testing::TempDir() + "tandem-etcd-pw-" + std::to_string(getpid());
  std::ofstream(password_file) << "tandem-pw\n";
  int status = 0;
  const std::string out = server_->ctl("user passwd tandem --interactive=false < " + password_file, &status);
  std::remove(password_file.c_str());
  ASSERT_EQ(status, 0) << out;
  EtcdClient copy = tandem;  // copies share the token (and so its renewal)
  auto r = copy.get_prefix("/t/");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].value, "1");
  EXPECT_TRUE(tandem.put("/t/b", "2").ok());
  // Outside its role's prefix: refused by etcd, not retried into success.
  EXPECT_FALSE(tandem.put("/elsewhere", "x").ok());
}

TEST_F(EtcdAuthClientTest, RefusalsAreInvalidArgumentSayingWhatToFix) {
  Status wrong = client("tandem", "not-it").check_access("/t/");
  EXPECT_EQ(wrong.code(), StatusCode::kInvalidArgument) << wrong.to_string();
  EXPECT_NE(wrong.message().find("--etcd-password-file"), std::string::npos) << wrong.message();
  EXPECT_NE(wrong.message().find("authentication failed"), std::string::npos) << wrong.message();
  EXPECT_EQ(wrong.message().find("not-it"), std::string::npos) << wrong.message();
  Status anonymous = EtcdClient(*parse_etcd_url(server_->url())).check_access("/t/");
  EXPECT_EQ(anonymous.code(), StatusCode::kInvalidArgument) << anonymous.to_string();
  EXPECT_NE(anonymous.message().find("--etcd-user"), std::string::npos) << anonymous.message();
  Status outside = client("tandem", "tandem-pw").check_access("/other/");
  EXPECT_EQ(outside.code(), StatusCode::kInvalidArgument) << outside.to_string();
  EXPECT_NE(outside.message().find("may not read /other/"), std::string::npos) << outside.message();
  // A call without a user where one is needed says which flags to give.
  auto r = EtcdClient(*parse_etcd_url(server_->url())).get("/t/a");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--etcd-user"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace tandem::cluster
