// Cluster mode against an etcd with authentication on (issue 20): a real etcd started by the test,
// its users and roles made with etcdctl (the reference client), then auth enabled. A frontend and
// workers given --etcd-user/--etcd-password-file register, find each other and serve a remote
// prefill; once etcd has dropped their tokens (a password reset to the same password invalidates all
// of the user's tokens) and restarted, the running processes take new tokens by themselves. A wrong password, a missing user, a role without the namespace and credentials in the
// URL are CLI errors naming the flag, quickly, with the password in no output.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "harness.h"
#include "start_refusal.h"
#include "testing/dependencies.h"

namespace tandem::testing {
namespace {

namespace fs = std::filesystem;

// JSON-special and URL-special characters: the password must reach etcd byte for byte. (No blank:
// `etcdctl user passwd --interactive=false` reads one word.)
const std::string kPassword = R"(p@ss"w\ord:1/x)";
const std::string kRootPassword = "root-pw-for-the-test";

class EtcdAuth : public ::testing::Test {
 protected:
  void SetUp() override {
    TANDEM_SKIP_OR_FAIL_IF_MISSING(!EtcdServer::available(), "etcd and etcdctl (Debian packages etcd-server, etcd-client)");
    char tmpl[] = "/tmp/tandem-etcd-auth-XXXXXX";
    dir_ = mkdtemp(tmpl);
    etcd_ = std::make_unique<EtcdServer>();
    ASSERT_TRUE(etcd_->ok()) << "etcd did not start";
    // The user Tandem runs as may read and write its namespace only; root administers.
    int status = 0;
    etcd_->ctl("role add root", &status);  // may exist already
    for (const std::string& args :
         {"user add root --new-user-password='" + kRootPassword + "'", std::string("user grant-role root root"),
          std::string("role add tandem"), "role grant-permission tandem readwrite --prefix=true /tandem/" + ns_ + "/",
          "user add tandem --new-user-password='" + kPassword + "'", std::string("user grant-role tandem tandem"),
          std::string("role add reader"), std::string("role grant-permission reader read --prefix=true /other/"),
          std::string("user add outsider --new-user-password=outsider-pw"), std::string("user grant-role outsider reader"),
          std::string("auth enable")}) {
      const std::string out = etcd_->ctl(args, &status);
      ASSERT_EQ(status, 0) << "etcdctl " << args << ": " << out;
    }
    etcd_->set_ctl_user("root:" + kRootPassword);
    password_file_ = write("password", kPassword + "\n");
  }
  void TearDown() override {
    etcd_.reset();
    fs::remove_all(dir_);
  }
  std::string write(const std::string& name, const std::string& contents) {
    std::ofstream(dir_ + "/" + name) << contents;
    return dir_ + "/" + name;
  }
  std::vector<std::string> registry_args(const std::string& password_file) const {
    return {"--registry", etcd_->url(), "--namespace", ns_, "--etcd-user", "tandem", "--etcd-password-file", password_file};
  }
  std::string key(const std::string& rest) const { return "/tandem/" + ns_ + "/" + rest; }

  std::string dir_;
  std::unique_ptr<EtcdServer> etcd_;
  std::string password_file_;
  const std::string ns_ = "auth";
};

std::string long_prompt(int seed) {
  return R"({"prompt":[)" + random_prompt_ids(40, seed) + R"(],"max_tokens":4})";
}

TEST_F(EtcdAuth, RightPassword_RegisterDiscoverServe_AndNewTokensOnceEtcdDropsThem) {
  std::vector<std::string> frontend = registry_args(password_file_);
  frontend.insert(frontend.end(), {"--max-local-prefill", "16"});
  Cluster cluster(frontend);
  ASSERT_NE(cluster.http_port(), 0) << cluster.log("frontend");
  std::vector<std::string> workers = registry_args(password_file_);
  workers.insert(workers.end(), {"--lease-ttl", "30"});
  cluster.set_worker_registry(workers);
  cluster.add_worker("prefill", {"--engine", "fake"});
  cluster.add_worker("decode", {"--engine", "fake"});
  ASSERT_TRUE(cluster.wait_for_workers(2)) << cluster.log("frontend") << cluster.log("decode-1");
  // The records are in etcd (read as root with etcdctl), and etcd refuses them to a reader without a user.
  EXPECT_EQ(etcd_->get_prefix(key("workers/")).size(), 2u);
  int status = 0;
  const std::string anonymous = shell("ETCDCTL_API=3 " + find_program("etcdctl") + " --endpoints=" + etcd_->endpoint() +
                                          " get --prefix /tandem/ 2>&1",
                                      &status);
  EXPECT_NE(status, 0) << anonymous;
  EXPECT_EQ(cluster.post("/v1/completions", long_prompt(1)).status, 200);
  EXPECT_EQ(cluster.metric("tandem_remote_prefills_total"), 1) << cluster.log("frontend");

  // etcd drops every token of the user (its password set again, to the same one; etcd replays tokens
  // from its log on a restart, so a restart alone does not), then restarts, which breaks the frontend's
  // watch. The frontend's new snapshot read and the prefill worker's read of a new decode worker's KV
  // descriptor must each take a new token by themselves.
  std::string out = etcd_->ctl("user passwd tandem --interactive=false < " + password_file_, &status);
  ASSERT_EQ(status, 0) << out;
  etcd_->stop();
  ASSERT_TRUE(etcd_->start());
  cluster.worker(1).terminate();  // decode-1 leaves: the next remote prefill goes to decode-2
  cluster.add_worker("decode", {"--engine", "fake"});
  // Listed from the watch (which reads etcd again after the restart, with a new token), then dialed.
  ASSERT_TRUE(eventually([&] { return cluster.log("frontend").find("event=worker_registered worker_id=decode-2") != std::string::npos; },
                         60000, 100))
      << cluster.log("frontend") << cluster.log("decode-2");
  ASSERT_TRUE(cluster.wait_for_workers(2));
  EXPECT_EQ(cluster.post("/v1/completions", long_prompt(2)).status, 200);
  EXPECT_NE(cluster.log("prefill-0").find("event=kv_descriptor_read peer=decode-2"), std::string::npos)
      << cluster.log("prefill-0");
  EXPECT_NE(cluster.log("frontend").find("event=etcd_token_refused"), std::string::npos) << cluster.log("frontend");
  EXPECT_NE(cluster.log("prefill-0").find("event=etcd_token_refused"), std::string::npos) << cluster.log("prefill-0");
  EXPECT_EQ(cluster.metric("tandem_remote_prefill_fallbacks_total"), 0);
  const std::string logs = cluster.log("frontend") + cluster.log("prefill-0") + cluster.log("decode-1") + cluster.log("decode-2");
  EXPECT_EQ(logs.find(kPassword), std::string::npos) << "the password reached a log";
}

// Each is a start that must fail at once (before a model loads or a port opens), naming what to fix.
TEST_F(EtcdAuth, RefusedCredentialsAreCliErrorsNamingTheFlag_NoHang) {
  const std::string wrong = write("wrong", "not-the-password\n");
  const std::string empty = write("empty", "\n");
  const std::string outsider = write("outsider", "outsider-pw");
  const std::string url = etcd_->url();
  const std::string ns = " --namespace " + ns_;
  struct Case {
    std::string args;
    std::vector<std::string> expect;
  };
  const std::vector<Case> cases = {
      {"--registry " + url + ns + " --etcd-user tandem --etcd-password-file " + wrong,
       {"--etcd-user", "--etcd-password-file", "authentication failed"}},
      {"--registry " + url + ns, {"--etcd-user", "--etcd-password-file", "authentication on"}},
      {"--registry " + url + ns + " --etcd-user outsider --etcd-password-file " + outsider,
       {"'outsider'", "may not read /tandem/" + ns_ + "/"}},
      {"--registry " + url + ns + " --etcd-user tandem --etcd-password-file " + empty, {"--etcd-password-file", "empty"}},
      {"--registry " + url + ns + " --etcd-user tandem", {"--etcd-user", "--etcd-password-file"}},
      {"--registry etcd://tandem:hunter2@" + etcd_->endpoint() + ns, {"--registry", "--etcd-user"}},
  };
  for (const auto& c : cases) {
    for (const std::string& out : expect_start_refused(c.args, c.expect)) {
      EXPECT_EQ(out.find("not-the-password"), std::string::npos) << out;
      EXPECT_EQ(out.find("hunter2"), std::string::npos) << out;
    }
  }
}

}  // namespace
}  // namespace tandem::testing
