// `tandem generate` through the engine at --tensor-parallel-size 2 and 4 prints TP 1's greedy text (the
// engine sees one backend; the ranks run its batches), and sizes that cannot run are refused in one line
// naming the flag.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>

namespace {

struct Result {
  int exit_code = -1;
  std::string out;
};

// `args` runs after `tandem generate`; stderr is kept only when `with_stderr`.
Result generate(const std::string& args, bool with_stderr = false) {
  Result r;
  const std::string command = std::string(TANDEM_BINARY) + " generate " + args + (with_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) r.out.append(buffer.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

const std::string kModel =
    "--model random:tiny-qwen3 --max-tokens 16 --ignore-eos --threads 2 --prompt 'The capital of France is'";

TEST(TensorParallelGenerate, TpTwoAndFourPrintTpOnesGreedyText) {
  const Result one = generate(kModel);
  ASSERT_EQ(one.exit_code, 0);
  ASSERT_FALSE(one.out.empty());
  for (const char* tp : {"2", "4"}) {
    const Result many = generate(kModel + " --tensor-parallel-size " + tp);
    ASSERT_EQ(many.exit_code, 0) << "tp " << tp;
    EXPECT_EQ(many.out, one.out) << "tp " << tp;
  }
}

TEST(TensorParallelGenerate, SeveralPromptsInOneBatchMatchTpOne) {
  const std::string file = ::testing::TempDir() + "/tp_prompts.txt";
  std::ofstream(file) << "1,2,3,4,5\n9000,17,42\n" << "100,200,300,400,500,600,700,800,900,1000,1100,1200,1300,1400,1500,1600,1700,1800\n";
  const std::string args = "--model random:tiny-qwen3 --max-tokens 8 --ignore-eos --threads 2 --prompts-file " + file;
  const Result one = generate(args);
  const Result two = generate(args + " --tensor-parallel-size 2");
  ASSERT_EQ(one.exit_code, 0);
  ASSERT_EQ(two.exit_code, 0);
  EXPECT_EQ(two.out, one.out);
}

TEST(TensorParallelGenerate, SizesThatCannotRunAreRefusedNamingTheFlag) {
  const Result three = generate(kModel + " --tensor-parallel-size 3", true);  // 4 q heads
  EXPECT_NE(three.exit_code, 0);
  EXPECT_NE(three.out.find("--tensor-parallel-size 3"), std::string::npos) << three.out;
  EXPECT_NE(three.out.find("num_attention_heads (4) is not a multiple of 3"), std::string::npos) << three.out;
  const Result cuda = generate(kModel + " --device cuda:0 --tensor-parallel-size 2", true);
  EXPECT_NE(cuda.exit_code, 0);
  // One GPU named for two ranks (CUDA tensor parallelism takes one GPU a rank), refused before any GPU is asked.
  EXPECT_NE(cuda.out.find("--device cuda:0 --tensor-parallel-size 2: names 1 GPU(s) for 2 tensor-parallel ranks"),
            std::string::npos)
      << cuda.out;
  const Result zero = generate(kModel + " --tensor-parallel-size 0", true);
  EXPECT_NE(zero.exit_code, 0);
  EXPECT_NE(zero.out.find("--tensor-parallel-size"), std::string::npos) << zero.out;
}

}  // namespace
