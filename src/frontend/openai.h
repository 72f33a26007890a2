// The OpenAI API's request and response shapes for /v1/completions and /v1/chat/completions, with
// vLLM's extra sampling parameters (top_k, min_p, repetition_penalty, ignore_eos, min_tokens,
// stop_token_ids, skip_special_tokens, return_token_ids). Parsing validates every field and names
// the offending parameter in its error, as OpenAI's 400 responses do.
// Thread-safety: free functions over values.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "frontend/tool_calls.h"
#include "rpc/messages.pb.h"

namespace tandem::frontend {

// An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}. Built through the
// named factories, one per HTTP status the frontend answers with; `param` names the offending request
// parameter where there is one.
struct ApiError {
  int status = 400;
  std::string message;
  std::string param;  // "" = null
  std::string type;   // "" = derived from status

  static ApiError bad_request(std::string message, std::string param = "") {  // 400
    return {400, std::move(message), std::move(param), ""};
  }
  static ApiError unauthorized(std::string message) { return {401, std::move(message), "", ""}; }
  static ApiError forbidden(std::string message) { return {403, std::move(message), "", ""}; }
  static ApiError not_found(std::string message, std::string param = "") {  // 404
    return {404, std::move(message), std::move(param), "not_found_error"};
  }
  static ApiError method_not_allowed(std::string message) { return {405, std::move(message), "", ""}; }
  static ApiError too_large(std::string message, std::string param = "") {  // 413
    return {413, std::move(message), std::move(param), ""};
  }
  static ApiError too_many_requests(std::string message) {  // 429, as OpenAI's rate limits
    return {429, std::move(message), "", "rate_limit_exceeded"};
  }
  static ApiError header_too_large(std::string message) { return {431, std::move(message), "", ""}; }  // 431
  static ApiError unavailable(std::string message) { return {503, std::move(message), "", ""}; }  // 503
  static ApiError timeout(std::string message) { return {504, std::move(message), "", ""}; }       // 504
  // The status a worker's (or any tandem) StatusCode maps to (http_status()).
  static ApiError from_code(StatusCode code, std::string message);
};
std::string error_body(const ApiError& error);
// The HTTP status a tandem::StatusCode maps to.
int http_status(StatusCode code);
ApiError api_error(const Status& status);

// One prompt of a batched completions request: text, or token ids when `text` is unset.
struct PromptInput {
  std::optional<std::string> text;
  std::vector<int32_t> ids;
};

struct GenerationRequest {
  bool chat = false;
  std::string model;                   // "" = not given
  std::optional<std::string> prompt_text;  // completions: a text prompt
  std::vector<int32_t> prompt_ids;     // completions: a token-id prompt
  // completions with a list of two or more prompts (each answered as its own request, the choices
  // merged); empty for one prompt (prompt_text / prompt_ids).
  std::vector<PromptInput> batch;
  // chat: [{role, content (string), tool_calls / tool_call_id / name}] as the template takes them
  // (tool_calls' arguments as JSON), content parts joined; the client's key order.
  nlohmann::ordered_json messages;
  ToolRequest tools;                   // chat: tools, tool_choice, parallel_tool_calls
  bool add_generation_prompt = true;
  nlohmann::json chat_template_kwargs = nlohmann::json::object();  // chat: more template variables
  bool stream = false;
  bool include_usage = false;
  bool continuous_usage = false;
  bool return_token_ids = false;
  bool max_tokens_given = false;
  int top_logprobs = -1;               // alternatives per token; -1 = no logprobs
  rpc::pb::SamplingParams sampling;    // max_tokens filled only when given
};

// Parses a request body. An error names the parameter (type, range, missing, unsupported).
std::optional<ApiError> parse_generation_request(const std::string& body, bool chat, GenerationRequest* out);

}  // namespace tandem::frontend
