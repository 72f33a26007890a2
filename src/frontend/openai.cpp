// OpenAI request parsing and errors (see openai.h).
#include "frontend/openai.h"

#include <cmath>
#include <limits>

#include "frontend/structured_output.h"

namespace tandem::frontend {
namespace {

using nlohmann::json;

// Field readers: nullopt when absent or null; an ApiError when present with the wrong type/range.
struct Reader {
  const json& body;
  std::optional<ApiError> error;

  const json* field(const char* name) {
    auto it = body.find(name);
    if (it == body.end() || it->is_null()) return nullptr;
    return &*it;
  }
  std::optional<double> number(const char* name, double lo, double hi, bool lo_open = false) {
    const json* v = field(name);
    if (!v || error) return std::nullopt;
    if (!v->is_number()) {
      error = ApiError::bad_request(std::string("'") + name + "' must be a number", name);
      return std::nullopt;
    }
    double x = v->get<double>();
    if (!std::isfinite(x) || x < lo || x > hi || (lo_open && x == lo)) {
      error = ApiError::bad_request(std::string("'") + name + "' must be " + (lo_open ? "in (" : "in [") + fmt(lo) +
                                        ", " + fmt(hi) + "], got " + v->dump(),
                                    name);
      return std::nullopt;
    }
    return x;
  }
  std::optional<int64_t> integer(const char* name, int64_t lo, int64_t hi) {
    const json* v = field(name);
    if (!v || error) return std::nullopt;
    if (!v->is_number_integer()) {
      error = ApiError::bad_request(std::string("'") + name + "' must be an integer", name);
      return std::nullopt;
    }
    int64_t x = v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                    ? INT64_MAX
                    : v->get<int64_t>();
    if (x < lo || x > hi) {
      error = ApiError::bad_request(std::string("'") + name + "' must be in [" + std::to_string(lo) + ", " +
                                        std::to_string(hi) + "], got " + v->dump(),
                                    name);
      return std::nullopt;
    }
    return x;
  }
  std::optional<bool> boolean(const char* name) {
    const json* v = field(name);
    if (!v || error) return std::nullopt;
    if (!v->is_boolean()) {
      error = ApiError::bad_request(std::string("'") + name + "' must be a boolean", name);
      return std::nullopt;
    }
    return v->get<bool>();
  }
  std::optional<std::vector<int32_t>> int_list(const char* name) {
    const json* v = field(name);
    if (!v || error) return std::nullopt;
    std::vector<int32_t> out;
    if (v->is_array()) {
      for (const auto& x : *v) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX) {
          error = ApiError::bad_request(std::string("'") + name + "' must be a list of token ids", name);
          return std::nullopt;
        }
        out.push_back(static_cast<int32_t>(x.get<int64_t>()));
      }
      return out;
    }
    error = ApiError::bad_request(std::string("'") + name + "' must be a list of token ids", name);
    return std::nullopt;
  }
  static std::string fmt(double x) {
    if (x == std::numeric_limits<double>::infinity()) return "inf";
    json j = x;
    return j.dump();
  }
};

bool is_id_list(const json& v) {
  if (!v.is_array() || v.empty()) return false;
  for (const auto& x : v) {
    if (!x.is_number_integer()) return false;
  }
  return true;
}

}  // namespace

int http_status(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return 200;
    case StatusCode::kInvalidArgument: return 400;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kTooLarge: return 413;
    case StatusCode::kResourceExhausted: return 503;
    case StatusCode::kUnavailable: return 503;
    case StatusCode::kDeadlineExceeded: return 504;
    case StatusCode::kAborted: return 499;
    case StatusCode::kUnsupported: return 400;
    case StatusCode::kCorruption:
    case StatusCode::kInternal: return 500;
  }
  return 500;
}

ApiError ApiError::from_code(StatusCode code, std::string message) {
  return {http_status(code), std::move(message), "", ""};
}

ApiError api_error(const Status& status) { return ApiError::from_code(status.code(), status.message()); }

std::string error_body(const ApiError& error) {
  std::string type = error.type;
  if (type.empty()) {
    switch (error.status) {
      case 400: type = "invalid_request_error"; break;
      case 404: type = "not_found_error"; break;
      case 413: type = "invalid_request_error"; break;
      case 503: type = "service_unavailable_error"; break;
      case 504: type = "timeout_error"; break;
      default: type = error.status >= 500 ? "internal_server_error" : "invalid_request_error";
    }
  }
  json body = {{"error",
                {{"message", error.message},
                 {"type", type},
                 {"param", error.param.empty() ? json(nullptr) : json(error.param)},
                 {"code", error.status}}}};
  return body.dump();
}

// Features a client asks for that would change what the answer means: grammar-based structured output
// (guided_grammar, structured_outputs) and tool calls. Ignoring them, as unknown fields are ignored, would hand back free text where the client
// expects JSON or a tool call, so they get a 400 naming the parameter instead. The harmless forms
// pass: a "text" response format. Tools are read by parse_tool_request (chat) instead; the legacy
// `functions` stay refused.
std::optional<ApiError> refuse_unsupported_features(Reader& r) {
  // response_format and guided_json/regex/choice are structured output (structured_output.h).
  for (const char* guided : {"guided_grammar", "structured_outputs"}) {
    if (r.field(guided)) {
      return ApiError::bad_request(std::string("'") + guided + "' is not supported (no structured output)", guided);
    }
  }
  auto non_empty = [](const json* v) { return v && !(v->is_array() && v->empty()); };
  if (non_empty(r.field("functions"))) {
    return ApiError::bad_request("'functions' (function calling) is not supported", "functions");
  }
  return std::nullopt;
}

std::optional<ApiError> parse_generation_request(const std::string& text, bool chat, GenerationRequest* out) {
  json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return ApiError::bad_request("the request body is not valid JSON");
  if (!body.is_object()) return ApiError::bad_request("the request body must be a JSON object");
  Reader r{body, std::nullopt};
  out->chat = chat;
  if (const json* m = r.field("model")) {
    if (!m->is_string()) return ApiError::bad_request("'model' must be a string", "model");
    out->model = m->get<std::string>();
  }

  if (!chat) {
    const json* p = r.field("prompt");
    if (!p) return ApiError::bad_request("'prompt' is required", "prompt");
    if (p->is_string()) {
      out->prompt_text = p->get<std::string>();
    } else if (is_id_list(*p)) {
      for (const auto& x : *p) {
        if (x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX) {
          return ApiError::bad_request("'prompt' holds an invalid token id", "prompt");
        }
        out->prompt_ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
      }
    } else if (p->is_array() && p->empty()) {
      return ApiError::bad_request("'prompt' is an empty list", "prompt");
    } else if (p->is_array() && ((*p)[0].is_string() || (*p)[0].is_array())) {
      // A list of prompts: all strings, or all token-id lists.
      const bool texts = (*p)[0].is_string();
      std::vector<PromptInput> prompts;
      for (size_t i = 0; i < p->size(); ++i) {
        const json& item = (*p)[i];
        const std::string where = "prompt[" + std::to_string(i) + "]";
        PromptInput in;
        if (texts && item.is_string()) {
          in.text = item.get<std::string>();
          if (in.text->empty()) return ApiError::bad_request("'" + where + "' is empty", "prompt");
        } else if (!texts && is_id_list(item)) {
          for (const auto& x : item) {
            if (x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX) {
              return ApiError::bad_request("'" + where + "' holds an invalid token id", "prompt");
            }
            in.ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
          }
        } else {
          return ApiError::bad_request("'prompt' must be a string, a list of token ids, or a list of strings or of "
                                       "token-id lists (" + where + " is neither like the first)",
                                       "prompt");
        }
        prompts.push_back(std::move(in));
      }
      if (prompts.size() == 1) {
        out->prompt_text = std::move(prompts[0].text);
        out->prompt_ids = std::move(prompts[0].ids);
      } else {
        out->batch = std::move(prompts);
      }
    } else {
      return ApiError::bad_request("'prompt' must be a string or a list of token ids", "prompt");
    }
    if (out->prompt_text && out->prompt_text->empty()) return ApiError::bad_request("'prompt' is empty", "prompt");
    if (auto echo = r.boolean("echo"); echo && *echo) return ApiError::bad_request("'echo' is not supported", "echo");
    if (r.field("suffix")) return ApiError::bad_request("'suffix' is not supported", "suffix");
    // Completions have no tool calling: tools pass only with tool_choice "none", as before chat had it.
    const json* choice = r.field("tool_choice");
    if (choice && *choice != "none" && *choice != "auto") {
      return ApiError::bad_request("'tool_choice' is for /v1/chat/completions", "tool_choice");
    }
    const json* tools = r.field("tools");
    if (tools && !(tools->is_array() && tools->empty()) && !(choice && *choice == "none")) {
      return ApiError::bad_request("'tools' are for /v1/chat/completions", "tools");
    }
  } else {
    const json* msgs = r.field("messages");
    if (!msgs) return ApiError::bad_request("'messages' is required", "messages");
    if (!msgs->is_array() || msgs->empty()) return ApiError::bad_request("'messages' must be a non-empty list", "messages");
    // The messages and tools keep the client's key order (templates render them with tojson).
    const auto ordered = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (auto error = parse_tool_request(ordered, &out->tools)) return ApiError::bad_request(error->message, error->param);
    auto ordered_msgs = ordered.find("messages");  // the same list as `msgs` (both parses keep a repeated key's last value)
    const bool have_ordered = ordered_msgs != ordered.end() && ordered_msgs->is_array() && ordered_msgs->size() == msgs->size();
    out->messages = nlohmann::ordered_json::array();
    for (size_t i = 0; i < msgs->size(); ++i) {
      const json& m = (*msgs)[i];
      std::string where = "messages[" + std::to_string(i) + "]";
      if (!m.is_object()) return ApiError::bad_request("'" + where + "' must be an object", where);
      auto role = m.find("role");
      if (role == m.end() || !role->is_string()) {
        return ApiError::bad_request("'" + where + ".role' must be a string", where + ".role");
      }
      std::string role_name = role->get<std::string>();
      if (role_name != "system" && role_name != "user" && role_name != "assistant" && role_name != "developer" &&
          role_name != "tool") {
        return ApiError::bad_request("unknown role '" + role_name + "'", where + ".role");
      }
      std::string content;
      auto c = m.find("content");
      if (c == m.end() || c->is_null()) {
        content = "";
      } else if (c->is_string()) {
        content = c->get<std::string>();
      } else if (c->is_array()) {
        for (const auto& part : *c) {
          if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
            return ApiError::bad_request("only text content parts are supported", where + ".content");
          }
          content += part["text"].get<std::string>();
        }
      } else {
        return ApiError::bad_request("'" + where + ".content' must be a string or a list of text parts", where + ".content");
      }
      nlohmann::ordered_json message = {{"role", role_name == "developer" ? "system" : role_name}, {"content", content}};
      if (auto error = read_message_tool_fields(have_ordered ? (*ordered_msgs)[i] : nlohmann::ordered_json(m), where, &message)) {
        return ApiError::bad_request(error->message, error->param);
      }
      out->messages.push_back(std::move(message));
    }
    if (auto agp = r.boolean("add_generation_prompt")) out->add_generation_prompt = *agp;
    if (const json* kwargs = r.field("chat_template_kwargs")) {
      if (!kwargs->is_object()) {
        return ApiError::bad_request("'chat_template_kwargs' must be an object", "chat_template_kwargs");
      }
      out->chat_template_kwargs = *kwargs;
    }
  }
  if (r.error) return r.error;

  auto& s = out->sampling;
  s.set_temperature(1.0f);
  s.set_top_p(1.0f);
  s.set_repetition_penalty(1.0f);
  s.set_logprobs(-1);
  s.set_n(1);
  s.set_skip_special_tokens(true);
  if (auto v = r.number("temperature", 0, 2)) s.set_temperature(static_cast<float>(*v));
  if (auto v = r.number("top_p", 0, 1, /*lo_open=*/true)) s.set_top_p(static_cast<float>(*v));
  if (auto v = r.integer("top_k", -1, INT32_MAX)) s.set_top_k(static_cast<int32_t>(*v));
  if (auto v = r.number("min_p", 0, 1)) s.set_min_p(static_cast<float>(*v));
  if (auto v = r.number("presence_penalty", -2, 2)) s.set_presence_penalty(static_cast<float>(*v));
  if (auto v = r.number("frequency_penalty", -2, 2)) s.set_frequency_penalty(static_cast<float>(*v));
  if (auto v = r.number("repetition_penalty", 0, std::numeric_limits<double>::infinity(), /*lo_open=*/true)) {
    s.set_repetition_penalty(static_cast<float>(*v));
  }
  const char* max_name = chat && r.field("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (auto v = r.integer(max_name, 1, INT32_MAX)) {
    s.set_max_tokens(static_cast<int32_t>(*v));
    out->max_tokens_given = true;
  }
  if (auto v = r.integer("min_tokens", 0, INT32_MAX)) s.set_min_tokens(static_cast<int32_t>(*v));
  if (auto v = r.integer("n", 1, 128)) s.set_n(static_cast<int32_t>(*v));
  if (auto v = r.integer("best_of", 1, 128); v && *v != s.n()) {
    return ApiError::bad_request("'best_of' other than n is not supported", "best_of");
  }
  if (const json* v = r.field("seed")) {
    if (!v->is_number_integer()) return ApiError::bad_request("'seed' must be an integer", "seed");
    s.set_has_seed(true);
    s.set_seed(v->is_number_unsigned() ? v->get<uint64_t>() : static_cast<uint64_t>(v->get<int64_t>()));
  }
  if (auto v = r.boolean("ignore_eos")) s.set_ignore_eos(*v);
  if (auto v = r.boolean("skip_special_tokens")) s.set_skip_special_tokens(*v);
  if (auto v = r.boolean("return_token_ids")) out->return_token_ids = *v;
  if (auto v = r.int_list("stop_token_ids")) s.mutable_stop_token_ids()->Add(v->begin(), v->end());
  if (const json* v = r.field("stop")) {
    if (v->is_string()) {
      if (!v->get<std::string>().empty()) s.add_stop(v->get<std::string>());
    } else if (v->is_array()) {
      for (const auto& x : *v) {
        if (!x.is_string()) return ApiError::bad_request("'stop' must be a string or a list of strings", "stop");
        if (!x.get<std::string>().empty()) s.add_stop(x.get<std::string>());
      }
    } else {
      return ApiError::bad_request("'stop' must be a string or a list of strings", "stop");
    }
  }
  if (const json* v = r.field("logit_bias")) {
    if (!v->is_object()) return ApiError::bad_request("'logit_bias' must be an object of token id -> bias", "logit_bias");
    for (const auto& [key, bias] : v->items()) {
      char* end = nullptr;
      long id = std::strtol(key.c_str(), &end, 10);
      if (key.empty() || *end != '\0' || id < 0 || id > INT32_MAX || !bias.is_number() || bias.get<double>() < -100 ||
          bias.get<double>() > 100) {
        return ApiError::bad_request("'logit_bias' must map token ids to numbers in [-100, 100]", "logit_bias");
      }
      s.add_logit_bias_ids(static_cast<int32_t>(id));
      s.add_logit_bias_values(bias.get<float>());
    }
  }
  if (chat) {
    auto logprobs = r.boolean("logprobs");
    auto top = r.integer("top_logprobs", 0, 20);
    if (top && !(logprobs && *logprobs)) return ApiError::bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs");
    if (logprobs && *logprobs) out->top_logprobs = top ? static_cast<int>(*top) : 0;
  } else {
    if (auto v = r.integer("logprobs", 0, 20)) out->top_logprobs = static_cast<int>(*v);
  }
  s.set_logprobs(out->top_logprobs);
  if (auto unsupported = refuse_unsupported_features(r)) return unsupported;
  if (auto structured = parse_structured_output(text, body, &s)) return structured;
  if (auto v = r.boolean("stream")) out->stream = *v;
  if (const json* so = r.field("stream_options")) {
    if (!so->is_object()) return ApiError::bad_request("'stream_options' must be an object", "stream_options");
    if (!out->stream) return ApiError::bad_request("'stream_options' needs 'stream': true", "stream_options");
    auto iu = so->find("include_usage");
    if (iu != so->end() && !iu->is_null()) {
      if (!iu->is_boolean()) return ApiError::bad_request("'include_usage' must be a boolean", "stream_options.include_usage");
      out->include_usage = iu->get<bool>();
    }
    auto cu = so->find("continuous_usage_stats");
    if (cu != so->end() && cu->is_boolean()) out->continuous_usage = cu->get<bool>();
  }
  if (r.error) return r.error;
  return std::nullopt;
}

}  // namespace tandem::frontend
