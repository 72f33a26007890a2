// OpenAI response bodies, stream chunks and logprobs (see openai_responses.h).
#include "frontend/openai_responses.h"

#include "frontend/json_writer.h"

namespace tandem::frontend {

using nlohmann::json;

const char* finish_reason_text(rpc::pb::FinishReason reason) {
  switch (reason) {
    case rpc::pb::FINISH_STOP: return "stop";
    case rpc::pb::FINISH_LENGTH: return "length";
    case rpc::pb::FINISH_ABORT: return "abort";
    case rpc::pb::FINISH_ERROR: return "error";
    default: return "";
  }
}

json usage_json(const TokenUsage& usage) {
  json u = {{"prompt_tokens", usage.prompt_tokens},
            {"completion_tokens", usage.completion_tokens},
            {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
  if (usage.cached_prompt_tokens > 0) u["prompt_tokens_details"] = {{"cached_tokens", usage.cached_prompt_tokens}};
  return u;
}

std::string sse_event(const std::string& payload) { return "data: " + payload + "\n\n"; }

json stream_chunk(const ResponseContext& ctx, int index, const json& delta_or_text, const json* logprobs,
                  const char* finish_reason, const std::vector<int32_t>* token_ids, const TokenUsage& usage) {
  json choice = {{"index", index}};
  if (ctx.chat) {
    choice["delta"] = delta_or_text;
  } else {
    choice["text"] = delta_or_text;
  }
  choice["logprobs"] = logprobs ? *logprobs : json(nullptr);
  choice["finish_reason"] = finish_reason ? json(finish_reason) : json(nullptr);
  if (!ctx.chat) choice["stop_reason"] = nullptr;
  if (token_ids && ctx.return_token_ids) choice["token_ids"] = *token_ids;
  json body = {{"id", ctx.id},
               {"object", ctx.chat ? "chat.completion.chunk" : "text_completion"},
               {"created", ctx.created},
               {"model", ctx.model},
               {"choices", json::array({choice})}};
  if (ctx.continuous_usage) body["usage"] = usage_json(usage);
  return body;
}

std::string stream_chunk_event(const ResponseContext& ctx, int index, const json& delta_or_text, const json* logprobs,
                               const char* finish_reason, const std::vector<int32_t>* token_ids,
                               const TokenUsage& usage) {
  // Keys in the order dump() writes stream_chunk's (nlohmann's objects are sorted maps).
  std::string out = "data: {\"choices\":[{";
  if (ctx.chat) {
    out += "\"delta\":";
    append_json(&out, delta_or_text);
    out += ',';
  }
  out += "\"finish_reason\":";
  if (finish_reason) {
    append_json_string(&out, finish_reason);
  } else {
    out += "null";
  }
  out += ",\"index\":";
  append_json_int(&out, index);
  out += ",\"logprobs\":";
  if (logprobs) {
    append_json(&out, *logprobs);
  } else {
    out += "null";
  }
  if (!ctx.chat) {
    out += ",\"stop_reason\":null,\"text\":";
    append_json(&out, delta_or_text);
  }
  if (token_ids && ctx.return_token_ids) {
    out += ",\"token_ids\":[";
    for (size_t i = 0; i < token_ids->size(); ++i) {
      if (i > 0) out += ',';
      append_json_int(&out, (*token_ids)[i]);
    }
    out += ']';
  }
  out += "}],\"created\":";
  append_json_int(&out, ctx.created);
  out += ",\"id\":";
  append_json_string(&out, ctx.id);
  out += ",\"model\":";
  append_json_string(&out, ctx.model);
  out += ctx.chat ? ",\"object\":\"chat.completion.chunk\"" : ",\"object\":\"text_completion\"";
  if (ctx.continuous_usage) {
    out += ",\"usage\":";
    append_json(&out, usage_json(usage));
  }
  out += "}\n\n";
  return out;
}

json assistant_role_delta() { return {{"role", "assistant"}, {"content", ""}}; }

json stream_delta(bool chat, const std::string& text, int num_new_tokens) {
  if (!chat) return json(text);
  if (text.empty() && num_new_tokens == 0) return json::object();
  return json{{"content", text}};
}

json reasoning_delta(const ReasoningSplit& split, int num_new_tokens) {
  json delta = json::object();
  if (!split.reasoning.empty()) delta["reasoning_content"] = split.reasoning;
  if (!split.content.empty()) delta["content"] = split.content;
  if (delta.empty() && num_new_tokens > 0) delta["content"] = "";
  return delta;
}

TokenUsage sum_usage(const std::vector<TokenUsage>& parts) {
  TokenUsage total;
  for (const auto& u : parts) {
    total.prompt_tokens += u.prompt_tokens;
    total.completion_tokens += u.completion_tokens;
    total.cached_prompt_tokens += u.cached_prompt_tokens;
  }
  return total;
}

json usage_chunk(const ResponseContext& ctx, const TokenUsage& usage) {
  return {{"id", ctx.id},
          {"object", ctx.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", ctx.created},
          {"model", ctx.model},
          {"choices", json::array()},
          {"usage", usage_json(usage)}};
}

json response_body(const ResponseContext& ctx, const std::vector<ChoiceState>& choices, const TokenUsage& usage,
                   bool with_logprobs) {
  json out = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceState& c = choices[i];
    json choice = {{"index", i}};
    if (ctx.chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
      if (c.reasoning) choice["message"]["reasoning_content"] = c.reasoning->empty() ? json(nullptr) : json(*c.reasoning);
      if (!c.tool_calls.empty()) {
        // OpenAI's shape: content null when the reply is calls alone.
        json calls = json::array();
        for (const auto& call : c.tool_calls) {
          calls.push_back({{"id", call.id}, {"type", "function"},
                           {"function", {{"name", call.name}, {"arguments", call.arguments}}}});
        }
        choice["message"]["tool_calls"] = calls;
        if (c.text.empty()) choice["message"]["content"] = nullptr;
      }
      choice["logprobs"] = with_logprobs ? json{{"content", c.logprobs_content}} : json(nullptr);
    } else {
      choice["text"] = c.text;
      choice["logprobs"] = with_logprobs ? c.completion_logprobs : json(nullptr);
      choice["stop_reason"] = c.stop_reason.empty() ? json(nullptr) : json(c.stop_reason);
    }
    choice["finish_reason"] = c.finish_reason;
    if (ctx.return_token_ids) choice["token_ids"] = c.tokens;
    out.push_back(choice);
  }
  return {{"id", ctx.id},
          {"object", ctx.chat ? "chat.completion" : "text_completion"},
          {"created", ctx.created},
          {"model", ctx.model},
          {"choices", out},
          {"usage", usage_json(usage)}};
}

namespace {

// Chat: {token, logprob, bytes} per token, bytes being the token text's UTF-8 bytes.
json chat_entry(const std::string& text, float logprob) {
  json bytes = json::array();
  for (unsigned char ch : text) bytes.push_back(ch);
  return json{{"token", text}, {"logprob", logprob}, {"bytes", bytes}};
}

}  // namespace

json new_logprobs(bool chat, const rpc::pb::Output& output, ChoiceState& choice, bool accumulate,
                  const TokenTextFn& token_text) {
  if (chat) {
    json content = json::array();
    for (const auto& lp : output.logprobs()) {
      json e = chat_entry(token_text(lp.token_id()), lp.logprob());
      json top = json::array();
      for (const auto& t : lp.top()) top.push_back(chat_entry(token_text(t.token_id()), t.logprob()));
      e["top_logprobs"] = top;
      content.push_back(e);
      if (accumulate) choice.logprobs_content.push_back(e);
    }
    return json{{"content", content}};
  }
  json part = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
               {"text_offset", json::array()}};
  for (const auto& lp : output.logprobs()) {
    std::string t = token_text(lp.token_id());
    json top = json::object();
    for (const auto& alt : lp.top()) top[token_text(alt.token_id())] = alt.logprob();
    part["tokens"].push_back(t);
    part["token_logprobs"].push_back(lp.logprob());
    part["top_logprobs"].push_back(top);
    part["text_offset"].push_back(choice.text_offset);
    choice.text_offset += static_cast<int>(t.size());
  }
  if (accumulate) {
    for (const char* key : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) {
      for (auto& v : part[key]) choice.completion_logprobs[key].push_back(v);
    }
  }
  return part;
}

}  // namespace tandem::frontend
