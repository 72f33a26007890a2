// PromptCodec over the tokenizer part (see prompt_codec.h). Chat messages are rendered by the
// model's own chat template (tokenizer_config.json, the tokenizer part's Jinja2 interpreter); a
// tokenizer without one falls back to ChatML (<|im_start|>role\ncontent<|im_end|>\n).
#include "frontend/prompt_codec.h"

#include <nlohmann/json.hpp>

#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace tandem::frontend {
namespace {

class TokenizerCodec : public PromptCodec {
 public:
  explicit TokenizerCodec(std::unique_ptr<tokenizer::Tokenizer> tokenizer) : tokenizer_(std::move(tokenizer)) {
    if (!tokenizer_->chat_template().empty()) {
      template_ = std::make_unique<tokenizer::ChatTemplate>(tokenizer_->chat_template());
    }
  }
  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens) const override {
    return tokenizer_->encode(text, add_special_tokens);
  }
  StatusOr<std::string> render_chat(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                    bool add_generation_prompt, const nlohmann::json& template_kwargs) const override {
    if (template_) {
      tokenizer::ChatInputs inputs;
      inputs.messages = messages;
      inputs.tools = tools;
      inputs.add_generation_prompt = add_generation_prompt;
      inputs.bos_token = tokenizer_->bos_token();
      inputs.eos_token = tokenizer_->eos_token();
      if (template_kwargs.is_object()) inputs.extra = nlohmann::ordered_json::parse(template_kwargs.dump());
      return template_->render(inputs);
    }
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
  std::unique_ptr<tokenizer::ChatTemplate> template_;  // null: ChatML
};

}  // namespace

std::unique_ptr<PromptCodec> load_prompt_codec(const std::string& dir) {
  return std::make_unique<TokenizerCodec>(tokenizer::Tokenizer::load(dir));
}

}  // namespace tandem::frontend
