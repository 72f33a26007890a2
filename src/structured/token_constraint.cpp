// Vocabulary tries, per-state token masks and their cache (see token_constraint.h).
#include "structured/token_constraint.h"

#include <algorithm>
#include <cstring>
#include <list>
#include <unordered_map>

#include "structured/spec.h"

namespace tandem::structured {
namespace {

// A state allowing at most this many tokens keeps them as a list (an object key's state allows a few);
// more are kept as a bitset (a string's content allows most of the vocabulary).
constexpr size_t kMaxSparseTokens = 4096;
constexpr size_t kGrammarCacheSize = 64;

}  // namespace

TokenVocabulary::TokenVocabulary(const std::vector<std::optional<std::string>>& token_bytes, int size)
    : size_(std::max<int>(size, static_cast<int>(token_bytes.size()))) {
  bytes_.resize(token_bytes.size());
  std::vector<int32_t> order;
  for (size_t id = 0; id < token_bytes.size(); ++id) {
    if (!token_bytes[id] || token_bytes[id]->empty()) continue;
    bytes_[id] = *token_bytes[id];
    order.push_back(static_cast<int32_t>(id));
  }
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return bytes_[a] < bytes_[b] || (bytes_[a] == bytes_[b] && a < b); });
  std::vector<int32_t> path;  // nodes from the root's child down to the current token's last byte
  std::vector<int32_t> node_of_token;
  const std::string* prev = nullptr;
  for (int32_t id : order) {
    const std::string& b = bytes_[id];
    size_t lcp = 0;
    if (prev) {
      while (lcp < prev->size() && lcp < b.size() && (*prev)[lcp] == b[lcp]) ++lcp;
    }
    while (path.size() > lcp) {
      subtree_end_[path.back()] = static_cast<int32_t>(byte_.size());
      path.pop_back();
    }
    for (size_t k = lcp; k < b.size(); ++k) {
      path.push_back(static_cast<int32_t>(byte_.size()));
      byte_.push_back(static_cast<uint8_t>(b[k]));
      depth_.push_back(static_cast<uint16_t>(k + 1));
      subtree_end_.push_back(-1);
    }
    max_depth_ = std::max<int>(max_depth_, static_cast<int>(b.size()));
    node_of_token.push_back(path.back());
    token_ids_.push_back(id);
    prev = &b;
  }
  while (!path.empty()) {
    subtree_end_[path.back()] = static_cast<int32_t>(byte_.size());
    path.pop_back();
  }
  // Tokens were appended in node order (a node's own tokens sort before its descendants').
  tokens_begin_.assign(byte_.size() + 1, 0);
  for (int32_t node : node_of_token) ++tokens_begin_[node + 1];
  for (size_t i = 1; i < tokens_begin_.size(); ++i) tokens_begin_[i] += tokens_begin_[i - 1];
}

CompiledGrammar::CompiledGrammar(Dfa dfa, std::shared_ptr<const TokenVocabulary> vocab)
    : dfa_(std::move(dfa)), vocab_(std::move(vocab)), masks_(new std::atomic<const StateMask*>[dfa_.num_states]) {
  for (int i = 0; i < dfa_.num_states; ++i) masks_[i].store(nullptr, std::memory_order_relaxed);
}

StatusOr<std::shared_ptr<const CompiledGrammar>> CompiledGrammar::compile(const std::string& spec_text,
                                                                          std::shared_ptr<const TokenVocabulary> vocab) {
  try {
    const auto spec = nlohmann::ordered_json::parse(spec_text);
    Dfa dfa = compile_dfa(spec_grammar(spec));
    return std::shared_ptr<const CompiledGrammar>(std::make_shared<CompiledGrammar>(std::move(dfa), std::move(vocab)));
  } catch (const GrammarError& e) {
    return Status::InvalidArgument(e.what());
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("malformed constraint: ") + e.what());
  }
}

StatusOr<std::shared_ptr<const CompiledGrammar>> CompiledGrammar::compile_cached(const std::string& spec_text,
                                                                                 std::shared_ptr<const TokenVocabulary> vocab) {
  struct Cache {
    std::mutex mu;
    std::list<std::pair<std::string, std::shared_ptr<const CompiledGrammar>>> recent;  // most recent first
  };
  static Cache cache;
  const std::string key = std::to_string(reinterpret_cast<uintptr_t>(vocab.get())) + "|" + spec_text;
  {
    std::lock_guard<std::mutex> lock(cache.mu);
    for (auto it = cache.recent.begin(); it != cache.recent.end(); ++it) {
      if (it->first == key && &it->second->vocab() == vocab.get()) {
        cache.recent.splice(cache.recent.begin(), cache.recent, it);
        return cache.recent.front().second;
      }
    }
  }
  auto compiled = compile(spec_text, vocab);
  if (!compiled.ok()) return compiled;
  std::lock_guard<std::mutex> lock(cache.mu);
  cache.recent.emplace_front(key, *compiled);
  if (cache.recent.size() > kGrammarCacheSize) cache.recent.pop_back();
  return compiled;
}

template <typename Visit>
void CompiledGrammar::walk(int32_t state, Visit&& visit) const {
  const TokenVocabulary& v = *vocab_;
  std::vector<int32_t> at(v.max_depth_ + 1);  // [depth] the DFA state after the path's first depth bytes
  at[0] = state;
  const uint8_t* byte = v.byte_.data();
  const uint16_t* depth = v.depth_.data();
  const int32_t* end = v.subtree_end_.data();
  const int32_t* tb = v.tokens_begin_.data();
  const size_t n = v.byte_.size();
  for (size_t i = 0; i < n;) {
    const int d = depth[i];
    const int32_t s = dfa_.step(at[d - 1], byte[i]);
    if (s < 0) {
      i = static_cast<size_t>(end[i]);
      continue;
    }
    at[d] = s;
    for (int32_t k = tb[i]; k < tb[i + 1]; ++k) visit(v.token_ids_[k], s);
    ++i;
  }
}

const CompiledGrammar::StateMask& CompiledGrammar::mask_of(int32_t state) const {
  if (const StateMask* m = masks_[state].load(std::memory_order_acquire)) return *m;
  auto m = std::make_unique<StateMask>();
  std::vector<int32_t> ids;
  walk(state, [&](int32_t id, int32_t next) {
    ids.push_back(id);
    m->max_next_dist = std::max(m->max_next_dist, dfa_.dist[next]);
  });
  if (ids.size() <= kMaxSparseTokens) {
    m->sparse = std::move(ids);
  } else {
    m->dense.assign(vocab_->num_words(), 0);
    for (int32_t id : ids) m->dense[id >> 5] |= 1u << (id & 31);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (const StateMask* existing = masks_[state].load(std::memory_order_acquire)) return *existing;
  owned_.push_back(std::move(m));
  masks_[state].store(owned_.back().get(), std::memory_order_release);
  return *owned_.back();
}

bool CompiledGrammar::fill_mask(int32_t state, int remaining_tokens, std::span<uint32_t> words) const {
  const bool can_end = dfa_.accepting[state] != 0;
  const int budget = std::max(0, remaining_tokens - 1);  // tokens left after this one
  const StateMask& m = mask_of(state);
  if (budget < m.max_next_dist) {
    // Near the end of the budget: only tokens after which acceptance is still reachable in time. When
    // none is (a budget below the grammar's shortest text), the reply will be cut at max_tokens: it
    // continues with any allowed token, so what it has is still a prefix of a valid text.
    std::memset(words.data(), 0, words.size_bytes());
    bool any = false;
    walk(state, [&](int32_t id, int32_t next) {
      if (dfa_.dist[next] <= budget && static_cast<size_t>(id >> 5) < words.size()) {
        words[id >> 5] |= 1u << (id & 31);
        any = true;
      }
    });
    if (any || can_end) return can_end;
  }
  if (!m.dense.empty()) {
    const size_t n = std::min(words.size(), m.dense.size());
    std::memcpy(words.data(), m.dense.data(), n * sizeof(uint32_t));
    if (words.size() > n) std::memset(words.data() + n, 0, (words.size() - n) * sizeof(uint32_t));
    return can_end;
  }
  std::memset(words.data(), 0, words.size_bytes());
  for (int32_t id : m.sparse) {
    if (static_cast<size_t>(id >> 5) < words.size()) words[id >> 5] |= 1u << (id & 31);
  }
  return can_end;
}

int32_t CompiledGrammar::advance(int32_t state, int32_t token) const {
  if (state < 0 || !vocab_->usable(token)) return Dfa::kDead;
  return dfa_.walk(state, vocab_->bytes(token));
}

void CompiledGrammar::precompute_all_masks() const {
  for (int32_t s = 0; s < dfa_.num_states; ++s) mask_of(s);
}

}  // namespace tandem::structured
