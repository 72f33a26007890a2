// The tokenizer against references that do not come from it: encodings by @lenml/tokenizers
// (tools/references/tokenizer_references.mjs), NFC by ICU, and hand-derived expectations from Hugging Face's
// rules where that port is known to differ (see tools/references/make_tokenizer_corpus.py).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/error.h"
#include "test_util.h"
#include "tokenizer/regex_splitter.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

#include <utf8proc.h>

namespace tandem::tokenizer {
namespace {

using testing::from_hex;
using testing::read_json;
using testing::real_tokenizer;
using testing::test_data;

std::string ids_to_string(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += std::to_string(id) + ",";
  return s;
}

class RealTokenizerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    corpus_ = read_json(test_data("corpus.json"));
    refs_ = read_json(test_data("references_" + GetParam() + ".json"));
  }
  nlohmann::json corpus_, refs_;
};

TEST_P(RealTokenizerTest, EncodeMatchesReferenceOnCorpus) {
  const Tokenizer& tok = real_tokenizer(GetParam());
  ASSERT_EQ(corpus_.size(), refs_["encode"].size());
  ASSERT_GE(corpus_.size(), 500u);
  int failures = 0;
  for (size_t i = 0; i < corpus_.size(); ++i) {
    const std::string text = corpus_[i].get<std::string>();
    const auto expected = refs_["encode"][i].get<std::vector<int32_t>>();
    const auto actual = tok.encode(text, /*add_special_tokens=*/false);
    if (actual != expected && ++failures <= 10) {
      ADD_FAILURE() << "corpus[" << i << "] " << nlohmann::json(text).dump() << "\n expected " << ids_to_string(expected)
                    << "\n   actual " << ids_to_string(actual);
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST_P(RealTokenizerTest, EncodeWithSpecialTokensMatchesReference) {
  const Tokenizer& tok = real_tokenizer(GetParam());
  for (size_t i = 0; i < corpus_.size(); ++i) {
    ASSERT_EQ(tok.encode(corpus_[i].get<std::string>(), /*add_special_tokens=*/true),
              refs_["encode_add_special"][i].get<std::vector<int32_t>>())
        << "corpus[" << i << "]";
  }
}

TEST_P(RealTokenizerTest, DecodeSkippingSpecialTokensMatchesReference) {
  const Tokenizer& tok = real_tokenizer(GetParam());
  for (size_t i = 0; i < corpus_.size(); ++i) {
    const auto ids = refs_["encode"][i].get<std::vector<int32_t>>();
    ASSERT_EQ(tok.decode(ids, /*skip_special_tokens=*/true), refs_["decode_skip_special"][i].get<std::string>())
        << "corpus[" << i << "]";
  }
}

// decode(encode(s)) gives s back, normalized by the model's normalizer (NFC for Qwen3, none for Llama-3.1).
TEST_P(RealTokenizerTest, DecodeOfEncodeGivesTextBack) {
  const Tokenizer& tok = real_tokenizer(GetParam());
  const bool nfc = GetParam() == "qwen3";
  for (size_t i = 0; i < corpus_.size(); ++i) {
    const std::string text = corpus_[i].get<std::string>();
    const std::string expected = nfc ? refs_["nfc"][i].get<std::string>() : text;
    ASSERT_EQ(tok.decode(tok.encode(text, false), false), expected) << "corpus[" << i << "]";
  }
}

// Ill-formed UTF-8 is replaced by U+FFFD per maximal subpart before encoding; the reference is the
// Node port encoding TextDecoder's (WHATWG) replacement of the same bytes.
TEST_P(RealTokenizerTest, InvalidUtf8IsEncodedAsItsReplacement) {
  const Tokenizer& tok = real_tokenizer(GetParam());
  const auto invalid = read_json(test_data("invalid_utf8.json"));
  ASSERT_EQ(invalid.size(), refs_["invalid_utf8"].size());
  for (size_t i = 0; i < invalid.size(); ++i) {
    const std::string bytes = from_hex(invalid[i].get<std::string>());
    EXPECT_EQ(tok.encode(bytes, false), refs_["invalid_utf8"][i].get<std::vector<int32_t>>()) << "invalid[" << i << "]";
  }
}

INSTANTIATE_TEST_SUITE_P(Models, RealTokenizerTest, ::testing::Values("qwen3", "llama3_1"));

TEST(TokenizerTest, SpecialTokensComeFromTokenizerConfig) {
  const Tokenizer& qwen = real_tokenizer("qwen3");
  EXPECT_EQ(qwen.eos_token(), "<|im_end|>");
  EXPECT_EQ(qwen.eos_id(), 151645);
  EXPECT_EQ(qwen.bos_token(), "");
  EXPECT_FALSE(qwen.bos_id().has_value());
  EXPECT_EQ(qwen.vocab_size(), 151669);
  const Tokenizer& llama = real_tokenizer("llama3_1");
  EXPECT_EQ(llama.bos_id(), 128000);
  EXPECT_EQ(llama.eos_id(), 128009);
  EXPECT_EQ(llama.vocab_size(), 128256);
  EXPECT_FALSE(llama.chat_template().empty());
}

TEST(TokenizerTest, ChatTemplateMayLiveInItsOwnFile) {
  const std::string dir = ::testing::TempDir() + "/tandem_chat_template_file";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(testing::model_dir("qwen3") + "/tokenizer.json", dir + "/tokenizer.json",
                             std::filesystem::copy_options::overwrite_existing);
  std::ofstream(dir + "/chat_template.jinja") << "{{ messages[0].content }}";
  const auto tok = Tokenizer::load(dir);
  EXPECT_EQ(tok->chat_template(), "{{ messages[0].content }}");
  std::filesystem::remove_all(dir);
}

TEST(TokenizerTest, TokenLookupsUseTheFileSpelling) {
  const Tokenizer& qwen = real_tokenizer("qwen3");
  EXPECT_EQ(qwen.token_to_id("Hello"), 9707);
  EXPECT_EQ(qwen.token_to_id("Ġworld"), 1879);
  EXPECT_EQ(qwen.id_to_token(1879), "Ġworld");
  EXPECT_EQ(qwen.token_to_id("<think>"), 151667);
  EXPECT_EQ(qwen.id_to_token(151667), "<think>");
  EXPECT_FALSE(qwen.is_special(151667));  // <think> is an added token but not special
  EXPECT_TRUE(qwen.is_special(151644));
  EXPECT_FALSE(qwen.token_to_id("no such token at all").has_value());
  EXPECT_FALSE(qwen.id_to_token(151668 + 500).has_value());
}

// Hugging Face's ByteLevel decoder skips ids no token has; models pad their vocabularies.
TEST(TokenizerTest, DecodeSkipsUnknownIds) {
  const Tokenizer& qwen = real_tokenizer("qwen3");
  const std::vector<int32_t> ids = {9707, 151900, -1, 1879};
  EXPECT_EQ(qwen.decode(ids), "Hello world");
}

// A byte token that is not a whole character decodes as U+FFFD (Rust's from_utf8_lossy).
TEST(TokenizerTest, DecodeReplacesBrokenUtf8) {
  const Tokenizer& qwen = real_tokenizer("qwen3");
  // "ð" spells byte 0xF0 (a 4-byte lead) in the byte-level alphabet.
  const std::vector<int32_t> ids = {*qwen.token_to_id("ð"), *qwen.token_to_id("Hello")};
  EXPECT_EQ(qwen.decode(ids), "\uFFFDHello");
}

TEST(TokenizerTest, LongInputsEncodeLikeTheirParts) {
  // A 200k-character run of one letter and one of spaces: the heap merge path and the regex on long
  // subjects. A round trip alone holds for any split into bytes, so the ids are compared with the
  // Node reference's (@lenml/tokenizers 3.7.2, as tools/references/tokenizer_references.mjs loads it; 21 s for
  // the letters there): the letter run is one pre-token that BPE merges into 25,000 "aaaaaaaa"; the
  // spaces before "y" (99,999: the last one joins "y") into 781 tokens of 128 and one of 31.
  const Tokenizer& llama = real_tokenizer("llama3_1");
  ASSERT_EQ(llama.id_to_token(70540), "aaaaaaaa");
  std::string spaces128;  // byte-level spelling: a space is "\u0120"
  for (int i = 0; i < 128; ++i) spaces128 += "\u0120";
  ASSERT_EQ(llama.id_to_token(58040), spaces128);
  const std::string letters(200000, 'a');
  const std::vector<int32_t> letter_ids = llama.encode(letters, false);
  EXPECT_EQ(letter_ids, std::vector<int32_t>(25000, 70540));
  EXPECT_EQ(llama.decode(letter_ids), letters);
  const std::string spaces = "x" + std::string(100000, ' ') + "y";
  std::vector<int32_t> space_ids = {87};  // "x"
  space_ids.insert(space_ids.end(), 781, 58040);
  space_ids.push_back(1408);  // 31 spaces
  space_ids.push_back(379);   // " y"
  const std::vector<int32_t> encoded_spaces = llama.encode(spaces, false);
  EXPECT_EQ(encoded_spaces, space_ids);
  EXPECT_EQ(llama.decode(encoded_spaces), spaces);
}

// Hugging Face runs Split patterns with Oniguruma; these cases are where the Node port (JavaScript
// RegExp) or PCRE2's own \s would differ. Expected pieces follow Oniguruma's definitions: \s is
// {\t\n\v\f\r, U+0085, Zs, Zl, Zp}; (?i) folds U+017F to 's'.
TEST(RegexSplitterTest, WhitespaceAndCaseFoldingFollowOniguruma) {
  const std::string qwen_pattern =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  RegexSplitter splitter(qwen_pattern);
  auto split = [&](const std::string& text) {
    std::vector<std::string_view> pieces;
    splitter.split(text, &pieces);
    return std::vector<std::string>(pieces.begin(), pieces.end());
  };
  // U+0085 is \s: the run is split before its last character, which joins the letter after it.
  EXPECT_EQ(split("a\u0085\u0085b"), (std::vector<std::string>{"a", "\u0085", "\u0085b"}));
  // U+FEFF and U+180E are format characters, not \s: they form a punctuation-like piece.
  EXPECT_EQ(split("a\uFEFF\uFEFFb"), (std::vector<std::string>{"a", "\uFEFF\uFEFF", "b"}));
  EXPECT_EQ(split("a\u180E\u180Eb"), (std::vector<std::string>{"a", "\u180E\u180E", "b"}));
  // Case-insensitive contractions fold U+017F (long s) to s.
  EXPECT_EQ(split("x'\u017F\u017F"), (std::vector<std::string>{"x", "'\u017F", "\u017F"}));
  EXPECT_EQ(split("IT'S"), (std::vector<std::string>{"IT", "'S"}));
}

TEST(UnicodeTest, NfcQuickCheckOnlyPassesTextNfcLeavesAlone) {
  for (const char* text : {"plain ASCII", "caf\u00e9", "\u4f60\u597d", "\U0001F600\U0001F44D\U0001F3FD", "\uFF21\uFF22",
                           "\u0627\u0644"}) {
    EXPECT_TRUE(is_nfc_quick(text)) << text;
    EXPECT_EQ(nfc(text), text);
  }
  // A combining mark, a canonical singleton (CJK compatibility ideograph), Hangul jamo, a
  // second element of a Bengali two-part vowel: each may change.
  for (const char* text : {"e\u0301", "\uF900", "\u1100\u1161", "\u09C7\u09BE"}) {
    EXPECT_FALSE(is_nfc_quick(text)) << text;
    EXPECT_NE(nfc(text), text) << text;
  }
}

// nfc() normalizes only the stretches that can change; utf8proc's whole-string NFC is the reference.
TEST(UnicodeTest, PiecewiseNfcEqualsWholeStringNfc) {
  auto whole = [](const std::string& s) {
    utf8proc_uint8_t* out = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(s.c_str()));
    std::string r(reinterpret_cast<char*>(out));
    std::free(out);
    return r;
  };
  auto corpus = testing::read_json(testing::test_data("corpus.json")).get<std::vector<std::string>>();
  // Marks in every position: after letters, at the start, stacked, reordered, after Hangul jamo.
  corpus.push_back("\u0301a\u0323\u0301b\u0301\u0323 e\u0304\u0301 \u1100\u1161\u11A8 \u0627\u0653 \u09C7\u09BE x");
  corpus.push_back("Q\u0323\u0307\u0301\u0308\u0300 \u00C5\u0301 \u212B \uF900\u0301 \u0CC6\u0CC2\u0CD5");
  for (const auto& s : corpus) EXPECT_EQ(nfc(s), whole(s)) << nlohmann::json(s).dump();
}

TEST(UnicodeTest, LossyReplacementUsesMaximalSubparts) {
  // Unicode 15 §3.9, Table 3-8's example: 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64.
  const std::string bytes = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
  EXPECT_EQ(utf8_lossy(bytes), "a\uFFFD\uFFFD\uFFFDb\uFFFDc\uFFFD\uFFFDd");
}

}  // namespace
}  // namespace tandem::tokenizer

namespace tandem::tokenizer {
namespace {

// encode/decode are const and share the word cache: concurrent use gives the serial results.
TEST(TokenizerTest, ConcurrentEncodesMatchSerial) {
  const Tokenizer& tok = testing::real_tokenizer("qwen3");
  const auto corpus = testing::read_json(testing::test_data("corpus.json")).get<std::vector<std::string>>();
  std::vector<std::vector<int32_t>> serial;
  for (const auto& s : corpus) serial.push_back(tok.encode(s, false));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < corpus.size(); ++i) {
        const size_t j = (i * 7 + static_cast<size_t>(t) * 131) % corpus.size();
        if (tok.encode(corpus[j], false) != serial[j]) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace tandem::tokenizer
