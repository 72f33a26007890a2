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
// The row's edits (penalties, logit_bias, min_tokens masks: backend::LogitEdit, computed by the engine's
// Sampler::device_edits) are applied first, and logprobs are the host's too: the log-softmax of the edited,
// scaled row at the chosen token and at the top alternatives.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/launch_options.h"
#include "backend/device_sampling.h"

namespace tandem::backend::cuda {

// For each row r: applies its edits (rows[r].edits_begin..edits_end of `edits`), draws tokens[r], and when
// rows[r].num_logprobs >= 0 fills logprobs[r].
//   logits [num_rows, vocab] fp32 (overwritten: edited, and scaled by 1 / temperature); rows [num_rows];
//   edits [sum of the rows' edits] (null when none); masks [mask rows, ceil(vocab / 32)] uint32 (null when
//   no row has rows[r].mask_row >= 0): after the edits, a token whose bit is clear in its row's mask is
//   -inf; tokens [num_rows] int32; logprobs [num_rows] (null when no row asks).
cudaError_t launch_sample_rows(float* logits, const RowSampling* rows, const LogitEdit* edits, const uint32_t* masks,
                               int32_t* tokens, RowLogprobs* logprobs, int num_rows, int vocab, cudaStream_t stream,
                               const LaunchOptions& options);

}  // namespace tandem::backend::cuda
