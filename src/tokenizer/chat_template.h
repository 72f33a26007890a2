// Chat templates: renders the Jinja2 `chat_template` of a tokenizer_config.json the way Hugging
// Face's apply_chat_template does (jinja2 ImmutableSandboxedEnvironment with trim_blocks and
// lstrip_blocks, loop controls, its tojson filter, raise_exception and strftime_now globals).
// The interpreter covers a subset of Jinja2 (everything the Qwen3 and Llama-3.x templates use and
// more, see jinja/parser.cpp for the filter and test lists); anything outside it is an error that
// names the construct and the template line, never a silently different output.
//
// Ownership: a ChatTemplate owns its parsed template. Thread-safety: render() is const and may run
// on many threads at once.
#pragma once

#include <nlohmann/json.hpp>

#include <ctime>
#include <memory>
#include <optional>
#include <string>

#include "common/status.h"

namespace tandem::tokenizer {

namespace jinja {
struct Node;
}

struct ChatInputs {
  // [{"role": "system"|"user"|"assistant"|"tool", "content": ..., "tool_calls": [...],
  //   "reasoning_content": ...}, ...] as the OpenAI API spells them; key order is kept (tojson).
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  // The tools' JSON schemas; null when the request has none (the template sees None, as HF passes).
  nlohmann::ordered_json tools = nullptr;
  bool add_generation_prompt = false;
  // Left undefined in the template when empty (Hugging Face passes only the tokens a model has).
  std::string bos_token;
  std::string eos_token;
  // More template variables, e.g. {"enable_thinking": false}; they override the ones above.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  // The time strftime_now() formats (local time); the current time when unset. Tests inject it.
  std::optional<std::tm> now;
};

class ChatTemplate {
 public:
  // Parses `source`. Throws tandem::Error "chat template line N: ..." when it is malformed or uses
  // a construct outside the supported subset (e.g. "unsupported construct: {% include %}").
  explicit ChatTemplate(const std::string& source);
  ~ChatTemplate();
  ChatTemplate(const ChatTemplate&) = delete;
  ChatTemplate& operator=(const ChatTemplate&) = delete;

  // The rendered prompt. Errors: InvalidArgument when the template rejects the conversation
  // (raise_exception, or a failure jinja2 would also raise, such as a None content concatenated to
  // a string); Unsupported when rendering reaches a construct outside the subset. Messages read
  // "chat template line N: ...".
  StatusOr<std::string> render(const ChatInputs& inputs) const;

 private:
  std::unique_ptr<std::vector<std::unique_ptr<jinja::Node>>> body_;
};

}  // namespace tandem::tokenizer
