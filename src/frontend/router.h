// The router's decisions (DESIGN.md §2): which decode worker serves a request, and whether its
// prefill runs remotely on a prefill worker (conditional disaggregation). Pure functions over a
// snapshot of the workers, so they are testable without processes.
// Thread-safety: values and free functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/prefix_index.h"

namespace tandem::frontend {

// --router-mode (docs/routing.md):
//   kv            lowest cost: the blocks a worker would prefill (prompt minus its cached overlap) x
//                 kv_overlap_score_weight + its decode load in blocks; a softmax draw over the costs
//                 when temperature > 0
//   least-loaded  fewest requests outstanding, ties to the larger overlap (the router before issue 22)
//   round-robin   the eligible workers in turn; random: uniformly
//   prefix-hash   by a hash of the prompt's first 64 tokens, whatever the load: every request of one
//                 long shared prefix lands on one worker (the routing benchmark's oracle for prefix hits)
enum class RouterMode { kKv, kLeastLoaded, kRoundRobin, kRandom, kPrefixHash };
// "kv", "least-loaded", "round-robin", "random", "prefix-hash"
const char* router_mode_name(RouterMode mode);
std::optional<RouterMode> parse_router_mode(const std::string& text);

struct RouterOptions {
  int max_local_prefill = 1000;  // --max-local-prefill: uncached tokens above this go remote
  int max_prefill_queue = 2;     // --max-prefill-queue: remote only while fewer prefills are queued
  RouterMode mode = RouterMode::kKv;  // --router-mode (the same default as the flag's)
  // --kv-overlap-score-weight: a block to prefill delays this request's first token by that block's
  // whole computation, a block of load only shares each step; 5 measured best on the CPU figures
  // (docs/routing.md), where 1 (Dynamo's default) gave up half the cache hits to balance.
  double kv_overlap_score_weight = 5.0;
  double temperature = 0.0;              // --router-temperature: 0 = lowest cost
};

// What the stateful modes take from the caller: a uniform number in [0, 1) (random, softmax) and a
// counter that advances per request (round-robin).
struct RouteDraw {
  double uniform = 0;
  uint64_t turn = 0;
  uint64_t prefix_key = 0;  // prefix-hash: the hash of the prompt's first tokens (prefix_key())
};
uint64_t prefix_key(std::span<const int32_t> prompt);

// Thresholds changed while serving, by name ("max_local_prefill", ...) -> value as text.
using ThresholdChanges = std::vector<std::pair<std::string, std::string>>;

// One registered, live worker as the router sees it.
struct Candidate {
  bool can_decode = false;           // role decode or both
  bool is_prefill = false;           // role prefill: a remote prefill target
  int outstanding = 0;               // requests it is decoding (routed here and not finished)
  int prefills_outstanding = 0;      // remote prefills routed to it without a first token yet
  int overlap_tokens = 0;            // prompt tokens it likely holds in its prefix cache
  int block_size = 16;               // its KV block size (the cost counts blocks)
  int load_blocks = 0;               // its decode load: KV blocks of the requests it runs or was sent
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
// The prefill worker is chosen by the same mode among the prefill workers.
Decision route(std::span<const Candidate> candidates, int prompt_tokens, int prefill_queue, bool disaggregable,
               const RouterOptions& options, const RouteDraw& draw = {});

// The prefix-cache contents a decode worker likely has (common/prefix_index.h).
using PrefixIndex = tandem::PrefixIndex;

}  // namespace tandem::frontend
