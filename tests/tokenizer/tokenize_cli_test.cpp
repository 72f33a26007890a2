// `tandem tokenize` drives the real binary (built by the `tandem` target).
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace {

std::string run(const std::string& args, int* status) {
  const std::string command = std::string(TANDEM_BINARY) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  *status = pclose(pipe);
  return out;
}

const std::string kModels = std::string(TANDEM_DATA_DIR) + "/tokenizers/";

TEST(TokenizeCli, PrintsCommaSeparatedIds) {
  int status;
  // Ids from @lenml/tokenizers (tests/data/tokenizer/references_*.json, corpus[0] = "Hello world").
  EXPECT_EQ(run("tokenize --model " + kModels + "qwen3 'Hello world'", &status), "9707,1879\n");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(run("tokenize --model " + kModels + "llama3_1 'Hello world'", &status), "128000,9906,1917\n");
  EXPECT_EQ(run("tokenize --model " + kModels + "llama3_1 --no-special-tokens 'Hello world'", &status), "9906,1917\n");
}

TEST(TokenizeCli, MissingModelIsAnErrorNamingTheFile) {
  int status;
  const std::string out = run("tokenize --model /nonexistent/dir x", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("/nonexistent/dir/tokenizer.json"), std::string::npos) << out;
}

}  // namespace
