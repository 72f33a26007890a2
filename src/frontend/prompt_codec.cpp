// PromptCodec over the tokenizer part (see prompt_codec.h). Chat messages are rendered in ChatML
// (<|im_start|>role\ncontent<|im_end|>\n), the format of the Qwen family's templates without tools
// or reasoning; models with another format need the tokenizer part's Jinja renderer.
#include "frontend/prompt_codec.h"

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace tandem::frontend {
namespace {

class TokenizerCodec : public PromptCodec {
 public:
  explicit TokenizerCodec(std::unique_ptr<tokenizer::Tokenizer> tokenizer) : tokenizer_(std::move(tokenizer)) {}
  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens) const override {
    return tokenizer_->encode(text, add_special_tokens);
  }
  StatusOr<std::string> render_chat(const nlohmann::json& messages, bool add_generation_prompt) const override {
    if (!tokenizer_->token_to_id("<|im_start|>")) {
      return Status::Unsupported("this model's chat template is not supported yet (only ChatML models)");
    }
    std::string out;
    for (const auto& m : messages) {
      out += "<|im_start|>" + m.at("role").get<std::string>() + "\n" + m.at("content").get<std::string>() + "<|im_end|>\n";
    }
    if (add_generation_prompt) out += "<|im_start|>assistant\n";
    return out;
  }
  std::string token_text(int32_t id) const override {
    int32_t ids[1] = {id};
    return tokenizer_->decode(ids, false);
  }

 private:
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
};

}  // namespace

std::unique_ptr<PromptCodec> load_prompt_codec(const std::string& dir) {
  return std::make_unique<TokenizerCodec>(tokenizer::Tokenizer::load(dir));
}

}  // namespace tandem::frontend
