// `tandem bench serve` against a real `tandem serve` on the CPU demo model: a short run with each dataset
// completes without failures, and the server agrees with the client on prompt lengths. Skipped when this
// build has no `tandem serve` ($TANDEM_SERVE_BINARY may name another build's binary that has it).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "loadgen/openai_client.h"
#include "testing/dependencies.h"

namespace tandem::loadgen {
namespace {

namespace fs = std::filesystem;

std::string serve_binary() {
  const char* env = std::getenv("TANDEM_SERVE_BINARY");
  return env != nullptr && *env != '\0' ? env : TANDEM_BINARY;
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

class TandemServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // `tandem serve --help` exits 0 even without the subcommand (CLI11 prints the top help): look for
    // serve among the listed subcommands instead.
    const std::string probe = serve_binary() + " --help 2>/dev/null | grep -q '^  serve '";
    TANDEM_SKIP_OR_FAIL_IF_MISSING(std::system(probe.c_str()) != 0, "`tandem serve` in " << serve_binary());
    const std::string tokenizer = std::string(TANDEM_DATA_DIR) + "/tokenizers/qwen3";
    TANDEM_SKIP_OR_FAIL_IF_MISSING(!fs::exists(tokenizer + "/tokenizer.json"), tokenizer << " (scripts/fetch_data.sh)");
    dir_ = fs::temp_directory_path() / ("tandem_bench_serve_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    port_ = free_port();
    server_ = ::fork();
    if (server_ == 0) {
      const std::string log = (dir_ / "serve.log").string();
      std::freopen(log.c_str(), "w", stdout);
      std::freopen(log.c_str(), "a", stderr);
      const std::string binary = serve_binary(), port = std::to_string(port_);
      ::execl(binary.c_str(), binary.c_str(), "serve", "--port", port.c_str(), "--threads", "1",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ClientOptions options;
    options.base_url = base_url();
    auto client = OpenAIClient::create(options);
    ASSERT_TRUE(client.ok());
    for (int i = 0; i < 240; ++i) {  // the demo model is made on first use
      if ((*client)->get("/health", 1.0).ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    FAIL() << "tandem serve did not become healthy; see " << (dir_ / "serve.log");
  }

  void TearDown() override {
    if (server_ > 0) {
      ::kill(server_, SIGTERM);
      for (int i = 0; i < 100 && ::waitpid(server_, nullptr, WNOHANG) == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (::kill(server_, 0) == 0) {
        ::kill(server_, SIGKILL);
        ::waitpid(server_, nullptr, 0);
      }
    }
    if (!dir_.empty() && !HasFailure()) fs::remove_all(dir_);
  }

  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // Runs `tandem bench serve` with args and returns its result file.
  nlohmann::json bench(const std::string& name, const std::string& args) {
    const fs::path result = dir_ / (name + ".json");
    const std::string cmd = std::string(TANDEM_BINARY) + " bench serve --base-url " + base_url() + " --tokenizer " +
                            TANDEM_DATA_DIR + "/tokenizers/qwen3 --progress none --ignore-eos --save-result " +
                            result.string() + " " + args + " >" + (dir_ / (name + ".out")).string() + " 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << name << ": see " << dir_ / (name + ".out");
    std::ifstream in(result);
    std::stringstream text;
    text << in.rdbuf();
    return nlohmann::json::parse(text.str(), nullptr, false);
  }

  fs::path dir_;
  int port_ = 0;
  pid_t server_ = -1;
};

TEST_F(TandemServeTest, EveryDatasetRunsWithoutFailures) {
  std::ofstream(dir_ / "prompts.jsonl") << "{\"prompt\": \"Write a haiku about disaggregated serving.\", \"output_len\": 6}\n"
                                         << "{\"conversations\": [{\"from\": \"human\", \"value\": \"Hello!\"}, "
                                            "{\"from\": \"gpt\", \"value\": \"Hi there, how can I help?\"}]}\n";
  struct Case {
    std::string name, args;
    int num_requests;
  };
  const std::vector<Case> cases = {
      {"random", "--dataset-name random --random-input-len 48 --random-output-len 4 --num-prompts 4 --request-rate 20", 4},
      {"prefix", "--dataset-name prefix --prefix-len 48 --prefix-suffix-len 8 --prefix-num-prefixes 2 "
                 "--prefix-output-len 4 --num-prompts 4", 4},
      {"jsonl", "--dataset-name jsonl --dataset-path " + (dir_ / "prompts.jsonl").string() + " --num-prompts 2", 2},
      {"chat", "--dataset-name random --random-input-len 32 --random-output-len 4 --num-prompts 2 "
               "--endpoint /v1/chat/completions", 2},
  };
  for (const Case& c : cases) {
    nlohmann::json doc = bench(c.name, c.args);
    ASSERT_TRUE(doc.is_object()) << c.name;
    const auto& run = doc["runs"][0];
    EXPECT_EQ(run["completed"], c.num_requests) << c.name << " " << run["failures"].dump();
    EXPECT_EQ(run["failed"], 0) << c.name << " " << run["failures"].dump();
    if (c.name != "chat") {
      EXPECT_EQ(run["prompt_len_mismatches"], 0) << c.name;
    }
    EXPECT_TRUE(run["server_metrics_delta"].is_object()) << c.name;
    if (c.name == "random") {
      EXPECT_EQ(run["total_output_tokens"], 16);
    }
  }
}

}  // namespace
}  // namespace tandem::loadgen
