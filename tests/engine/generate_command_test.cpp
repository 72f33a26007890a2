// `tandem generate` through the engine, driving the real binary: many prompts at once give the same
// tokens as each prompt alone, and bad input is reported in one line with a non-zero exit.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

struct Result {
  int exit_code = -1;
  std::string out;  // stdout only
};

Result run(const std::string& args) {
  Result r;
  const std::string command = std::string(TANDEM_BINARY) + " " + args + " 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) r.out.append(buffer.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

TEST(GenerateCommand, PromptsFileGivesEachPromptsTokensAsRunAlone) {
  const std::vector<std::string> prompts = {"1,2,3,4,5", "7,8,9", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18"};
  const auto path = std::filesystem::temp_directory_path() / ("tandem_prompts_" + std::to_string(::getpid()) + ".txt");
  {
    std::ofstream f(path);
    f << "# a comment\n";
    for (const auto& p : prompts) f << p << "\n\n";
  }
  const std::string common = "generate --model random:tiny-qwen3 --max-tokens 5 --threads 1 --ignore-eos";
  Result all = run(common + " --prompts-file " + path.string() + " --max-batch-tokens 8 --max-seqs 2");
  std::filesystem::remove(path);
  ASSERT_EQ(all.exit_code, 0);
  const std::vector<std::string> got = lines(all.out);
  ASSERT_EQ(got.size(), prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    Result alone = run(common + " --prompt-ids " + prompts[i]);
    ASSERT_EQ(alone.exit_code, 0);
    EXPECT_EQ(got[i], lines(alone.out).at(0)) << "prompt " << i;
    EXPECT_EQ(std::count(got[i].begin(), got[i].end(), ','), 4) << got[i];
  }
}

TEST(GenerateCommand, BadInputExitsNonZero) {
  EXPECT_EQ(run("generate --model random:tiny-qwen3 --prompt-ids 1,x").exit_code, 1);
  EXPECT_EQ(run("generate --model random:tiny-qwen3 --prompts-file /nonexistent/prompts.txt").exit_code, 1);
  EXPECT_EQ(run("generate --model random:tiny-qwen3 --prompt-ids 1 --top-p 0").exit_code, 1);
  // A negative pool size was taken as "size it for me" without a word.
  EXPECT_NE(run("generate --model random:tiny-qwen3 --prompt-ids 1 --num-kv-blocks -5").exit_code, 0);
}

}  // namespace
