// Constrained decoding as the engine sees it: a request's `SamplingParams::guided` spec is compiled by
// a ConstraintCompiler (supplied by whoever owns the vocabulary: the worker, over src/structured) into
// a factory of per-sequence TokenConstraints; before each draw the engine asks the sequence's constraint
// for the allowed tokens and masks every other logit to -inf (EOS only where the constraint may end).
//
// Thread-safety: a ConstraintCompiler and a TokenConstraintFactory may be used from any thread; a
// TokenConstraint belongs to one sequence and is used by one thread at a time (the engine hands it to
// its mask thread while the device runs the step, and takes it back before sampling).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/status.h"

namespace tandem::engine {

class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  // Writes the tokens that may come next into `allowed` ([ceil(vocab_size / 32)] words; bit t % 32 of
  // word t / 32 is token t; every word is written; EOS ids are left to the caller), given that at most
  // `remaining_tokens` (>= 1) tokens may still be generated. Returns whether the text may end here.
  virtual bool fill_allowed(int remaining_tokens, std::span<uint32_t> allowed) const = 0;
  // Moves past `token`; false (state unchanged) when the token was not allowed.
  virtual bool advance(int32_t token) = 0;
};

class TokenConstraintFactory {
 public:
  virtual ~TokenConstraintFactory() = default;
  virtual std::unique_ptr<TokenConstraint> start() const = 0;
};

class ConstraintCompiler {
 public:
  virtual ~ConstraintCompiler() = default;
  // InvalidArgument naming what in the spec is unsupported or too large.
  virtual StatusOr<std::shared_ptr<const TokenConstraintFactory>> compile(const std::string& spec) const = 0;
};

}  // namespace tandem::engine
