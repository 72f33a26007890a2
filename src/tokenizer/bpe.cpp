#include "tokenizer/bpe.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>
#include <queue>

#include "common/error.h"
#include "tokenizer/byte_level.h"

namespace tandem::tokenizer {

void BpeModel::MergeTable::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  keys_.assign(cap, kEmpty);
  values_.assign(cap, Merge{0, 0});
  mask_ = cap - 1;
}

static inline size_t mix(uint64_t key) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdULL;
  key ^= key >> 33;
  return static_cast<size_t>(key);
}

void BpeModel::MergeTable::insert(uint64_t key, Merge merge) {
  for (size_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
    if (keys_[i] == kEmpty) {
      keys_[i] = key;
      values_[i] = merge;
      return;
    }
    if (keys_[i] == key) return;  // a duplicate merge keeps its first (lowest) rank
  }
}

const BpeModel::Merge* BpeModel::MergeTable::find(uint64_t key) const {
  for (size_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
    if (keys_[i] == key) return &values_[i];
    if (keys_[i] == kEmpty) return nullptr;
  }
}

uint32_t BpeModel::hash_bytes(std::string_view bytes) {
  // FNV-1a: tokens are short, so a simple byte loop beats a block hash here.
  uint32_t h = 2166136261u;
  for (char c : bytes) {
    h ^= static_cast<uint8_t>(c);
    h *= 16777619u;
  }
  return h;
}

void BpeModel::VocabIndex::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  slots_.assign(cap, 0);
  mask_ = cap - 1;
}

void BpeModel::VocabIndex::insert(uint32_t hash, int32_t id) {
  for (size_t i = mix(hash) & mask_;; i = (i + 1) & mask_) {
    if (slots_[i] == 0) {
      slots_[i] = (static_cast<uint64_t>(hash) << 32) | static_cast<uint32_t>(id + 1);
      return;
    }
  }
}

int32_t BpeModel::VocabIndex::find(std::string_view bytes, uint32_t hash, const std::vector<std::string>& id_to_bytes) const {
  for (size_t i = mix(hash) & mask_;; i = (i + 1) & mask_) {
    const uint64_t slot = slots_[i];
    if (slot == 0) return -1;
    if (static_cast<uint32_t>(slot >> 32) == hash) {
      const int32_t id = static_cast<int32_t>(static_cast<uint32_t>(slot)) - 1;
      if (id_to_bytes[static_cast<size_t>(id)] == bytes) return id;
    }
  }
}

namespace {

bool empty_or_null(const nlohmann::json& model, const char* key) {
  auto it = model.find(key);
  return it == model.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty());
}

}  // namespace

BpeModel::BpeModel(const nlohmann::json& model, const std::vector<std::pair<std::string, int32_t>>& vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges) {
  const std::string type = model.value("type", std::string("BPE"));
  if (type != "BPE") throw Error("unsupported tokenizer model type '" + type + "' (only byte-level BPE is supported)");
  if (model.value("byte_fallback", false)) throw Error("unsupported BPE option byte_fallback=true");
  if (!empty_or_null(model, "dropout")) throw Error("unsupported BPE option dropout");
  if (!empty_or_null(model, "continuing_subword_prefix")) throw Error("unsupported BPE option continuing_subword_prefix");
  if (!empty_or_null(model, "end_of_word_suffix")) throw Error("unsupported BPE option end_of_word_suffix");
  ignore_merges_ = model.value("ignore_merges", false);
  if (vocab.empty()) throw Error("tokenizer.json: model.vocab is missing or empty");

  int32_t max_id = -1;
  for (const auto& [token, id] : vocab) {
    if (id < 0) throw Error("tokenizer.json: negative id for token '" + token + "'");
    max_id = std::max(max_id, id);
  }
  id_to_bytes_.resize(static_cast<size_t>(max_id + 1));
  present_.assign(static_cast<size_t>(max_id + 1), false);
  bytes_to_id_.reserve(vocab.size());
  for (const auto& [token, id] : vocab) {
    auto bytes = byte_level_decode(token);
    if (!bytes) throw Error("unsupported vocabulary: token '" + token + "' is not in the byte-level alphabet (only byte-level BPE is supported)");
    if (present_[id]) throw Error("tokenizer.json: two tokens have id " + std::to_string(id));
    const uint32_t hash = hash_bytes(*bytes);
    if (bytes_to_id_.find(*bytes, hash, id_to_bytes_) >= 0) continue;  // a duplicate spelling keeps its first id
    id_to_bytes_[id] = std::move(*bytes);
    present_[id] = true;
    bytes_to_id_.insert(hash, id);
  }
  for (int b = 0; b < 256; ++b) {
    const int32_t id = bytes_to_id(std::string_view(reinterpret_cast<const char*>(&b), 1));
    if (id < 0) throw Error("tokenizer.json: byte-level vocabulary lacks the token for byte " + std::to_string(b));
    byte_ids_[b] = id;
  }

  merges_.reserve(merges.size());
  int32_t rank = 0;
  for (const auto& [left, right] : merges) {
    auto lb = byte_level_decode(left), rb = byte_level_decode(right);
    if (!lb || !rb) throw Error("tokenizer.json: merge '" + left + " " + right + "' is not in the byte-level alphabet");
    const int32_t lid = bytes_to_id(*lb), rid = bytes_to_id(*rb), mid = bytes_to_id(*lb + *rb);
    if (lid < 0 || rid < 0 || mid < 0) throw Error("tokenizer.json: merge '" + left + " " + right + "' uses a token not in the vocabulary");
    merges_.insert(pair_key(lid, rid), Merge{rank++, mid});
  }
}

int32_t BpeModel::bytes_to_id(std::string_view bytes) const {
  return bytes_to_id_.find(bytes, hash_bytes(bytes), id_to_bytes_);
}

// O(n^2) pair scans; for the short words that make up almost all text this beats a heap.
void BpeModel::merge_small(std::vector<int32_t>* symbols) const {
  auto& s = *symbols;
  while (s.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max(), best_id = -1;
    size_t best_pos = 0;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const Merge* m = merges_.find(pair_key(s[i], s[i + 1]));
      if (m != nullptr && m->rank < best_rank) {
        best_rank = m->rank;
        best_id = m->merged_id;
        best_pos = i;
      }
    }
    if (best_id < 0) break;
    s[best_pos] = best_id;
    s.erase(s.begin() + static_cast<std::ptrdiff_t>(best_pos) + 1);
  }
}

// Heap of candidate pairs ordered by (rank, position), with stale entries skipped on pop: the
// same order as merge_small in O(n log n), for long pre-tokens (runs of symbols, base64, ...).
void BpeModel::merge_large(std::string_view bytes, std::vector<int32_t>* out) const {
  const int n = static_cast<int>(bytes.size());
  std::vector<int32_t> id(n), next(n), prev(n);
  for (int i = 0; i < n; ++i) {
    id[i] = byte_ids_[static_cast<uint8_t>(bytes[i])];
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank, pos, left_id, right_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push = [&](int pos) {
    if (pos < 0 || next[pos] < 0) return;
    if (const Merge* m = merges_.find(pair_key(id[pos], id[next[pos]]))) heap.push({m->rank, pos, id[pos], id[next[pos]]});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int right = next[c.pos];
    if (id[c.pos] != c.left_id || right < 0 || id[right] != c.right_id) continue;  // stale
    id[c.pos] = merges_.find(pair_key(c.left_id, c.right_id))->merged_id;
    id[right] = -1;
    next[c.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  for (int i = 0; i >= 0; i = next[i]) out->push_back(id[i]);
}

void BpeModel::encode_word(std::string_view bytes, std::vector<int32_t>* ids) const {
  if (bytes.empty()) return;
  if (bytes.size() == 1) {
    ids->push_back(byte_ids_[static_cast<uint8_t>(bytes[0])]);
    return;
  }
  if (ignore_merges_) {
    if (int32_t whole = bytes_to_id(bytes); whole >= 0) {
      ids->push_back(whole);
      return;
    }
  }
  const bool cacheable = bytes.size() <= kMaxCachedWordBytes;
  const uint32_t hash = hash_bytes(bytes);
  CacheShard& shard = cache_[(hash >> 28) % kNumCacheShards];
  if (cacheable) {
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.words.find(bytes);
    if (it != shard.words.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> result;
  if (bytes.size() <= 48) {
    result.reserve(bytes.size());
    for (char c : bytes) result.push_back(byte_ids_[static_cast<uint8_t>(c)]);
    merge_small(&result);
  } else {
    merge_large(bytes, &result);
  }
  ids->insert(ids->end(), result.begin(), result.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(shard.mu);
    if (shard.words.size() >= kMaxShardEntries) shard.words.clear();
    shard.words.emplace(std::string(bytes), std::move(result));
  }
}

}  // namespace tandem::tokenizer
