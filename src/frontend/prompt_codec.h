// What the frontend needs of a tokenizer: encode prompts, render chat messages, spell tokens for
// logprobs. An interface so the frontend can run without one (token-id prompts only) and so tests
// can supply their own.
// Thread-safety: const methods, safe from any thread.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace tandem::frontend {

class PromptCodec {
 public:
  virtual ~PromptCodec() = default;
  virtual std::vector<int32_t> encode(const std::string& text, bool add_special_tokens) const = 0;
  // The prompt text for chat `messages` (already validated, in the template's shape: role, string
  // content, tool_calls with JSON arguments, tool_call_id) and `tools` (their JSON schemas; null for
  // none), both in the client's key order. `template_kwargs` (an object, the request's
  // chat_template_kwargs, e.g. {"enable_thinking": false}) are further template variables; they
  // override the others, as in vLLM. InvalidArgument when the template cannot render them.
  virtual StatusOr<std::string> render_chat(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                            bool add_generation_prompt, const nlohmann::json& template_kwargs) const = 0;
  // The text of one token (for logprobs), e.g. " the".
  virtual std::string token_text(int32_t id) const = 0;
};

// Loads tokenizer.json / tokenizer_config.json from `dir`. Throws tandem::Error naming the file.
std::unique_ptr<PromptCodec> load_prompt_codec(const std::string& dir);

}  // namespace tandem::frontend
