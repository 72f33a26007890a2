// Datasets and arrival processes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>

#include <unistd.h>

#include "loadgen/arrivals.h"
#include "loadgen/dataset.h"
#include "testing/dependencies.h"

namespace tandem::loadgen {
namespace {

// A codec whose decode/encode round trip changes the length (as BPE merges can): ids >= 50 decode to
// two characters, and every character encodes back to one id < 26. Exercises the length-fixing loop.
class ExpandingCodec final : public TokenCodec {
 public:
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (char c : text) ids.push_back(static_cast<int32_t>(c - 'a'));
    return ids;
  }
  std::string decode(std::span<const int32_t> ids) const override {
    std::string text;
    for (int32_t id : ids) {
      text += static_cast<char>('a' + id % 26);
      if (id >= 50) text += static_cast<char>('a' + (id / 26) % 26);
    }
    return text;
  }
  int32_t vocab_size() const override { return 100; }
  bool is_special(int32_t) const override { return false; }
  std::string name() const override { return "expanding"; }
};

TEST(RandomDataset, PromptsEncodeToTheAskedLength) {
  auto codec = make_word_codec();
  RandomDatasetOptions options;
  options.input_len = 37;
  options.output_len = 11;
  auto requests = make_random_dataset(*codec, options, 20, 1);
  ASSERT_EQ(requests.size(), 20u);
  for (const auto& r : requests) {
    EXPECT_EQ(r.prompt_len, 37);
    EXPECT_EQ(codec->encode(r.prompt).size(), 37u);
    EXPECT_EQ(r.output_len, 11);
  }
}

TEST(RandomDataset, LengthFixingConvergesWhenRoundTripChangesLength) {
  ExpandingCodec codec;
  uint64_t rng = 42;
  for (int target : {1, 5, 64}) {
    BenchRequest r = make_token_prompt(codec, rng, target);
    EXPECT_EQ(r.prompt_len, target);
    EXPECT_EQ(static_cast<int>(codec.encode(r.prompt).size()), target);
  }
}

TEST(RandomDataset, RangeRatioBoundsAndSeedDeterminism) {
  auto codec = make_word_codec();
  RandomDatasetOptions options;
  options.input_len = 100;
  options.output_len = 10;
  options.range_ratio = 0.5;
  auto a = make_random_dataset(*codec, options, 200, 7);
  auto b = make_random_dataset(*codec, options, 200, 7);
  auto c = make_random_dataset(*codec, options, 200, 8);
  int distinct_lengths = 0;
  std::vector<bool> seen(200, false);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_GE(a[i].prompt_len, 50);
    EXPECT_LE(a[i].prompt_len, 150);
    EXPECT_GE(a[i].output_len, 5);
    EXPECT_LE(a[i].output_len, 15);
    EXPECT_EQ(a[i].prompt, b[i].prompt);
    if (!seen[static_cast<size_t>(a[i].prompt_len)]) ++distinct_lengths;
    seen[static_cast<size_t>(a[i].prompt_len)] = true;
  }
  EXPECT_GT(distinct_lengths, 30);
  EXPECT_NE(a[0].prompt, c[0].prompt);
}

TEST(PrefixDataset, GroupsShareTheirPrefixAndDifferInSuffix) {
  auto codec = make_word_codec();
  PrefixDatasetOptions options;
  options.prefix_len = 20;
  options.suffix_len = 5;
  options.num_prefixes = 3;
  auto requests = make_prefix_dataset(*codec, options, 9, 3);
  ASSERT_EQ(requests.size(), 9u);
  auto prefix_of = [&](const BenchRequest& r) {
    auto ids = codec->encode(r.prompt);
    return std::vector<int32_t>(ids.begin(), ids.begin() + 20);
  };
  for (size_t i = 0; i < 9; ++i) {
    EXPECT_EQ(requests[i].prompt_len, 25);
    EXPECT_EQ(prefix_of(requests[i]), prefix_of(requests[i % 3]));
    if (i >= 3) {
      EXPECT_NE(requests[i].prompt, requests[i % 3].prompt);
    }
  }
  EXPECT_NE(prefix_of(requests[0]), prefix_of(requests[1]));
}

class JsonlDatasetTest : public ::testing::Test {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    std::string path = (std::filesystem::temp_directory_path() / ("tandem_bench_" + std::to_string(::getpid()) + name)).string();
    std::ofstream(path) << text;
    paths_.push_back(path);
    return path;
  }
  ~JsonlDatasetTest() override {
    for (const auto& p : paths_) std::remove(p.c_str());
  }
  std::vector<std::string> paths_;
};

TEST_F(JsonlDatasetTest, ReadsPromptsShareGptAndOutputLengths) {
  auto codec = make_word_codec();
  JsonlDatasetOptions options;
  options.default_output_len = 16;
  options.path = write("a.jsonl",
                       "{\"prompt\": \"w1 w2 w3\", \"output_len\": 4}\n"
                       "\n"
                       "{\"conversations\": [{\"from\": \"human\", \"value\": \"hello there\"}, {\"from\": \"gpt\", \"value\": \"a b c d e\"}]}\n"
                       "{\"text\": \"just text\"}\n");
  auto requests = load_jsonl_dataset(options, codec.get(), 10);
  ASSERT_TRUE(requests.ok()) << requests.status().to_string();
  ASSERT_EQ(requests->size(), 3u);
  EXPECT_EQ((*requests)[0].prompt, "w1 w2 w3");
  EXPECT_EQ((*requests)[0].prompt_len, 3);
  EXPECT_EQ((*requests)[0].output_len, 4);
  EXPECT_EQ((*requests)[1].prompt, "hello there");
  EXPECT_EQ((*requests)[1].output_len, 5);  // the reply's length
  EXPECT_EQ((*requests)[2].output_len, 16);  // the default
  auto two = load_jsonl_dataset(options, nullptr, 2);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[0].prompt_len, -1);
}

TEST_F(JsonlDatasetTest, ReadsAJsonArrayFile) {
  JsonlDatasetOptions options;
  options.path = write("b.json", "[{\"prompt\": \"x\"}, {\"prompt\": \"y\", \"max_tokens\": 3}]");
  auto requests = load_jsonl_dataset(options, nullptr, 10);
  ASSERT_TRUE(requests.ok());
  ASSERT_EQ(requests->size(), 2u);
  EXPECT_EQ((*requests)[1].output_len, 3);
}

TEST_F(JsonlDatasetTest, BadLinesAreNamed) {
  JsonlDatasetOptions options;
  options.path = write("c.jsonl", "{\"prompt\": \"ok\"}\n{not json}\n");
  auto requests = load_jsonl_dataset(options, nullptr, 10);
  ASSERT_FALSE(requests.ok());
  EXPECT_NE(requests.status().message().find("line 2"), std::string::npos);
  options.path = write("d.jsonl", "{\"question\": \"?\"}\n");
  EXPECT_FALSE(load_jsonl_dataset(options, nullptr, 10).ok());
  options.path = "/nonexistent/file.jsonl";
  EXPECT_EQ(load_jsonl_dataset(options, nullptr, 10).status().code(), StatusCode::kNotFound);
}

TEST(Arrivals, PoissonMeanRateAndGammaBurstiness) {
  for (double burstiness : {1.0, 0.25}) {
    auto offsets = make_arrival_offsets(20001, 50.0, burstiness, 3);
    std::vector<double> gaps;
    for (size_t i = 1; i < offsets.size(); ++i) gaps.push_back(offsets[i] - offsets[i - 1]);
    double mean = std::accumulate(gaps.begin(), gaps.end(), 0.0) / gaps.size();
    double var = 0;
    for (double g : gaps) var += (g - mean) * (g - mean);
    var /= gaps.size();
    EXPECT_NEAR(mean, 1.0 / 50.0, 0.03 / 50.0);
    // Gamma(k, theta): squared coefficient of variation = 1 / k.
    EXPECT_NEAR(var / (mean * mean), 1.0 / burstiness, 0.15 / burstiness);
  }
  for (double t : make_arrival_offsets(5, kInfiniteRate, 1.0, 0)) EXPECT_EQ(t, 0.0);
  EXPECT_EQ(make_arrival_offsets(5, kInfiniteRate, 1.0, 0).size(), 5u);
}

}  // namespace
}  // namespace tandem::loadgen

namespace tandem::loadgen {
namespace {

// The real Qwen3 and Llama-3.1 tokenizers (scripts/fetch_data.sh): random prompts re-encode to the asked
// number of tokens, as the server will count them.
TEST(RandomDataset, RealTokenizersSeeTheAskedLength) {
  for (const char* name : {"qwen3", "llama3_1"}) {
    const std::string dir = std::string(TANDEM_DATA_DIR) + "/tokenizers/" + name;
    TANDEM_SKIP_OR_FAIL_IF_MISSING(!std::filesystem::exists(dir + "/tokenizer.json"), dir << " (scripts/fetch_data.sh)");
    auto codec = open_token_codec(dir, "--tokenizer");
    RandomDatasetOptions options;
    options.input_len = 300;
    options.output_len = 4;
    auto requests = make_random_dataset(*codec, options, 20, 5);
    for (const auto& r : requests) {
      const std::vector<int32_t> ids = codec->encode(r.prompt);
      EXPECT_EQ(static_cast<int32_t>(ids.size()), 300) << name;
      EXPECT_EQ(r.prompt_len, 300) << name;
      for (int32_t id : ids) EXPECT_FALSE(codec->is_special(id)) << name << " " << id;
    }
    EXPECT_EQ(codec->num_added_special_tokens(), std::string(name) == "llama3_1" ? 1 : 0);
  }
}

}  // namespace
}  // namespace tandem::loadgen
