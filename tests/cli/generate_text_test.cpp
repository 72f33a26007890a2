// `tandem generate --prompt/--chat`: text in goes through the real tokenizer (and chat template) to the
// same token ids the library computes, and the text printed is the tokenizer's decode of the tokens
// the id path generates for those ids.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace {

std::string run(const std::string& args) {
  const std::string command = std::string(TANDEM_BINARY) + " generate --model random:tiny-qwen3 --max-tokens 12 --ignore-eos " + args + " 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
  int status = pclose(pipe);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << command;
  return out;
}

std::string join(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

std::vector<int32_t> parse(const std::string& line) {
  std::vector<int32_t> ids;
  std::stringstream in(line);
  std::string item;
  while (std::getline(in, item, ',')) ids.push_back(std::stoi(item));
  return ids;
}

class GenerateText : public ::testing::Test {
 protected:
  void SetUp() override { tok_ = tandem::tokenizer::Tokenizer::load(std::string(TANDEM_DATA_DIR) + "/tokenizers/qwen3"); }
  // What the id path generates for `prompt`, decoded by the tokenizer, plus the newline generate prints.
  std::string expected_text(const std::vector<int32_t>& prompt) {
    std::vector<int32_t> generated = parse(run("--prompt-ids " + join(prompt)));
    return tok_->decode(generated, /*skip_special_tokens=*/true) + "\n";
  }
  std::unique_ptr<tandem::tokenizer::Tokenizer> tok_;
};

TEST_F(GenerateText, PromptTextMatchesTheIdPath) {
  const std::string text = "The capital of France is";
  EXPECT_EQ(run("--prompt '" + text + "'"), expected_text(tok_->encode(text)));
}

TEST_F(GenerateText, ChatGoesThroughTheChatTemplate) {
  tandem::tokenizer::ChatTemplate chat(tok_->chat_template());
  tandem::tokenizer::ChatInputs inputs;
  inputs.messages = nlohmann::ordered_json::array({{{"role", "user"}, {"content", "What is 2+2?"}}});
  inputs.add_generation_prompt = true;
  inputs.bos_token = tok_->bos_token();
  inputs.eos_token = tok_->eos_token();
  auto rendered = chat.render(inputs);
  ASSERT_TRUE(rendered.ok());
  ASSERT_NE(rendered->find("<|im_start|>assistant"), std::string::npos);
  EXPECT_EQ(run("--chat 'What is 2+2?'"), expected_text(tok_->encode(*rendered, false)));
}

}  // namespace
