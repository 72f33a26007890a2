// Added-token flags and unsupported configurations, on a small tokenizer.json built here. Expected
// ids follow Hugging Face's AddedVocabulary rules (tokenizers/src/tokenizer/added_vocabulary.rs):
// lstrip/rstrip swallow adjacent whitespace, single_word needs non-alphanumeric neighbours,
// normalized tokens are matched after the normalizer.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "tokenizer/tokenizer.h"

namespace tandem::tokenizer {
namespace {

// GPT-2's bytes_to_unicode, written out again here so the fixture does not come from the code under test.
std::string byte_char(int b) {
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  int cp = b;
  if (!printable) {
    int n = 0;
    for (int i = 0; i < b; ++i) {
      const bool p = (i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF);
      if (!p) ++n;
    }
    cp = 256 + n;
  }
  std::string out;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return out;
}

// Vocabulary: byte b has id b; one merge ("a", "b") -> "ab" = 256. Added tokens from 300.
nlohmann::json base_json() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  vocab["ab"] = 256;
  nlohmann::json added = nlohmann::json::array();
  auto add = [&](int id, const std::string& content, bool lstrip, bool rstrip, bool single_word, bool normalized, bool special) {
    added.push_back({{"id", id}, {"content", content}, {"lstrip", lstrip}, {"rstrip", rstrip},
                     {"single_word", single_word}, {"normalized", normalized}, {"special", special}});
  };
  add(300, "<L>", true, false, false, false, false);
  add(301, "<R>", false, true, false, false, false);
  add(302, "<W>", false, false, true, false, false);
  add(303, "\u00e9", false, false, false, true, false);  // é, matched after NFC
  add(304, "<S>", false, false, false, false, true);
  add(305, "<S>x", false, false, false, false, true);     // longer match wins
  return {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array({"a b"})}}},
  };
}

std::vector<int32_t> bytes(const std::string& s) { return std::vector<int32_t>(s.begin(), s.end()); }

class SyntheticTokenizerTest : public ::testing::Test {
 protected:
  std::unique_ptr<Tokenizer> tok_ = Tokenizer::from_json(base_json().dump(), "");
  std::vector<int32_t> encode(const std::string& s) { return tok_->encode(s, false); }
};

TEST_F(SyntheticTokenizerTest, MergesByRank) {
  EXPECT_EQ(encode("ab"), (std::vector<int32_t>{256}));
  EXPECT_EQ(encode("aab"), (std::vector<int32_t>{'a', 256}));
}

TEST_F(SyntheticTokenizerTest, LstripSwallowsWhitespaceBefore) {
  EXPECT_EQ(encode("x \t <L>y"), (std::vector<int32_t>{'x', 300, 'y'}));
  EXPECT_EQ(encode("x<L> y"), (std::vector<int32_t>{'x', 300, ' ', 'y'}));
}

TEST_F(SyntheticTokenizerTest, RstripSwallowsWhitespaceAfter) {
  EXPECT_EQ(encode("x<R> \n y"), (std::vector<int32_t>{'x', 301, 'y'}));
  // The rstripped spaces are not available to a following lstrip token.
  EXPECT_EQ(encode("<R>  <L>"), (std::vector<int32_t>{301, 300}));
}

TEST_F(SyntheticTokenizerTest, SingleWordNeedsNonAlphanumericNeighbours) {
  EXPECT_EQ(encode(" <W> "), (std::vector<int32_t>{' ', 302, ' '}));
  EXPECT_EQ(encode("<W>,"), (std::vector<int32_t>{302, ','}));
  auto inside = bytes("x<W>y");
  EXPECT_EQ(encode("x<W>y"), inside);
  EXPECT_EQ(encode("\u00e9<W>"), (std::vector<int32_t>{303, '<', 'W', '>'}));  // é is alphabetic
}

TEST_F(SyntheticTokenizerTest, NormalizedTokensMatchAfterNormalization) {
  // "e" + U+0301 becomes é under NFC, then matches the normalized added token.
  EXPECT_EQ(encode("e\u0301"), (std::vector<int32_t>{303}));
  EXPECT_EQ(encode("a\u00e9b"), (std::vector<int32_t>{'a', 303, 'b'}));
}

TEST_F(SyntheticTokenizerTest, LongestAddedTokenWins) {
  EXPECT_EQ(encode("<S>x<S>"), (std::vector<int32_t>{305, 304}));
}

TEST_F(SyntheticTokenizerTest, DecodeSkipsOnlySpecialTokens) {
  const std::vector<int32_t> ids = {'a', 304, 301, 'b'};
  EXPECT_EQ(tok_->decode(ids, false), "a<S><R>b");
  EXPECT_EQ(tok_->decode(ids, true), "a<R>b");
}

void expect_error_naming(const nlohmann::json& j, const std::string& name) {
  try {
    Tokenizer::from_json(j.dump(), "");
    ADD_FAILURE() << "expected an error naming " << name;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
}

TEST(UnsupportedTokenizerTest, ErrorsNameWhatIsUnsupported) {
  auto j = base_json();
  j["model"]["type"] = "WordPiece";
  expect_error_naming(j, "WordPiece");
  j = base_json();
  j["model"]["type"] = "Unigram";
  expect_error_naming(j, "Unigram");
  j = base_json();  // a real Unigram model: vocab is a list of [piece, score]
  j["model"] = {{"type", "Unigram"}, {"unk_id", 0},
                {"vocab", nlohmann::json::array({nlohmann::json::array({"a", -1.0}), nlohmann::json::array({"b", -2.0})})}};
  expect_error_naming(j, "Unigram");
  j["model"]["vocab"] = {{"a", -1.0}, {"b", -2.0}};  // an object of scores
  expect_error_naming(j, "Unigram");
  j = base_json();
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  expect_error_naming(j, "Metaspace");
  j = base_json();
  j["normalizer"] = {{"type", "NFKC"}};
  expect_error_naming(j, "NFKC");
  j = base_json();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error_naming(j, "WordPiece");
  j = base_json();
  j["post_processor"] = {{"type", "RobertaProcessing"}};
  expect_error_naming(j, "RobertaProcessing");
  j = base_json();
  j["model"]["byte_fallback"] = true;
  expect_error_naming(j, "byte_fallback");
}

// Ids are u32 in Hugging Face's tokenizers: a float, a negative number, one past int32 or a string in
// tokenizer.json is refused with the field named (nlohmann's get<int32_t>() cast them unchecked,
// undefined for 1e300).
TEST(UnsupportedTokenizerTest, TokenIdsMustBeIntegersInRange) {
  const std::vector<nlohmann::json> bad_ids = {1.5, 300.0, 1e300, -1, 4294967296LL, 2147483647LL, "300", nullptr};
  for (const auto& bad : bad_ids) {
    auto j = base_json();
    j["added_tokens"][2]["id"] = bad;
    expect_error_naming(j, "added_tokens[2].id");
    j = base_json();
    j["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", nlohmann::json::array({{{"SpecialToken", {{"id", "<S>"}, {"type_id", 0}}}},
                                          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"special_tokens", {{"<S>", {{"id", "<S>"}, {"ids", nlohmann::json::array({304, bad})}, {"tokens", {"<S>", "<S>"}}}}}}};
    expect_error_naming(j, "post_processor.special_tokens.<S>.ids");
  }
  // The same post-processor with good ids loads, and puts them in front.
  auto j = base_json();
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", nlohmann::json::array({{{"SpecialToken", {{"id", "<S>"}, {"type_id", 0}}}},
                                        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"special_tokens", {{"<S>", {{"id", "<S>"}, {"ids", nlohmann::json::array({304})}, {"tokens", {"<S>"}}}}}}};
  EXPECT_EQ(Tokenizer::from_json(j.dump(), "")->encode("a", true), (std::vector<int32_t>{304, 'a'}));
}

}  // namespace
}  // namespace tandem::tokenizer
