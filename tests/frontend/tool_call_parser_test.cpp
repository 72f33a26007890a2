// The tool-call parsers (hermes, llama3_json) and the chat reply parser that chains the reasoning
// parser before them: every reply gives the same content and calls whole and cut into any pieces
// (every cut in two, every cut in three for the short ones, byte by byte), a call's arguments stream
// as they arrive and join to the whole reply's, malformed calls come back as content, and the stream
// deltas have vLLM's shape.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <iostream>
#include <random>

#include "frontend/chat_reply.h"
#include "frontend/tool_call_parser.h"

namespace tandem::frontend {
namespace {

using nlohmann::json;

struct Result {
  std::string content;
  std::vector<std::pair<std::string, std::string>> calls;  // name, arguments
  std::vector<std::string> ids;
  bool operator==(const Result& o) const { return content == o.content && calls == o.calls && ids == o.ids; }
  friend void PrintTo(const Result& r, std::ostream* os) {
    *os << "content " << nlohmann::json(r.content).dump() << ", calls " << nlohmann::json(r.calls).dump();
  }
};

ToolCallParser::IdFn counter() {
  auto n = std::make_shared<int>(0);
  return [n] { return "call-" + std::to_string((*n)++); };
}

// Checks the deltas' order (a call's header first, once, at the next index; fragments only for a
// call already begun) and applies them.
void add(std::vector<ToolCall>* calls, std::string* content, ToolParse p) {
  *content += p.content;
  for (const ToolCallDelta& d : p.deltas) {
    if (!d.id.empty()) {
      EXPECT_EQ(d.index, static_cast<int>(calls->size())) << "a new call takes the next index";
      EXPECT_FALSE(d.name.empty());
    } else {
      EXPECT_LT(d.index, static_cast<int>(calls->size())) << "a fragment of a call not yet begun";
      EXPECT_TRUE(d.name.empty());
    }
    apply_tool_call_deltas({d}, calls);
  }
}

Result run(ToolParserKind kind, const std::vector<std::string>& pieces) {
  ToolCallParser parser(kind, counter());
  std::vector<ToolCall> calls;
  Result r;
  for (const auto& p : pieces) add(&calls, &r.content, parser.feed(p));
  add(&calls, &r.content, parser.finish());
  for (const auto& c : calls) {
    r.calls.emplace_back(c.name, c.arguments);
    r.ids.push_back(c.id);
  }
  return r;
}

// `text` gives `expected` whole and in every cutting tried.
void expect_all_cuttings(ToolParserKind kind, const std::string& text, const Result& expected) {
  ASSERT_EQ(run(kind, {text}), expected) << "whole: " << text;
  for (size_t i = 0; i <= text.size(); ++i) {
    ASSERT_EQ(run(kind, {text.substr(0, i), text.substr(i)}), expected) << "cut at " << i << ": " << text;
  }
  if (text.size() <= 160) {
    for (size_t i = 0; i <= text.size(); ++i) {
      for (size_t j = i; j <= text.size(); ++j) {
        ASSERT_EQ(run(kind, {text.substr(0, i), text.substr(i, j - i), text.substr(j)}), expected)
            << "cuts at " << i << "," << j << ": " << text;
      }
    }
  }
  std::vector<std::string> bytes;
  for (char c : text) bytes.emplace_back(1, c);
  ASSERT_EQ(run(kind, bytes), expected) << "byte by byte: " << text;
}

Result calls(std::string content, std::vector<std::pair<std::string, std::string>> list) {
  Result r{std::move(content), std::move(list), {}};
  for (size_t i = 0; i < r.calls.size(); ++i) r.ids.push_back("call-" + std::to_string(i));
  return r;
}

const std::string kWeather = R"({"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}})";
const std::string kWeatherArgs = R"({"city":"Paris","unit":"celsius"})";

TEST(HermesToolParser, OneCallAlone) {
  expect_all_cuttings(ToolParserKind::kHermes, "<tool_call>\n" + kWeather + "\n</tool_call>",
                      calls("", {{"get_weather", kWeatherArgs}}));
}

TEST(HermesToolParser, TextThenSeveralCalls) {
  const std::string text = "Let me check both.\n\n<tool_call>\n" + kWeather +
                           "\n</tool_call>\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": \"news\", \"limit\": 3}}\n"
                           "</tool_call>\n";
  expect_all_cuttings(ToolParserKind::kHermes, text,
                      calls("Let me check both.", {{"get_weather", kWeatherArgs}, {"search", R"({"query":"news","limit":3})"}}));
}

TEST(HermesToolParser, ArgumentsKeepTheModelsKeyOrderAndText) {
  expect_all_cuttings(ToolParserKind::kHermes,
                      R"(<tool_call>{"name":"f","arguments":{"z":1,"a":{"y":[1,2.5,"é\"}"],"b":null}}}</tool_call>)",
                      calls("", {{"f", R"({"z":1,"a":{"y":[1,2.5,"é\"}"],"b":null}})"}}));
  // No arguments at all: a function without parameters.
  expect_all_cuttings(ToolParserKind::kHermes, R"(<tool_call>{"name": "now"}</tool_call>)", calls("", {{"now", "{}"}}));
}

TEST(HermesToolParser, MalformedCallsAreContent) {
  for (const std::string& text : {
           std::string("<tool_call>\n{\"name\": \"f\" \"arguments\": {\"a\": 1}}\n</tool_call>"),  // not JSON (no comma)
           std::string("<tool_call>\n{\"id\": 1, \"name\": \"f\", \"arguments\": {\"a\": }}\n</tool_call>"),  // read whole: not JSON
           std::string("<tool_call>\n{\"arguments\": {}}\n</tool_call>"),                          // no name
           std::string("<tool_call>{\"name\": \"\", \"arguments\": {}}</tool_call>"),               // empty name
           std::string("<tool_call>{\"name\": \"f\", \"arguments\": \"{}\"}</tool_call>"),          // arguments a string
           std::string("<tool_call>[1, 2]</tool_call>"),
           std::string("Sure: <tool_call>{\"name\": \"f\", \"argu"),                                  // cut off mid-call
       }) {
    expect_all_cuttings(ToolParserKind::kHermes, text, calls(text, {}));
  }
  // A valid call and a malformed one: the call, and the malformed one's text as written.
  const std::string bad = "\n<tool_call>{oops}</tool_call>";
  expect_all_cuttings(ToolParserKind::kHermes, "<tool_call>" + kWeather + "</tool_call>" + bad,
                      calls(bad, {{"get_weather", kWeatherArgs}}));
}

TEST(HermesToolParser, ACallCutOffBeforeItsClosingTagCountsWhenWhole) {
  expect_all_cuttings(ToolParserKind::kHermes, "<tool_call>\n" + kWeather + "\n",
                      calls("", {{"get_weather", kWeatherArgs}}));
  // Another key order is read whole: a call when its JSON is complete, content when it is not.
  expect_all_cuttings(ToolParserKind::kHermes, R"(<tool_call>{"arguments": {"x": [1]}, "name": "f"})",
                      calls("", {{"f", R"({"x":[1]})"}}));
  expect_all_cuttings(ToolParserKind::kHermes, R"(<tool_call>{"arguments": {"x": [1]}, "name": "f")",
                      calls(R"(<tool_call>{"arguments": {"x": [1]}, "name": "f")", {}));
}

// Once {"name": ..., "arguments": { is read the header is out, so the call stays a call whatever the
// model writes next: its arguments are what it wrote (blanks outside strings removed), cut where the
// call or the reply ends; what follows the arguments inside the call is not shown.
TEST(HermesToolParser, ACallBrokenAfterItsHeaderStaysACall) {
  expect_all_cuttings(ToolParserKind::kHermes, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": }}\n</tool_call>",
                      calls("", {{"f", R"({"a":})"}}));
  expect_all_cuttings(ToolParserKind::kHermes, R"(<tool_call>{"name": "f", "arguments": {"a": "x y", "b": [1,)",
                      calls("", {{"f", R"({"a":"x y","b":[1,)"}}));
  expect_all_cuttings(ToolParserKind::kHermes, R"(<tool_call>{"name": "f", "arguments": {"a": "</tool_call> after)",
                      calls(" after", {{"f", R"({"a":")"}}));
  expect_all_cuttings(ToolParserKind::kHermes, R"(<tool_call>{"name": "f", "arguments": {"a": 1}, "oops": ]]</tool_call>ok)",
                      calls("ok", {{"f", R"({"a":1})"}}));
}

// The point of streaming: the header goes out when the arguments begin, and each piece of arguments
// goes out with the piece of reply that brought it, before the call is complete.
TEST(ToolParsers, ArgumentsStreamAsTheyArrive) {
  for (const ToolParserKind kind : {ToolParserKind::kHermes, ToolParserKind::kLlama3Json}) {
    const std::string open = kind == ToolParserKind::kHermes ? "<tool_call>\n" : "";
    ToolCallParser parser(kind, counter());
    ToolParse p = parser.feed(open + R"({"name": "get_weather", "argu)");
    EXPECT_TRUE(p.deltas.empty()) << "no header before the arguments begin";
    p = parser.feed(R"(ments": {"ci)");
    ASSERT_EQ(p.deltas.size(), 1u) << tool_parser_name(kind);
    EXPECT_EQ(p.deltas[0].id, "call-0");
    EXPECT_EQ(p.deltas[0].name, "get_weather");
    EXPECT_EQ(p.deltas[0].arguments, R"({"ci)");
    p = parser.feed(R"(ty": "Par)");
    ASSERT_EQ(p.deltas.size(), 1u);
    EXPECT_EQ(p.deltas[0].index, 0);
    EXPECT_TRUE(p.deltas[0].id.empty());
    EXPECT_EQ(p.deltas[0].arguments, R"(ty":"Par)");
    p = parser.feed("is\", \"unit\": \"celsius\"}}");
    ASSERT_EQ(p.deltas.size(), 1u);
    EXPECT_EQ(p.deltas[0].arguments, R"(is","unit":"celsius"})");
    EXPECT_TRUE(p.content.empty());
    p = parser.feed(kind == ToolParserKind::kHermes ? "\n</tool_call>" : "");
    ToolParse rest = parser.finish();
    EXPECT_TRUE(p.deltas.empty() && rest.deltas.empty());
    EXPECT_EQ(p.content + rest.content, "");
    EXPECT_EQ(parser.num_calls(), 1);
  }
  // A piece ending in what may begin </tool_call> holds that much back, inside the arguments too.
  ToolCallParser parser(ToolParserKind::kHermes, counter());
  ToolParse p = parser.feed(R"(<tool_call>{"name": "f", "arguments": {"a": "1 </tool)");
  ASSERT_EQ(p.deltas.size(), 1u);
  EXPECT_EQ(p.deltas[0].arguments, R"({"a":"1 )");
  p = parser.feed(R"(s"}})");
  ASSERT_EQ(p.deltas.size(), 1u);
  EXPECT_EQ(p.deltas[0].arguments, R"(</tools"})");
}

TEST(HermesToolParser, TextWithoutCallsIsKeptByteForByte) {
  for (const std::string& text : {std::string("Hello!\n"), std::string("a < b and <tool_c is not a tag <"),
                                 std::string("  \n\n "), std::string("ends with <tool_call"),
                                 std::string("</tool_call> stray close")}) {
    expect_all_cuttings(ToolParserKind::kHermes, text, calls(text, {}));
  }
}

TEST(Llama3JsonToolParser, PlainAndPythonTagCalls) {
  const std::string call = R"({"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}})";
  expect_all_cuttings(ToolParserKind::kLlama3Json, call, calls("", {{"get_weather", kWeatherArgs}}));
  expect_all_cuttings(ToolParserKind::kLlama3Json, "  \n" + call + "\n", calls("", {{"get_weather", kWeatherArgs}}));
  expect_all_cuttings(ToolParserKind::kLlama3Json,
                      "<|python_tag|>" + call + "; {\"name\": \"search\", \"arguments\": {\"q\": \"}{;\"}};{\"name\":\"now\"}",
                      calls("", {{"get_weather", kWeatherArgs}, {"search", R"({"q":"}{;"})"}, {"now", "{}"}}));
}

TEST(Llama3JsonToolParser, TextAndMalformedJsonAreContent) {
  for (const std::string& text : {std::string("Hello {\"name\": \"f\"}"), std::string("{\"name\": 1, \"parameters\": {}}"),
                                 std::string("{\"name\": \"f\", \"parameters\": [1]}"), std::string("{not json}"),
                                 std::string("<|python_tag|>"), std::string("<|python_ta"), std::string(" <|pyt x"),
                                 std::string("{\"parameters\": {\"a\": 1}"), std::string("\n\n")}) {
    expect_all_cuttings(ToolParserKind::kLlama3Json, text, calls(text, {}));
  }
  // Its header out, a call whose object never closes is a call (its arguments were whole here).
  expect_all_cuttings(ToolParserKind::kLlama3Json, R"({"name": "f", "parameters": {"a": 1})", calls("", {{"f", R"({"a":1})"}}));
  // Text after a call: the call, then the text as content.
  expect_all_cuttings(ToolParserKind::kLlama3Json, R"({"name": "f", "parameters": {}} and more)", calls(" and more", {{"f", "{}"}}));
}

// Replies made at random of the pieces the parsers look for (tags, braces, quotes, separators,
// blanks): whatever they hold, every cutting gives what the whole gives, and with no call read the
// content is the reply byte for byte.
TEST(ToolParsers, RandomRepliesGiveTheSameResultWholeAndInPieces) {
  const std::vector<std::string> parts = {"<tool_call>", "</tool_call>", "<tool_", "{", "}", "[", "]", "\"name\"", ": ",
                                          "\"f\"", ",", "\"arguments\"", "\"parameters\"", "{}", " ", "\n", "x", ";",
                                          "<|python_tag|>", "\"", "\\", "1", "<"};
  std::mt19937 rng(21);
  for (const ToolParserKind kind : {ToolParserKind::kHermes, ToolParserKind::kLlama3Json}) {
    int with_calls = 0;
    for (int n = 0; n < 400; ++n) {
      std::string text;
      const int len = 1 + static_cast<int>(rng() % 24);
      for (int i = 0; i < len; ++i) text += parts[rng() % parts.size()];
      // Half of them hold a well-formed call somewhere.
      if (n % 2 == 0) {
        const std::string call = R"({"name": "f", "arguments": {"a": [1, "}"]}})";
        if (kind == ToolParserKind::kHermes) {
          text.insert(rng() % (text.size() + 1), "<tool_call>" + call + "</tool_call>");
        } else {
          // Llama's calls are the reply itself: at its start, maybe after the tag, maybe more after.
          const char* lead[] = {"", " \n", "<|python_tag|>"};
          text = lead[rng() % 3] + call + (rng() % 2 ? "; " + call : "") + (rng() % 2 ? text : "");
        }
      }
      const Result whole = run(kind, {text});
      with_calls += whole.calls.empty() ? 0 : 1;
      if (whole.calls.empty()) {
        ASSERT_EQ(whole.content, text) << "nothing read, so all of it is content";
      }
      for (size_t i = 0; i <= text.size(); ++i) {
        ASSERT_EQ(run(kind, {text.substr(0, i), text.substr(i)}), whole) << "cut at " << i << ": " << text;
      }
      std::vector<std::string> bytes;
      for (char c : text) bytes.emplace_back(1, c);
      ASSERT_EQ(run(kind, bytes), whole) << text;
    }
    EXPECT_GT(with_calls, 40) << tool_parser_name(kind);  // the cases exercise calls, not only text
    std::cout << tool_parser_name(kind) << ": " << with_calls << " of 400 replies held calls\n";
  }
}

// A long call (a file's worth of code in its arguments) arriving a few bytes at a time: each piece
// continues the search where the last stopped, so this stays linear.
TEST(ToolParsers, LongCallsInSmallPieces) {
  std::string code;
  for (int i = 0; i < 4000; ++i) code += "if (x[" + std::to_string(i) + "]) { y = \\\"}\\\"; }\\n";
  const std::string args = "{\"code\":\"" + code + "\"}";
  for (const ToolParserKind kind : {ToolParserKind::kHermes, ToolParserKind::kLlama3Json}) {
    const std::string call = std::string("{\"name\": \"write\", \"") +
                             (kind == ToolParserKind::kHermes ? "arguments" : "parameters") + "\": " + args + "}";
    const std::string text = kind == ToolParserKind::kHermes ? "<tool_call>\n" + call + "\n</tool_call>" : call;
    std::vector<std::string> pieces;
    for (size_t at = 0; at < text.size(); at += 3) pieces.push_back(text.substr(at, 3));
    const Result r = run(kind, pieces);
    ASSERT_EQ(r.calls.size(), 1u) << tool_parser_name(kind);
    EXPECT_EQ(r.calls[0].second, args);
    EXPECT_EQ(r.content, "");
  }
}

TEST(ToolParserNames, AreVllmsAndUnknownOnesAreRefused) {
  EXPECT_EQ(parse_tool_parser_kind("hermes"), ToolParserKind::kHermes);
  EXPECT_EQ(parse_tool_parser_kind("llama3_json"), ToolParserKind::kLlama3Json);
  EXPECT_EQ(parse_tool_parser_kind(""), ToolParserKind::kNone);
  EXPECT_FALSE(parse_tool_parser_kind("mistral"));
  const std::string id = new_tool_call_id();
  EXPECT_EQ(id.rfind("chatcmpl-tool-", 0), 0u);
  EXPECT_EQ(id.size(), std::string("chatcmpl-tool-").size() + 32);
  EXPECT_NE(id, new_tool_call_id());
}

// The reasoning parser runs first: a think block is reasoning even when it holds a call.
struct Chat {
  std::string reasoning, content;
  std::vector<std::string> names;
  bool operator==(const Chat& o) const { return reasoning == o.reasoning && content == o.content && names == o.names; }
};

Chat run_chat(const std::vector<std::string>& pieces, int max_calls = -1) {
  ChatReplyParser parser(ReasoningFormat::kQwen3, false, ToolParserKind::kHermes, max_calls, counter());
  Chat out;
  for (size_t i = 0; i < pieces.size(); ++i) {
    ChatPiece p = parser.feed(pieces[i], i + 1 == pieces.size());
    out.reasoning += p.reasoning;
    out.content += p.content;
    for (const auto& c : p.calls) {
      if (!c.id.empty()) {
        EXPECT_EQ(c.index, static_cast<int>(out.names.size()));
        out.names.push_back(c.name);
      }
    }
  }
  return out;
}

TEST(ChatReplyParser, ThinkBlockFirstThenCalls) {
  const std::string text = "<think>\nMaybe <tool_call>{\"name\": \"no\"}</tool_call>.\n</think>\n\n<tool_call>\n" + kWeather +
                           "\n</tool_call>\n<tool_call>{\"name\": \"now\"}</tool_call>";
  const Chat expected{"\nMaybe <tool_call>{\"name\": \"no\"}</tool_call>.\n", "", {"get_weather", "now"}};
  EXPECT_EQ(run_chat({text}), expected);
  for (size_t i = 0; i <= text.size(); ++i) {
    ASSERT_EQ(run_chat({text.substr(0, i), text.substr(i)}), expected) << i;
  }
  // parallel_tool_calls false keeps the first call.
  EXPECT_EQ(run_chat({text}, 1).names, std::vector<std::string>{"get_weather"});
}

TEST(ChatReplyDeltas, HeaderThenArgumentsPerCallAsVllmStreamsThem) {
  ChatPiece piece;
  piece.content = "Checking.";
  piece.calls = {{2, "chatcmpl-tool-1", "get_weather", kWeatherArgs}};
  const auto deltas = chat_piece_deltas(piece, /*reasoning=*/false, 5);
  ASSERT_EQ(deltas.size(), 3u);
  EXPECT_EQ(deltas[0], json({{"content", "Checking."}}));
  EXPECT_EQ(deltas[1], json::parse(R"({"tool_calls":[{"index":2,"id":"chatcmpl-tool-1","type":"function",
                                       "function":{"name":"get_weather","arguments":""}}]})"));
  EXPECT_EQ(deltas[2], json::parse(R"({"tool_calls":[{"index":2,"function":{"arguments":)" + json(kWeatherArgs).dump() + "}}]}"));
  // Calls alone: no empty text delta before them; nothing at all: the usual empty deltas.
  piece.content.clear();
  EXPECT_EQ(chat_piece_deltas(piece, false, 5).size(), 2u);
  EXPECT_EQ(chat_piece_deltas(ChatPiece{}, false, 1), std::vector<json>{json({{"content", ""}})});
  EXPECT_EQ(chat_piece_deltas(ChatPiece{}, true, 0), std::vector<json>{json::object()});
  EXPECT_EQ(chat_piece_deltas(ChatPiece{"r", "", {}}, true, 1), std::vector<json>{json({{"reasoning_content", "r"}})});
  // A header alone (the arguments not begun in this piece), then fragments alone.
  EXPECT_EQ(chat_piece_deltas(ChatPiece{"", "", {{0, "id-0", "f", ""}}}, false, 1),
            std::vector<json>{json::parse(R"({"tool_calls":[{"index":0,"id":"id-0","type":"function","function":{"name":"f","arguments":""}}]})")});
  EXPECT_EQ(chat_piece_deltas(ChatPiece{"", "", {{0, "", "", R"({"a)"}, {1, "id-1", "g", "{"}}}, false, 1),
            (std::vector<json>{json::parse(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"a"}}]})"),
                               json::parse(R"({"tool_calls":[{"index":1,"id":"id-1","type":"function","function":{"name":"g","arguments":""}}]})"),
                               json::parse(R"({"tool_calls":[{"index":1,"function":{"arguments":"{"}}]})")}));
  const std::vector<ToolCall> made = {{"id-0", "f", "{}"}};
  EXPECT_EQ(chat_finish_reason(made, "stop"), "tool_calls");
  EXPECT_EQ(chat_finish_reason(made, "length"), "tool_calls");
  EXPECT_EQ(chat_finish_reason(made, "abort"), "abort");
  EXPECT_EQ(chat_finish_reason({}, "stop"), "stop");
}

}  // namespace
}  // namespace tandem::frontend
