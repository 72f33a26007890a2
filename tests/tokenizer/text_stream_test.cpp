// The streaming detokenizer's contract: deltas never split a UTF-8 character, and the deltas plus
// finish() concatenate to Tokenizer::decode of the same ids (the reference here is decode, which
// the corpus tests check against @lenml/tokenizers).
#include <gtest/gtest.h>

#include "test_util.h"
#include "tokenizer/text_stream.h"
#include "tokenizer/unicode.h"

namespace tandem::tokenizer {
namespace {

using testing::read_json;
using testing::real_tokenizer;
using testing::test_data;

// Streams `ids`; checks every delta is whole UTF-8 and returns their concatenation.
std::string stream_all(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  StreamingDetokenizer stream(tok, skip_special);
  std::string all;
  for (int32_t id : ids) {
    const std::string delta = stream.push(id);
    EXPECT_EQ(valid_utf8_prefix(delta), delta.size()) << "delta splits a character";
    all += delta;
  }
  const std::string rest = stream.finish();
  EXPECT_EQ(valid_utf8_prefix(rest), rest.size());
  return all + rest;
}

class TextStreamTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TextStreamTest, DeltasConcatenateToDecodeOnCorpus) {
  const Tokenizer& tok = real_tokenizer(GetParam());
  const auto corpus = read_json(test_data("corpus.json"));
  for (size_t i = 0; i < corpus.size(); ++i) {
    const auto ids = tok.encode(corpus[i].get<std::string>(), /*add_special_tokens=*/true);
    for (bool skip : {false, true}) {
      ASSERT_EQ(stream_all(tok, ids, skip), tok.decode(ids, skip)) << "corpus[" << i << "] skip=" << skip;
    }
  }
}

// Byte tokens in an order that never forms valid UTF-8 (a lone continuation byte, a lead byte
// followed by ASCII, a truncated character at the end) come out as U+FFFD exactly as decode has them.
TEST_P(TextStreamTest, BrokenByteSequencesMatchDecode) {
  const Tokenizer& tok = real_tokenizer(GetParam());
  const auto euro = tok.encode("\xE2\x82\xAC", false);  // € as it tokenizes
  std::vector<int32_t> ids = tok.encode("ahello", false);
  const auto hello = tok.encode("hello", false);
  ids.insert(ids.end(), euro.begin(), euro.end());
  // A lead byte alone at the end: pending until finish().
  const std::optional<int32_t> lead = tok.token_to_id("\xC3\xA2");  // "â" spells byte 0xE2
  ASSERT_TRUE(lead.has_value());
  ids.push_back(*lead);
  StreamingDetokenizer stream(tok, false);
  std::string all;
  for (int32_t id : ids) all += stream.push(id);
  EXPECT_EQ(stream.num_pending_bytes(), 1u);
  all += stream.finish();
  EXPECT_EQ(all, tok.decode(ids));
  EXPECT_EQ(all.substr(all.size() - 3), "\xEF\xBF\xBD");
  // A lead byte followed by ASCII: the lead becomes U+FFFD at once, the ASCII passes through.
  StreamingDetokenizer s2(tok, false);
  EXPECT_EQ(s2.push(*lead), "");
  EXPECT_EQ(s2.push(hello[0]), "\xEF\xBF\xBD" + tok.decode(std::vector<int32_t>{hello[0]}));
}

TEST_P(TextStreamTest, SkipsSpecialTokensWhenAsked) {
  const Tokenizer& tok = real_tokenizer(GetParam());
  const int32_t special = GetParam() == "qwen3" ? 151644 : 128006;
  StreamingDetokenizer skip(tok, true), keep(tok, false);
  EXPECT_EQ(skip.push(special), "");
  EXPECT_EQ(keep.push(special), *tok.id_to_token(special));
}

INSTANTIATE_TEST_SUITE_P(Models, TextStreamTest, ::testing::Values("qwen3", "llama3_1"));

}  // namespace
}  // namespace tandem::tokenizer
