// FakeEngine: a test double of engine::Engine with no model math, behind `tandem worker --engine
// fake`, for the serving and cluster tests and for measuring the frontend and request plane on their
// own ("workers that return immediately"). Tokens are a deterministic function of the prompt and the
// previous token, and the prompt's "KV" is a pattern derived from the prompt's tokens, so a decode that
// continues from transferred KV produces the same tokens as a local one only if every block arrived
// intact (it finishes with an error otherwise).
//
// Why a second Engine rather than the real one over a fake backend (issue 17 item 4): the real engine
// samples every token on the host over the whole vocabulary (151,936 entries for the Qwen models the
// load tests mimic), 135 us (greedy) to 700 us (top_p) per token on the development VM (bench/README.md,
// sampler_bench), and a fake backend would still fill a logits row that size per token. A load test of
// the frontend and request plane would measure that instead of the serving path; this engine answers
// in microseconds. The real engine over a fake backend is tested in tests/engine/engine_fake_backend_test.cpp.
//
// Thread-safety: as engine::Engine (every method from any thread; callbacks on the engine thread).
#pragma once

#include <memory>

#include "engine/engine.h"
#include "model/config.h"

namespace tandem::engine {

struct FakeEngineOptions {
  int num_layers = 2;
  int num_blocks = 4096;
  int block_size = 16;
  int block_floats = 64;       // floats per (layer, block): 256 bytes
  int step_ms = 0;             // time per decode step (every running request gets one token)
  double prefill_us_per_token = 0;  // simulated prefill time
  int vocab_size = 151936;
  std::vector<int> eos_token_ids;
  // Scripted output (tests of what the frontend makes of given text, e.g. reasoning tags): when set,
  // every choice emits these tokens in order and finishes with "stop" after the last (or "length" at
  // max_tokens first), whatever its prompt. Empty: the hashed tokens above.
  std::vector<int32_t> script;
};

std::unique_ptr<Engine> create_fake_engine(const FakeEngineOptions& options,
                                           std::shared_ptr<TextStreamFactory> text = nullptr);

}  // namespace tandem::engine
