// Chat templates against python3 jinja2 renders (tools/references/chat_template_references.py): the real
// Qwen3 and Llama-3.1 templates (from their tokenizer_config.json), a template that exercises the rest
// of the subset (chat/constructs.jinja), and small templates carried by the cases themselves
// (chat/snippets_cases.json). Byte-identical output, or an error where jinja2 raised one.
#include <gtest/gtest.h>

#include <optional>

#include "common/error.h"
#include "test_util.h"
#include "tokenizer/chat_template.h"

namespace tandem::tokenizer {
namespace {

using testing::read_json;
using testing::read_text;
using testing::test_data;

std::string load_template(const std::string& source) {
  const std::string kind = source.substr(0, source.find(':'));
  const std::string ref = source.substr(source.find(':') + 1);
  if (kind == "config") return read_json(testing::model_dir(ref) + "/tokenizer_config.json")["chat_template"].get<std::string>();
  return read_text(test_data("chat/" + ref));
}

ChatInputs to_inputs(const nlohmann::ordered_json& in) {
  ChatInputs inputs;
  inputs.messages = in.at("messages");
  if (in.contains("tools")) inputs.tools = in["tools"];
  inputs.add_generation_prompt = in.value("add_generation_prompt", false);
  inputs.bos_token = in.value("bos_token", "");
  inputs.eos_token = in.value("eos_token", "");
  if (in.contains("extra")) inputs.extra = in["extra"];
  std::tm now{};  // 2024-07-26 09:30:00, as the reference script's NOW
  now.tm_year = 2024 - 1900;
  now.tm_mon = 6;
  now.tm_mday = 26;
  now.tm_hour = 9;
  now.tm_min = 30;
  now.tm_wday = 5;
  now.tm_yday = 207;
  inputs.now = now;
  return inputs;
}

class ChatTemplateReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ChatTemplateReferenceTest, RendersLikeJinja2) {
  const auto suite = nlohmann::ordered_json::parse(read_text(test_data("chat/" + GetParam() + "_cases.json")));
  const std::string source = suite["template"].get<std::string>();
  std::unique_ptr<ChatTemplate> shared;
  if (source != "inline:") shared = std::make_unique<ChatTemplate>(load_template(source));
  int num_rendered = 0;
  for (const auto& c : suite["cases"]) {
    const std::string name = c["name"].get<std::string>();
    // Cases of the "inline:" suite carry their own template.
    std::unique_ptr<ChatTemplate> own;
    std::optional<StatusOr<std::string>> result;
    try {
      if (!shared) own = std::make_unique<ChatTemplate>(c["template"].get<std::string>());
      result = (shared ? shared : own)->render(to_inputs(c["inputs"]));
    } catch (const Error& e) {
      result = StatusOr<std::string>(Status::Unsupported(e.what()));
    }
    if (c.contains("expected")) {
      ASSERT_TRUE(result->ok()) << name << ": " << result->status().message();
      EXPECT_EQ(**result, c["expected"].get<std::string>()) << name << "\ntemplate: " << c.value("template", "");
      ++num_rendered;
    } else {
      EXPECT_FALSE(result->ok()) << name << ": jinja2 raised " << c["error"] << " but we rendered:\n" << **result;
    }
  }
  if (GetParam() == "qwen3" || GetParam() == "llama3_1") {
    EXPECT_GE(num_rendered, 30);
  }
}

INSTANTIATE_TEST_SUITE_P(Templates, ChatTemplateReferenceTest,
                         ::testing::Values("qwen3", "llama3_1", "constructs", "snippets"));

void expect_parse_error(const std::string& source, const std::string& construct, int line) {
  try {
    ChatTemplate t(source);
    ADD_FAILURE() << "no error for: " << source;
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(construct), std::string::npos) << message;
    EXPECT_NE(message.find("line " + std::to_string(line) + ":"), std::string::npos) << message;
  }
}

TEST(ChatTemplateTest, UnsupportedConstructsAreNamedWithTheirLine) {
  expect_parse_error("{% include 'other.jinja' %}", "{% include %}", 1);
  expect_parse_error("a\n{{ x | frobnicate }}", "filter 'frobnicate'", 2);
  expect_parse_error("a\nb\n{% if x is prime %}{% endif %}", "test 'prime'", 3);
  expect_parse_error("{% call m() %}x{% endcall %}", "{% call %}", 1);
  expect_parse_error("\n\n\n{% for x in y recursive %}{% endfor %}", "recursive for loop", 4);
  expect_parse_error("{% if x %}\nunclosed", "missing {% endif %}", 1);
  expect_parse_error("{{ f(*args) }}", "*args", 1);
}

// tests/fuzz/chat_template_fuzz: number literals out of range escaped as std::out_of_range, not an Error.
TEST(ChatTemplateTest, NumbersOutOfRangeAreTemplateErrors) {
  expect_parse_error("{% for m in messages.99999999999999999999 %}{% endfor %}", "integer index out of range", 1);
  expect_parse_error("\n{{ " + std::string(400, '9') + ".5 }}", "float literal out of range", 2);
  expect_parse_error("{{ 99999999999999999999 }}", "integer literal out of range", 1);
  // Rendering: an attribute path of more digits than an int64 holds is looked up as a name.
  ChatTemplate t("{{ messages | map(attribute='99999999999999999999') | list | length }}");
  ChatInputs in;
  in.messages = nlohmann::ordered_json::parse(R"([{"role":"user","content":"x"}])");
  EXPECT_NO_THROW((void)t.render(in));
}

TEST(ChatTemplateTest, UnsupportedRuntimeConstructsAreUnsupportedErrors) {
  ChatInputs inputs;
  const ChatTemplate append("{% set l = [] %}\n{{ l.append(1) }}");
  auto r = append.render(inputs);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(r.status().message().find("list.append"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("line 2"), std::string::npos) << r.status().message();

  // Python's ints are unbounded; ours stop at 64 bits with an error rather than a wrong number.
  for (const char* big : {"{{ 2 ** 64 }}", "{{ 2 ** 62 * 4 }}", "{{ 9223372036854775807 + 1 }}"}) {
    r = ChatTemplate(big).render(inputs);
    ASSERT_FALSE(r.ok()) << big;
    EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  }

  const ChatTemplate format("{{ '%s!' % 'x' }}");
  r = format.render(inputs);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
}

TEST(ChatTemplateTest, RaiseExceptionIsAnInvalidArgument) {
  const ChatTemplate t("{% if messages | length == 0 %}{{ raise_exception('need a message') }}{% endif %}");
  const auto r = t.render(ChatInputs{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("need a message"), std::string::npos);
}

TEST(ChatTemplateTest, RunawayMacroRecursionIsAnError) {
  const ChatTemplate t("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  const auto r = t.render(ChatInputs{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nested too deeply"), std::string::npos) << r.status().message();
}

TEST(ChatTemplateTest, UndefinedAttributeAccessFails) {
  const ChatTemplate t("{{ nothing.here }}");
  EXPECT_FALSE(t.render(ChatInputs{}).ok());
}

}  // namespace
}  // namespace tandem::tokenizer
