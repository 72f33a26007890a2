// Sampling on the GPU: the draw of the engine's host Sampler (engine/sampler.h), done where the logits
// are, so a sampled step copies 4 bytes per row back instead of a 600 KB row of a 150k vocabulary.
//
// It follows the host sampler's definitions step for step, so that for the same logits and the same
// uniform number both pick the same token (up to float rounding at a boundary, a ~1e-6 event):
//   - temperature <= 0: argmax (ties to the lowest id);
//   - else logits / temperature, p_i / p_max = exp(x_i - x_max), kept iff p_i >= min_p * p_max, then the
//     top_k largest (logit descending, ties to the lower id), then the smallest prefix of that order
//     whose mass reaches top_p of the kept mass;
//   - the draw walks the candidates in the host's order: the tokens of the histogram buckets that are
//     kept whole (16 buckets per logit unit below the maximum) in id order, then the tokens of the one
//     bucket cut by top_k or top_p in logit order, and takes the first whose running mass exceeds
//     uniform * the candidates' mass. Without truncation it walks every token in id order.
// Rows whose logits the host sampler edits first (penalties, logit_bias, min_tokens masks) or that want
// logprobs are not sampled here; the engine sends those rows through the host path.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::backend::cuda {

// One row's parameters, as the engine's SamplingParams give them (validated there).
struct DeviceRowSampling {
  float temperature = 0;  // <= 0: argmax
  float min_p = 0;        // <= 0: off
  float top_p = 1;        // >= 1: off
  int top_k = -1;         // <= 0 or >= vocab: off
  double uniform = 0;     // the row's draw in [0, 1) (engine::Sampler::uniform_for)
};

// tokens[r] = the token sampled from logits[r, :] with params[r].
//   logits [num_rows, vocab] fp32 (overwritten: scaled by 1 / temperature); params [num_rows];
//   tokens [num_rows] int32.
cudaError_t launch_sample_rows(float* logits, const DeviceRowSampling* params, int32_t* tokens, int num_rows, int vocab,
                               cudaStream_t stream);

}  // namespace tandem::backend::cuda
