// Routing decisions (see router.h).
#include "frontend/router.h"

namespace tandem::frontend {

Decision route(std::span<const Candidate> candidates, int prompt_tokens, int prefill_queue, bool disaggregable,
               const RouterOptions& options) {
  Decision d;
  // Least outstanding work; ties go to the larger prefix overlap, then the lower index.
  for (int i = 0; i < static_cast<int>(candidates.size()); ++i) {
    const Candidate& c = candidates[i];
    if (!c.can_decode) continue;
    if (d.decode < 0) {
      d.decode = i;
      continue;
    }
    const Candidate& best = candidates[d.decode];
    if (c.outstanding < best.outstanding ||
        (c.outstanding == best.outstanding && c.overlap_tokens > best.overlap_tokens)) {
      d.decode = i;
    }
  }
  if (d.decode < 0) return d;
  d.uncached_tokens = prompt_tokens - candidates[d.decode].overlap_tokens;
  for (int i = 0; i < static_cast<int>(candidates.size()); ++i) {
    const Candidate& c = candidates[i];
    if (!c.is_prefill) continue;
    if (d.prefill < 0 || c.prefills_outstanding < candidates[d.prefill].prefills_outstanding) d.prefill = i;
  }
  if (d.uncached_tokens <= options.max_local_prefill) {
    d.reason = "short_prompt";
  } else if (!disaggregable) {
    d.reason = "not_disaggregable";
  } else if (d.prefill < 0) {
    d.reason = "no_prefill_worker";
  } else if (prefill_queue >= options.max_prefill_queue) {
    d.reason = "prefill_queue_full";
  } else {
    d.remote = true;
    d.reason = "long_prompt";
  }
  if (!d.remote) d.prefill = -1;
  return d;
}

}  // namespace tandem::frontend
