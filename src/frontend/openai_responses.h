// The OpenAI API's response shapes for /v1/completions and /v1/chat/completions, as pure functions
// of what a request has produced so far: the whole JSON body, the Server-Sent-Event chunks of a
// stream, logprobs in the chat shape ({content: [...]}) and the completions shape (parallel lists),
// usage, and finish reasons. The request lifecycle (request_lifecycle.h) decides when each is sent.
// Thread-safety: free functions over values.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "frontend/reasoning_parser.h"
#include "frontend/tool_call_parser.h"
#include "rpc/messages.pb.h"

namespace tandem::frontend {

// What every body of one response repeats.
struct ResponseContext {
  std::string id;               // "cmpl-..." / "chatcmpl-..."
  std::string model;
  int64_t created = 0;          // unix seconds
  bool chat = false;
  bool return_token_ids = false;
  bool continuous_usage = false;  // stream_options.continuous_usage_stats: usage in every chunk
};

struct TokenUsage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_prompt_tokens = 0;  // shown as prompt_tokens_details when > 0
};

// What one choice (of n) has produced so far.
struct ChoiceState {
  std::string text;                       // chat with a reasoning parser: the answer part alone
  std::optional<std::string> reasoning;   // chat with a reasoning parser: the think block ("" = null)
  std::vector<ToolCall> tool_calls;       // chat with --tool-call-parser: the calls read out of the reply
  std::vector<int32_t> tokens;
  nlohmann::json logprobs_content = nlohmann::json::array();  // chat: one entry per token
  nlohmann::json completion_logprobs = {{"tokens", nlohmann::json::array()},
                                        {"token_logprobs", nlohmann::json::array()},
                                        {"top_logprobs", nlohmann::json::array()},
                                        {"text_offset", nlohmann::json::array()}};
  int text_offset = 0;  // completions: where the next token's text starts
  bool finished = false;
  std::string finish_reason;
  std::string stop_reason;
};

// A token id's text for logprobs.
using TokenTextFn = std::function<std::string(int32_t token_id)>;

// "stop", "length", "abort", "error"; "" when not finished.
const char* finish_reason_text(rpc::pb::FinishReason reason);

nlohmann::json usage_json(const TokenUsage& usage);

// One SSE event: "data: <payload>\n\n".
std::string sse_event(const std::string& payload);
inline std::string sse_event(const nlohmann::json& body) { return sse_event(body.dump()); }
// The event that ends every stream.
inline constexpr const char* kSseDone = "data: [DONE]\n\n";

// A stream's chunk for choice `index`: `delta_or_text` is the chat delta object or the completion
// text; `logprobs` and `finish_reason` may be null; `token_ids` shown with return_token_ids.
nlohmann::json stream_chunk(const ResponseContext& ctx, int index, const nlohmann::json& delta_or_text,
                            const nlohmann::json* logprobs, const char* finish_reason,
                            const std::vector<int32_t>* token_ids, const TokenUsage& usage);
// sse_event(stream_chunk(...)) byte for byte, written without building the tree (once per token per
// stream: bench/results/2026-12-02-cpu-serve-overhead/).
std::string stream_chunk_event(const ResponseContext& ctx, int index, const nlohmann::json& delta_or_text,
                               const nlohmann::json* logprobs, const char* finish_reason,
                               const std::vector<int32_t>* token_ids, const TokenUsage& usage);
// The chat stream's first delta of each choice.
nlohmann::json assistant_role_delta();
// The delta (chat) or text (completions) of one output: chat sends {} for an output with neither
// text nor tokens (a finish alone).
nlohmann::json stream_delta(bool chat, const std::string& text, int num_new_tokens);
// The chat delta of one output split by a reasoning parser: `reasoning_content` and/or `content`,
// each only when it has text; {"content": ""} when neither has but tokens came (held back), {} for a
// finish alone.
nlohmann::json reasoning_delta(const ReasoningSplit& split, int num_new_tokens);
// The closing chunk of a stream with stream_options.include_usage: no choices, the usage.
nlohmann::json usage_chunk(const ResponseContext& ctx, const TokenUsage& usage);
// The whole non-streamed body. `with_logprobs`: the request asked for logprobs.
nlohmann::json response_body(const ResponseContext& ctx, const std::vector<ChoiceState>& choices,
                             const TokenUsage& usage, bool with_logprobs);

// Batched prompts (/v1/completions with a list): the index of choice `choice` (of n) of prompt
// `prompt_index` in the response, vLLM's order: prompt_index * n + choice.
inline int batch_choice_index(int prompt_index, int n, int choice) { return prompt_index * n + choice; }
// The usage of a batch: the sum over its prompts.
TokenUsage sum_usage(const std::vector<TokenUsage>& parts);

// The logprobs of one output's new tokens, in the chat or completions shape. Advances the choice's
// text offset; when `accumulate` (a non-streamed response), also appends them to the choice.
nlohmann::json new_logprobs(bool chat, const rpc::pb::Output& output, ChoiceState& choice, bool accumulate,
                            const TokenTextFn& token_text);

}  // namespace tandem::frontend
