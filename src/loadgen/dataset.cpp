// Dataset generators for `tandem bench serve`.
#include "loadgen/dataset.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "common/random.h"

namespace tandem::loadgen {
namespace {

int32_t sample_ordinary_id(const TokenCodec& codec, SplitMix64& rng) {
  const uint64_t vocab = static_cast<uint64_t>(codec.vocab_size());
  for (int attempt = 0; attempt < 64; ++attempt) {
    int32_t id = static_cast<int32_t>(rng.next() % vocab);
    if (!codec.is_special(id)) return id;
  }
  return 0;
}

// Uniform integer in [lo, hi].
int32_t uniform_int(SplitMix64& rng, int32_t lo, int32_t hi) {
  if (hi <= lo) return lo;
  return lo + static_cast<int32_t>(rng.next() % static_cast<uint64_t>(hi - lo + 1));
}

// [floor(len*(1-r)), ceil(len*(1+r))], at least 1 token.
std::pair<int32_t, int32_t> length_range(int32_t len, double ratio) {
  int32_t lo = static_cast<int32_t>(std::floor(len * (1.0 - ratio)));
  int32_t hi = static_cast<int32_t>(std::ceil(len * (1.0 + ratio)));
  return {std::max(lo, 1), std::max(hi, 1)};
}

}  // namespace

BenchRequest make_token_prompt(const TokenCodec& codec, uint64_t& rng_state, int32_t target_len) {
  SplitMix64 rng(rng_state);
  std::vector<int32_t> ids(static_cast<size_t>(std::max(target_len, 0)));
  for (auto& id : ids) id = sample_ordinary_id(codec, rng);
  BenchRequest request;
  // Decoding random ids and encoding the text back need not give the same ids (merges across token
  // boundaries); trim or top up the re-encoded ids and try again, as vLLM's random dataset does.
  for (int attempt = 0; attempt < 10; ++attempt) {
    request.prompt = codec.decode(ids);
    std::vector<int32_t> back = codec.encode(request.prompt);
    request.prompt_len = static_cast<int32_t>(back.size());
    if (request.prompt_len == target_len) break;
    if (request.prompt_len > target_len) {
      back.resize(static_cast<size_t>(target_len));
    } else {
      while (static_cast<int32_t>(back.size()) < target_len) back.push_back(sample_ordinary_id(codec, rng));
    }
    ids = std::move(back);
  }
  rng_state = rng.next();
  return request;
}

std::vector<BenchRequest> make_random_dataset(const TokenCodec& codec, const RandomDatasetOptions& options,
                                              int32_t num_prompts, uint64_t seed) {
  SplitMix64 rng(seed);
  auto [in_lo, in_hi] = length_range(options.input_len, options.range_ratio);
  auto [out_lo, out_hi] = length_range(options.output_len, options.range_ratio);
  std::vector<BenchRequest> requests;
  requests.reserve(static_cast<size_t>(num_prompts));
  uint64_t prompt_rng = rng.next();
  for (int32_t i = 0; i < num_prompts; ++i) {
    int32_t input_len = uniform_int(rng, in_lo, in_hi);
    int32_t output_len = uniform_int(rng, out_lo, out_hi);
    BenchRequest request = make_token_prompt(codec, prompt_rng, input_len);
    request.output_len = output_len;
    requests.push_back(std::move(request));
  }
  return requests;
}

std::vector<BenchRequest> make_prefix_dataset(const TokenCodec& codec, const PrefixDatasetOptions& options,
                                              int32_t num_prompts, uint64_t seed) {
  uint64_t prompt_rng = SplitMix64(seed ^ 0x5eedull).next();
  std::vector<std::string> prefixes;
  for (int32_t g = 0; g < std::max(options.num_prefixes, 1); ++g) {
    prefixes.push_back(make_token_prompt(codec, prompt_rng, options.prefix_len).prompt);
  }
  std::vector<BenchRequest> requests;
  requests.reserve(static_cast<size_t>(num_prompts));
  for (int32_t i = 0; i < num_prompts; ++i) {
    BenchRequest suffix = make_token_prompt(codec, prompt_rng, options.suffix_len);
    BenchRequest request;
    request.prompt = prefixes[static_cast<size_t>(i) % prefixes.size()] + suffix.prompt;
    // The join may merge tokens across the boundary: count what the server will see.
    request.prompt_len = static_cast<int32_t>(codec.encode(request.prompt).size());
    request.output_len = options.output_len;
    requests.push_back(std::move(request));
  }
  return requests;
}

namespace {

// One dataset entry from a JSON object, or an error naming what is missing.
StatusOr<BenchRequest> parse_entry(const nlohmann::json& entry, const TokenCodec* codec, int32_t default_output_len) {
  if (!entry.is_object()) return Status::InvalidArgument("entry is not a JSON object");
  BenchRequest request;
  request.output_len = default_output_len;
  std::string reply;
  if (entry.contains("prompt") && entry["prompt"].is_string()) {
    request.prompt = entry["prompt"].get<std::string>();
  } else if (entry.contains("text") && entry["text"].is_string()) {
    request.prompt = entry["text"].get<std::string>();
  } else {
    // ShareGPT ("conversations": [{"from": "human", "value": ...}, ...]) or OpenAI-style "messages".
    const nlohmann::json* turns = nullptr;
    if (entry.contains("conversations")) turns = &entry["conversations"];
    else if (entry.contains("messages")) turns = &entry["messages"];
    if (turns == nullptr || !turns->is_array() || turns->empty()) {
      return Status::InvalidArgument("no \"prompt\", \"text\", \"conversations\" or \"messages\"");
    }
    auto turn_text = [](const nlohmann::json& turn) -> std::string {
      if (turn.contains("value") && turn["value"].is_string()) return turn["value"].get<std::string>();
      if (turn.contains("content") && turn["content"].is_string()) return turn["content"].get<std::string>();
      return {};
    };
    request.prompt = turn_text((*turns)[0]);
    if (turns->size() > 1) reply = turn_text((*turns)[1]);
  }
  if (request.prompt.empty()) return Status::InvalidArgument("empty prompt");
  for (const char* key : {"output_len", "output_tokens", "max_tokens"}) {
    if (entry.contains(key) && entry[key].is_number_integer()) {
      request.output_len = entry[key].get<int32_t>();
      break;
    }
  }
  if (request.output_len == default_output_len && !reply.empty() && codec != nullptr) {
    request.output_len = static_cast<int32_t>(codec->encode(reply).size());
  }
  if (request.output_len < 0) return Status::InvalidArgument("negative output length");
  if (codec != nullptr) request.prompt_len = static_cast<int32_t>(codec->encode(request.prompt).size());
  return request;
}

}  // namespace

StatusOr<std::vector<BenchRequest>> load_jsonl_dataset(const JsonlDatasetOptions& options, const TokenCodec* codec,
                                                       int32_t num_prompts) {
  std::ifstream in(options.path);
  if (!in) return Status::NotFound("cannot open '" + options.path + "'");
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  std::vector<BenchRequest> requests;
  auto add = [&](const nlohmann::json& entry, const std::string& where) -> Status {
    auto request = parse_entry(entry, codec, options.default_output_len);
    if (!request.ok()) return Status::InvalidArgument(options.path + where + ": " + request.status().message());
    requests.push_back(std::move(*request));
    return Status::Ok();
  };
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    nlohmann::json array = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (array.is_discarded()) return Status::InvalidArgument(options.path + ": not valid JSON");
    for (size_t i = 0; i < array.size() && static_cast<int32_t>(requests.size()) < num_prompts; ++i) {
      TANDEM_RETURN_IF_ERROR(add(array[i], " entry " + std::to_string(i)));
    }
  } else {
    std::istringstream lines(text);
    std::string line;
    int line_no = 0;
    while (std::getline(lines, line) && static_cast<int32_t>(requests.size()) < num_prompts) {
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json entry = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (entry.is_discarded()) {
        return Status::InvalidArgument(options.path + " line " + std::to_string(line_no) + ": not valid JSON");
      }
      TANDEM_RETURN_IF_ERROR(add(entry, " line " + std::to_string(line_no)));
    }
  }
  if (requests.empty()) return Status::InvalidArgument(options.path + ": no prompts");
  return requests;
}

}  // namespace tandem::loadgen
