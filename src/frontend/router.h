// The router's decisions (DESIGN.md §2): which decode worker serves a request, and whether its
// prefill runs remotely on a prefill worker (conditional disaggregation). Pure functions over a
// snapshot of the workers, so they are testable without processes.
// Thread-safety: values and free functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/prefix_index.h"

namespace tandem::frontend {

struct RouterOptions {
  int max_local_prefill = 1000;  // --max-local-prefill: uncached tokens above this go remote
  int max_prefill_queue = 2;     // --max-prefill-queue: remote only while fewer prefills are queued
};

// Thresholds changed while serving, by name ("max_local_prefill", ...) -> value as text.
using ThresholdChanges = std::vector<std::pair<std::string, std::string>>;

// One registered, live worker as the router sees it.
struct Candidate {
  bool can_decode = false;           // role decode or both
  bool is_prefill = false;           // role prefill: a remote prefill target
  int outstanding = 0;               // requests it is decoding (routed here and not finished)
  int prefills_outstanding = 0;      // remote prefills routed to it without a first token yet
  int overlap_tokens = 0;            // prompt tokens it likely holds in its prefix cache
};

struct Decision {
  int decode = -1;            // index into the candidates; -1 = no worker can decode
  int prefill = -1;           // index of the prefill worker when remote
  bool remote = false;
  std::string reason;         // metric label: long_prompt, short_prompt, prefill_queue_full,
                              // no_prefill_worker, not_disaggregable
  int uncached_tokens = 0;    // prompt tokens minus the decode worker's overlap
};

// `prefill_queue` is the number of remote prefills in flight (routed, no first token yet).
// `disaggregable` is false for requests remote prefill does not serve (n > 1, max_tokens == 1).
Decision route(std::span<const Candidate> candidates, int prompt_tokens, int prefill_queue, bool disaggregable,
               const RouterOptions& options);

// The prefix-cache contents a decode worker likely has (common/prefix_index.h).
using PrefixIndex = tandem::PrefixIndex;

}  // namespace tandem::frontend
