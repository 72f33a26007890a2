// FakeEngine: an engine::Engine with no model math, for serving tests and for measuring the
// frontend and request plane on their own ("workers that return immediately"). Tokens are a
// deterministic function of the prompt and the previous token, and the prompt's "KV" is a pattern
// derived from the prompt's tokens, so a decode that continues from transferred KV produces the same
// tokens as a local one only if every block arrived intact (it finishes with an error otherwise).
//
// Thread-safety: as engine::Engine (every method from any thread; callbacks on the engine thread).
#pragma once

#include <memory>

#include "engine/engine.h"
#include "model/config.h"

namespace tandem::worker {

struct FakeEngineOptions {
  int num_layers = 2;
  int num_blocks = 4096;
  int block_size = 16;
  int block_floats = 64;       // floats per (layer, block): 256 bytes
  int step_ms = 0;             // time per decode step (every running request gets one token)
  double prefill_us_per_token = 0;  // simulated prefill time
  int vocab_size = 151936;
  std::vector<int> eos_token_ids;
};

std::unique_ptr<engine::Engine> create_fake_engine(const FakeEngineOptions& options,
                                                   std::shared_ptr<engine::TextStreamFactory> text = nullptr);

}  // namespace tandem::worker
