// Routing decisions (see router.h).
#include "frontend/router.h"

#include <algorithm>
#include <cmath>

namespace tandem::frontend {
namespace {

int blocks_of(int tokens, int block_size) { return (std::max(0, tokens) + block_size - 1) / block_size; }

// The blocks `c` would prefill for the prompt, weighted, plus its load in blocks (docs/routing.md).
double kv_cost(const Candidate& c, int prompt_tokens, double weight, bool as_prefill) {
  const int bs = std::max(1, c.block_size);
  const int prompt_blocks = blocks_of(prompt_tokens, bs);
  const int uncached = std::max(0, prompt_blocks - c.overlap_tokens / bs);
  // A prefill worker's queue is its remote prefills in flight, each about a prompt's worth of work.
  const double load = as_prefill ? static_cast<double>(c.prefills_outstanding) * prompt_blocks : c.load_blocks;
  return weight * uncached + load;
}

// Lowest cost (ties to the lower index), or with a temperature a draw from a softmax over the costs
// normalised to [0, 1], so the temperature means the same whatever the prompt's length.
int pick_by_cost(const std::vector<std::pair<int, double>>& costs, double temperature, double uniform) {
  if (costs.empty()) return -1;
  int best = 0;
  for (size_t i = 1; i < costs.size(); ++i) {
    if (costs[i].second < costs[best].second) best = static_cast<int>(i);
  }
  if (temperature <= 0 || costs.size() == 1) return costs[best].first;
  double lo = costs[best].second, hi = lo;
  for (const auto& [i, cost] : costs) hi = std::max(hi, cost);
  const double range = hi > lo ? hi - lo : 1.0;
  std::vector<double> weights;
  double total = 0;
  for (const auto& [i, cost] : costs) {
    weights.push_back(std::exp(-((cost - lo) / range) / temperature));
    total += weights.back();
  }
  double target = uniform * total;
  for (size_t i = 0; i < costs.size(); ++i) {
    target -= weights[i];
    if (target < 0) return costs[i].first;
  }
  return costs.back().first;
}

int pick(std::span<const Candidate> candidates, bool prefill, int prompt_tokens, const RouterOptions& options,
         const RouteDraw& draw) {
  std::vector<int> eligible;
  for (int i = 0; i < static_cast<int>(candidates.size()); ++i) {
    if (prefill ? candidates[i].is_prefill : candidates[i].can_decode) eligible.push_back(i);
  }
  if (eligible.empty()) return -1;
  const auto n = static_cast<uint64_t>(eligible.size());
  switch (options.mode) {
    case RouterMode::kRoundRobin: return eligible[draw.turn % n];
    case RouterMode::kRandom: return eligible[std::min<uint64_t>(n - 1, static_cast<uint64_t>(draw.uniform * n))];
    case RouterMode::kPrefixHash: return eligible[draw.prefix_key % n];
    case RouterMode::kKv: {
      std::vector<std::pair<int, double>> costs;
      for (int i : eligible) costs.emplace_back(i, kv_cost(candidates[i], prompt_tokens, options.kv_overlap_score_weight, prefill));
      return pick_by_cost(costs, options.temperature, draw.uniform);
    }
    case RouterMode::kLeastLoaded: break;
  }
  // Least outstanding work; decode ties go to the larger prefix overlap, then the lower index.
  int best = eligible[0];
  for (int i : eligible) {
    const Candidate& c = candidates[i];
    const Candidate& b = candidates[best];
    if (prefill) {
      if (c.prefills_outstanding < b.prefills_outstanding) best = i;
    } else if (c.outstanding < b.outstanding || (c.outstanding == b.outstanding && c.overlap_tokens > b.overlap_tokens)) {
      best = i;
    }
  }
  return best;
}

}  // namespace

uint64_t prefix_key(std::span<const int32_t> prompt) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over the first 64 tokens
  for (size_t i = 0; i < std::min<size_t>(prompt.size(), 64); ++i) {
    h = (h ^ static_cast<uint32_t>(prompt[i])) * 0x100000001b3ull;
  }
  return h;
}

const char* router_mode_name(RouterMode mode) {
  switch (mode) {
    case RouterMode::kKv: return "kv";
    case RouterMode::kLeastLoaded: return "least-loaded";
    case RouterMode::kRoundRobin: return "round-robin";
    case RouterMode::kRandom: return "random";
    case RouterMode::kPrefixHash: return "prefix-hash";
  }
  return "kv";
}

std::optional<RouterMode> parse_router_mode(const std::string& text) {
  for (RouterMode m :
       {RouterMode::kKv, RouterMode::kLeastLoaded, RouterMode::kRoundRobin, RouterMode::kRandom, RouterMode::kPrefixHash}) {
    if (text == router_mode_name(m)) return m;
  }
  return std::nullopt;
}

Decision route(std::span<const Candidate> candidates, int prompt_tokens, int prefill_queue, bool disaggregable,
               const RouterOptions& options, const RouteDraw& draw) {
  Decision d;
  d.decode = pick(candidates, /*prefill=*/false, prompt_tokens, options, draw);
  if (d.decode < 0) return d;
  d.uncached_tokens = prompt_tokens - candidates[d.decode].overlap_tokens;
  // Round-robin and random spread prefills the way they spread decodes; kv weighs the prefill
  // workers' caches and queues by the same cost.
  d.prefill = pick(candidates, /*prefill=*/true, prompt_tokens, options, draw);
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
