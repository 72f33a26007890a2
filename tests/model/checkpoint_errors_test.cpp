// Malformed model directories: each gives an error naming the file and the tensor, both from the
// library and from the `tandem` binary, which must exit non-zero without crashing.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "model/checkpoint.h"
#include "model/safetensors.h"
#include "model/safetensors_writer.h"

namespace tandem::model {
namespace {
namespace fs = std::filesystem;

const fs::path kModels = fs::path(TANDEM_TEST_DATA_DIR) / "models";

class CheckpointErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tandem_ckpt_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path copy_fixture(const std::string& name) {
    fs::copy(kModels / name, dir_, fs::copy_options::recursive);
    for (auto& entry : fs::directory_iterator(dir_)) fs::permissions(entry.path(), fs::perms::owner_all, fs::perm_options::add);
    return dir_;
  }

  // The error from opening and validating `dir`, "" when it loads.
  static std::string load_error(const fs::path& dir) {
    try {
      Checkpoint checkpoint(dir);
      checkpoint.validate();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  // Runs `tandem generate` on `dir`; returns {exit status, output}.
  static std::pair<int, std::string> run_generate(const fs::path& dir) {
    std::string cmd = std::string(TANDEM_BINARY) + " generate --model " + dir.string() + " --prompt-ids 1,2 --max-tokens 2 2>&1";
    FILE* pipe = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[512];
    while (size_t n = std::fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
    int status = ::pclose(pipe);
    EXPECT_TRUE(WIFEXITED(status)) << "tandem crashed: " << out;
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
  }

  void expect_named(const fs::path& dir, const std::vector<std::string>& fragments) {
    std::string error = load_error(dir);
    ASSERT_FALSE(error.empty()) << "loaded without error";
    for (const auto& f : fragments) EXPECT_NE(error.find(f), std::string::npos) << "missing '" << f << "' in: " << error;
    auto [code, out] = run_generate(dir);
    EXPECT_EQ(code, 1) << out;
    for (const auto& f : fragments) EXPECT_NE(out.find(f), std::string::npos) << "missing '" << f << "' in CLI output: " << out;
  }

  fs::path dir_;
};

TEST_F(CheckpointErrors, FixtureLoads) {
  EXPECT_EQ(load_error(copy_fixture("qwen3_gqa")), "");
}

TEST_F(CheckpointErrors, UnknownArchitecture) {
  fs::path dir = copy_fixture("qwen3_gqa");
  nlohmann::json config = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  config["architectures"] = {"GPT2LMHeadModel"};
  std::ofstream(dir / "config.json") << config.dump();
  expect_named(dir, {(dir / "config.json").string(), "GPT2LMHeadModel"});
}

TEST_F(CheckpointErrors, MissingTensor) {
  fs::path dir = copy_fixture("qwen3_gqa");
  const std::string dropped = "model.layers.1.self_attn.k_norm.weight";
  {
    SafetensorsFile original(dir / "model.safetensors");
    std::vector<TensorToWrite> keep;
    for (const auto& [name, e] : original.entries()) {
      if (name != dropped) keep.push_back({name, e.dtype, e.shape});
    }
    write_safetensors(dir / "rewritten.safetensors", keep, [&](const TensorToWrite& t, std::byte* out) {
      const SafetensorsEntry* e = original.find(t.name);
      std::memcpy(out, original.data(*e), e->data_end - e->data_begin);
    });
  }
  fs::rename(dir / "rewritten.safetensors", dir / "model.safetensors");
  expect_named(dir, {(dir / "model.safetensors").string(), dropped, "missing"});
}

TEST_F(CheckpointErrors, WrongShape) {
  fs::path dir = copy_fixture("qwen3_gqa");
  nlohmann::json config = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  config["intermediate_size"] = 100;
  std::ofstream(dir / "config.json") << config.dump();
  expect_named(dir, {(dir / "model.safetensors").string(), "mlp.gate_proj.weight", "[192, 64]", "[100, 64]"});
}

TEST_F(CheckpointErrors, TruncatedFile) {
  fs::path dir = copy_fixture("qwen3_gqa");
  fs::resize_file(dir / "model.safetensors", fs::file_size(dir / "model.safetensors") - 1000);
  // The last tensor in the file is the one whose data runs past the end.
  expect_named(dir, {(dir / "model.safetensors").string(), "truncated", "tensor '"});
}

TEST_F(CheckpointErrors, CorruptHeader) {
  fs::path dir = copy_fixture("qwen3_gqa");
  {
    std::fstream f(dir / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(12);
    f.write("\xff\xfe\x00garbage", 10);
  }
  expect_named(dir, {(dir / "model.safetensors").string(), "corrupt"});
}

TEST_F(CheckpointErrors, MissingShard) {
  fs::path dir = copy_fixture("llama_gqa_rope3");
  fs::remove(dir / "model-00003-of-00008.safetensors");
  expect_named(dir, {"model.safetensors.index.json", "model-00003-of-00008.safetensors"});
}

TEST_F(CheckpointErrors, TensorMissingFromIndex) {
  fs::path dir = copy_fixture("llama_gqa_rope3");
  nlohmann::json index = nlohmann::json::parse(std::ifstream(dir / "model.safetensors.index.json"));
  index["weight_map"].erase("model.layers.2.mlp.down_proj.weight");
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  expect_named(dir, {"model.safetensors.index.json", "model.layers.2.mlp.down_proj.weight"});
}

TEST_F(CheckpointErrors, NotADirectory) {
  auto [code, out] = run_generate("/nonexistent/model");
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("/nonexistent/model"), std::string::npos) << out;
}

}  // namespace
}  // namespace tandem::model
