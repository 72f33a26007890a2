// Token masks: a small hand-made vocabulary (exact masks per state, the budget rule) and Qwen3's real
// 151k vocabulary (random walks through the masks always end in a valid document).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <random>

#include "structured/token_constraint.h"
#include "tokenizer/tokenizer.h"

namespace tandem::structured {
namespace {

std::vector<int32_t> allowed_ids(const CompiledGrammar& g, int32_t state, int remaining, bool* can_end = nullptr) {
  std::vector<uint32_t> words(g.vocab().num_words());
  const bool end = g.fill_mask(state, remaining, words);
  if (can_end) *can_end = end;
  std::vector<int32_t> ids;
  for (int t = 0; t < g.vocab().size(); ++t) {
    if (words[t >> 5] >> (t & 31) & 1) ids.push_back(t);
  }
  return ids;
}

std::shared_ptr<const CompiledGrammar> compile(const std::string& spec, std::shared_ptr<const TokenVocabulary> v) {
  auto g = CompiledGrammar::compile(spec, std::move(v));
  EXPECT_TRUE(g.ok()) << g.status().to_string();
  return *g;
}

TEST(TokenMask, SmallVocabulary) {
  //                                             0     1     2     3      4     5     6    7      8       9
  std::vector<std::optional<std::string>> bytes = {"y", "e", "s", "yes", "no", "n", "o", "x", std::nullopt, "yesno"};
  auto vocab = std::make_shared<TokenVocabulary>(bytes, 12);  // model vocabulary padded past the tokenizer's
  EXPECT_EQ(vocab->size(), 12);
  auto g = compile(R"({"choice": ["yes", "no"]})", vocab);
  bool can_end = true;
  EXPECT_EQ(allowed_ids(*g, 0, 100, &can_end), (std::vector<int32_t>{0, 3, 4, 5}));
  EXPECT_FALSE(can_end);
  Matcher m(g);
  EXPECT_FALSE(m.advance(7));
  EXPECT_FALSE(m.advance(8));  // a token without bytes is never allowed
  ASSERT_TRUE(m.advance(0));
  EXPECT_EQ(allowed_ids(*g, m.state(), 100), (std::vector<int32_t>{1}));
  ASSERT_TRUE(m.advance(1));
  ASSERT_TRUE(m.advance(2));
  EXPECT_TRUE(m.accepting());
  EXPECT_TRUE(allowed_ids(*g, m.state(), 100, &can_end).empty());
  EXPECT_TRUE(can_end);

  // The budget: with one token left only tokens that complete the text are allowed.
  auto r = compile(R"({"regex": "(yes)+"})", vocab);
  EXPECT_EQ(allowed_ids(*r, 0, 1), (std::vector<int32_t>{3}));
  EXPECT_EQ(allowed_ids(*r, 0, 2), (std::vector<int32_t>{3}));     // "y" then "es" is not a token
  EXPECT_EQ(allowed_ids(*r, 0, 3), (std::vector<int32_t>{0, 3}));
  EXPECT_EQ(allowed_ids(*r, 0, 50), (std::vector<int32_t>{0, 3}));
  // A budget below the shortest text: the reply will be cut, so any allowed token goes on (not EOS).
  auto two = compile(R"({"regex": "yesyes"})", vocab);
  EXPECT_EQ(allowed_ids(*two, 0, 1, &can_end), (std::vector<int32_t>{0, 3}));
  EXPECT_FALSE(can_end);
}

TEST(TokenMask, CachedGrammarsAreShared) {
  std::vector<std::optional<std::string>> bytes = {"a", "b"};
  auto vocab = std::make_shared<TokenVocabulary>(bytes, 2);
  auto a = CompiledGrammar::compile_cached(R"({"regex": "a+b"})", vocab);
  auto b = CompiledGrammar::compile_cached(R"({"regex": "a+b"})", vocab);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->get(), b->get());
  EXPECT_FALSE(CompiledGrammar::compile_cached(R"({"json_schema": {"type": "string", "format": "uri"}})", vocab).ok());
}

// A weak model: uniform over the allowed tokens, EOS whenever allowed with probability 1/4.
std::string random_walk(const CompiledGrammar& g, int max_tokens, std::mt19937& rng, bool* ended) {
  Matcher m(std::shared_ptr<const CompiledGrammar>(&g, [](const CompiledGrammar*) {}));
  std::vector<uint32_t> words(g.vocab().num_words());
  std::string text;
  *ended = false;
  for (int i = 0; i < max_tokens; ++i) {
    const bool can_end = m.fill_mask(max_tokens - i, words);
    std::vector<int32_t> ids;
    for (int t = 0; t < g.vocab().size(); ++t) {
      if (words[t >> 5] >> (t & 31) & 1) ids.push_back(t);
    }
    if (can_end && (ids.empty() || rng() % 4 == 0)) {
      *ended = true;
      return text;
    }
    EXPECT_FALSE(ids.empty()) << "no token and no end at " << text;
    if (ids.empty()) return text;
    const int32_t t = ids[rng() % ids.size()];
    EXPECT_TRUE(m.advance(t));
    text += g.vocab().bytes(t);
  }
  *ended = m.accepting();
  return text;
}

TEST(TokenMask, RandomWalksOnQwen3VocabularyEndValid) {
  auto tok = tokenizer::Tokenizer::load(std::string(TANDEM_DATA_DIR) + "/tokenizers/qwen3");
  std::vector<std::optional<std::string>> bytes(tok->vocab_size());
  for (int32_t id = 0; id < tok->vocab_size(); ++id) {
    if (tok->is_special(id)) continue;
    if (auto b = tok->token_bytes(id)) bytes[id] = std::string(*b);
  }
  auto vocab = std::make_shared<TokenVocabulary>(bytes, 151936);
  const std::string schema = R"({"type": "object", "properties": {
      "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
      "email": {"type": "string", "pattern": "^[a-z]+@[a-z]+\\.com$"},
      "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
      "ok": {"type": "boolean"}}, "required": ["name", "age", "email", "ok"], "additionalProperties": false})";
  auto g = compile(R"({"json_schema": )" + schema + "}", vocab);
  std::mt19937 rng(7);
  for (int trial = 0; trial < 6; ++trial) {
    bool ended = false;
    const int max_tokens = trial % 2 == 0 ? 60 : 400;
    const std::string text = random_walk(*g, max_tokens, rng, &ended);
    EXPECT_TRUE(g->dfa().matches(text)) << text;
    const auto doc = nlohmann::json::parse(text);  // throws on invalid JSON
    EXPECT_TRUE(doc.contains("name") && doc.contains("age") && doc.contains("email") && doc.contains("ok")) << text;
    EXPECT_LE(doc["age"].get<int>(), 150);
  }
}

}  // namespace
}  // namespace tandem::structured
