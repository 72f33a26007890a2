// The engine's request and output types: what a worker submits and what streams back.
// Plain values, safe to move between threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace tandem::engine {

// Sampling parameters under the names of the OpenAI API (and vLLM's extras). Validated at submit().
struct SamplingParams {
  float temperature = 1.0f;        // 0 = greedy
  float top_p = 1.0f;              // (0, 1]
  int top_k = 0;                   // 0 or -1 = off
  float min_p = 0.0f;              // [0, 1]
  // Reproducible per request whatever else is in the batch: the draw for output position i of choice
  // c depends only on (seed, c, i) and the logits.
  std::optional<uint64_t> seed;
  float presence_penalty = 0.0f;   // [-2, 2]
  float frequency_penalty = 0.0f;  // [-2, 2]
  float repetition_penalty = 1.0f; // > 0; 1 = off
  std::vector<std::pair<int32_t, float>> logit_bias;
  int max_tokens = 16;             // >= 1
  int min_tokens = 0;              // no stop (EOS, stop ids, stop strings) before this many tokens
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;   // matched on detokenized text; the text is trimmed before the match
  bool ignore_eos = false;
  // -1 = none; 0..20 = chosen token's logprob plus this many top alternatives. Logprobs are the
  // log-softmax of the logits after logit_bias, penalties and temperature, before top-k/top-p/min-p.
  int logprobs = -1;
  int n = 1;                       // choices sharing the prompt's KV blocks (kLocal only); <= max_seqs
  bool skip_special_tokens = true;
  // Structured output: a constraint spec (src/structured/spec.h) that every choice's text must follow,
  // enforced by masking the logits before each draw (engine/constraint.h); "" = none.
  std::string guided;
};

enum class FinishReason { kNone, kStop, kLength, kAbort, kError };
// "stop", "length", "abort", "error" (the OpenAI/vLLM spellings); "" for kNone.
const char* finish_reason_name(FinishReason reason);

struct TopLogprob {
  int32_t token_id;
  float logprob;
};

struct TokenLogprobs {
  int32_t token_id;
  float logprob;
  std::vector<TopLogprob> top;  // most likely first
};

// One streamed update for one choice of one request. Every accepted request ends, for every choice,
// with exactly one output where finished == true.
struct RequestOutput {
  std::string request_id;
  int index = 0;                       // which of the n choices
  std::vector<int32_t> token_ids;      // tokens new since the previous output of this choice
  std::string text;                    // text new since the previous output (empty without a detokenizer)
  std::vector<TokenLogprobs> logprobs; // one per new token, when requested
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string stop_reason;             // the stop string or stop token id that ended it ("" for EOS)
  Status error;                        // when finish_reason == kError
  int num_prompt_tokens = 0;
  int num_cached_prompt_tokens = 0;    // prompt tokens served from the prefix cache
  int num_output_tokens = 0;           // total so far for this choice
  std::vector<int32_t> kv_block_ids;   // PrefillMode::kPrefillOnly: the blocks that hold the prompt's KV
};

// How the prompt's KV is produced: the hooks disaggregation needs (DESIGN.md §2).
enum class PrefillMode {
  kLocal,         // prefill here, then decode (aggregated serving, or the decode worker's fallback)
  kPrefillOnly,   // prefill worker: compute the prompt's KV, sample the first token, finish with the
                  // output's kv_block_ids held until Engine::release_blocks(request_id)
  kDecodeFromKv,  // decode worker: the prompt's KV is already in the blocks reserved by
                  // Engine::reserve_kv(request_id, ...); first_token_id is the token the prefill sampled
};

using Clock = std::chrono::steady_clock;

struct Request {
  std::string request_id;  // unique among live requests of one engine
  std::vector<int32_t> prompt_token_ids;
  SamplingParams sampling;
  PrefillMode prefill_mode = PrefillMode::kLocal;
  int32_t first_token_id = -1;  // kDecodeFromKv only
  // A migrated request (docs/routing.md, migration): the last num_resumed_tokens of prompt_token_ids
  // are output this request already produced elsewhere, of whose text the client has the first
  // resumed_text_bytes bytes. They count as output for the seeded draws (the next draw is output
  // position num_resumed_tokens), the penalties and the stop strings; only text past those bytes is
  // streamed. sampling.max_tokens and min_tokens count new tokens only.
  int num_resumed_tokens = 0;
  int64_t resumed_text_bytes = 0;
  // One choice of an n > 1 request that migrated goes on alone (sampling.n = 1): its index among that
  // request's choices, so that its seeded draws are that choice's, (seed, choice_index, position).
  // Its outputs still say index 0. 0 for every other request.
  int choice_index = 0;
  Clock::time_point arrival_time = Clock::now();
};

// Called on the engine's thread for every output; must not block (hand off to a queue or socket).
using OutputCallback = std::function<void(RequestOutput)>;

}  // namespace tandem::engine
