// Benchmark datasets: the prompts a run sends. `random` and `prefix` build prompts from token ids through
// the server's tokenizer (a TokenCodec) so the server sees the asked number of tokens; `jsonl` reads a
// user's file of prompts. All are deterministic for a given seed.
// Thread-safety: plain functions and values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "loadgen/token_codec.h"
#include "common/status.h"

namespace tandem::loadgen {

struct BenchRequest {
  std::string prompt;
  int32_t prompt_len = -1;  // tokens by the codec; -1 when unknown (jsonl without a tokenizer)
  int32_t output_len = 0;   // max_tokens to ask for; 0 lets the server decide
};

struct RandomDatasetOptions {
  int32_t input_len = 1024;
  int32_t output_len = 128;
  double range_ratio = 0.0;  // lengths are uniform in [len*(1-r), len*(1+r)], as vLLM's random dataset
};

struct PrefixDatasetOptions {
  int32_t prefix_len = 256;   // tokens shared by every prompt of a group
  int32_t suffix_len = 256;   // tokens unique to each prompt
  int32_t num_prefixes = 10;  // groups; prompts are dealt round-robin over them
  int32_t output_len = 128;
};

struct JsonlDatasetOptions {
  std::string path;
  int32_t default_output_len = 0;  // for lines without an output length; 0 lets the server decide
};

// A prompt of about target_len tokens: random ordinary ids decoded to text and re-encoded, adjusted a few
// times until the text encodes to exactly target_len tokens where the tokenizer allows. Returns the text
// and its encoded length.
BenchRequest make_token_prompt(const TokenCodec& codec, uint64_t& rng_state, int32_t target_len);

std::vector<BenchRequest> make_random_dataset(const TokenCodec& codec, const RandomDatasetOptions& options,
                                              int32_t num_prompts, uint64_t seed);
std::vector<BenchRequest> make_prefix_dataset(const TokenCodec& codec, const PrefixDatasetOptions& options,
                                              int32_t num_prompts, uint64_t seed);
// Reads up to num_prompts prompts. Each line is an object with "prompt" (or "text", or ShareGPT's
// "conversations"/"messages" whose first human/user turn is the prompt and the next turn's length the
// output length) and optional "output_len" / "output_tokens" / "max_tokens". A file that is one JSON array
// of such objects is read too. codec may be null (prompt lengths then come from the server's usage).
StatusOr<std::vector<BenchRequest>> load_jsonl_dataset(const JsonlDatasetOptions& options, const TokenCodec* codec,
                                                       int32_t num_prompts);

}  // namespace tandem::loadgen
