#include "tokenizer/chat_template.h"

#include <chrono>

#include "common/error.h"
#include "tokenizer/jinja/interpreter.h"
#include "tokenizer/jinja/parser.h"

namespace tandem::tokenizer {
namespace {

using jinja::CallArgs;
using jinja::TemplateError;
using jinja::Value;

std::string where(const TemplateError& e) {
  return "chat template line " + std::to_string(e.line()) + ": " + e.what();
}

std::unordered_map<std::string, Value> make_globals(const ChatInputs& in) {
  std::unordered_map<std::string, Value> g;
  g["raise_exception"] = Value::function("raise_exception", [](CallArgs& c) -> Value {
    throw jinja::RaisedError(c.positional.empty() ? "raise_exception()" : c.positional[0].str(), c.line);
  });
  g["namespace"] = Value::function("namespace", [](CallArgs& c) {
    Value ns = Value::dict();
    ns.dict_data().is_namespace = true;
    for (const auto& p : c.positional) {
      if (!p.is_dict()) throw TemplateError("namespace() takes a mapping or keyword arguments", c.line);
      for (const auto& [k, v] : p.dict_data().items) ns.dict_data().set(k, v);
    }
    for (const auto& [k, v] : c.keyword) ns.dict_data().set(k, v);
    return ns;
  });
  g["dict"] = Value::function("dict", [](CallArgs& c) {
    Value d = Value::dict();
    for (const auto& p : c.positional) {
      if (!p.is_dict()) throw TemplateError("unsupported construct: dict() of a non-mapping", c.line);
      for (const auto& [k, v] : p.dict_data().items) d.dict_data().set(k, v);
    }
    for (const auto& [k, v] : c.keyword) d.dict_data().set(k, v);
    return d;
  });
  g["range"] = Value::function("range", [](CallArgs& c) {
    if (!c.keyword.empty() || c.positional.empty() || c.positional.size() > 3) {
      throw TemplateError("range() takes 1 to 3 positional arguments", c.line);
    }
    for (const auto& p : c.positional)
      if (!p.is_int() && !p.is_bool()) throw TemplateError("range() arguments must be integers", c.line);
    int64_t start = 0, stop, step = 1;
    if (c.positional.size() == 1) {
      stop = c.positional[0].as_int();
    } else {
      start = c.positional[0].as_int();
      stop = c.positional[1].as_int();
      if (c.positional.size() == 3) step = c.positional[2].as_int();
    }
    if (step == 0) throw TemplateError("range() arg 3 must not be zero", c.line);
    std::vector<Value> out;
    // The sandbox caps ranges at 100000 items (jinja2.sandbox.MAX_RANGE).
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (out.size() >= 100000) throw TemplateError("range too big", c.line);
      out.push_back(Value::integer(i));
    }
    return Value::list(out);
  });
  std::tm now{};
  if (in.now) {
    now = *in.now;
  } else {
    const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    localtime_r(&t, &now);
  }
  g["strftime_now"] = Value::function("strftime_now", [now](CallArgs& c) {
    if (c.positional.size() != 1 || !c.positional[0].is_string()) throw TemplateError("strftime_now() takes a format string", c.line);
    char buf[512];
    const size_t n = std::strftime(buf, sizeof(buf), c.positional[0].as_string().c_str(), &now);
    return Value::string(std::string(buf, n));
  });
  g["messages"] = Value::from_json(in.messages);
  g["tools"] = Value::from_json(in.tools);
  g["documents"] = Value::none();  // apply_chat_template always passes documents (RAG), None when absent
  g["add_generation_prompt"] = Value::boolean(in.add_generation_prompt);
  if (!in.bos_token.empty()) g["bos_token"] = Value::string(in.bos_token);
  if (!in.eos_token.empty()) g["eos_token"] = Value::string(in.eos_token);
  for (const auto& [k, v] : in.extra.items()) g[k] = Value::from_json(v);
  return g;
}

}  // namespace

ChatTemplate::ChatTemplate(const std::string& source) {
  try {
    body_ = std::make_unique<jinja::Body>(jinja::parse_template(source));
  } catch (const TemplateError& e) {
    throw Error(where(e));
  }
}

ChatTemplate::~ChatTemplate() = default;

StatusOr<std::string> ChatTemplate::render(const ChatInputs& inputs) const {
  try {
    return jinja::render(*body_, make_globals(inputs));
  } catch (const jinja::RaisedError& e) {
    return Status::InvalidArgument(where(e));
  } catch (const TemplateError& e) {
    const std::string message = where(e);
    if (message.find("unsupported construct") != std::string::npos) return Status::Unsupported(message);
    return Status::InvalidArgument(message);
  }
}

}  // namespace tandem::tokenizer
