// Byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level variant): a pre-token's bytes start as
// one symbol each and the adjacent pair of lowest merge rank is merged until none is left, leftmost
// first among equal ranks -- the order of Hugging Face tokenizers' BPE::merge_word.
// Ownership: a BpeModel owns its vocabulary and merge table. Thread-safety: encode_word and the
// lookups may be called from any number of threads at once (the word cache is sharded, each
// shard behind its own mutex, so concurrent encodes rarely wait on each other).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace tandem::tokenizer {

class BpeModel {
 public:
  // Builds from the "model" object of tokenizer.json, whose "vocab" (token -> id, in file order)
  // and "merges" (pairs in rank order) the loader hands over separately, already parsed. Throws
  // tandem::Error naming what is not supported (a model type other than BPE, byte_fallback,
  // dropout, subword prefixes) or malformed.
  BpeModel(const nlohmann::json& model, const std::vector<std::pair<std::string, int32_t>>& vocab,
           const std::vector<std::pair<std::string, std::string>>& merges);

  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of one pre-token given as raw bytes.
  void encode_word(std::string_view bytes, std::vector<int32_t>* ids) const;

  // Id of the token whose raw bytes are `bytes`, or -1.
  int32_t bytes_to_id(std::string_view bytes) const;
  // Raw bytes of token `id`. REQUIRES: 0 <= id < num_ids() and has_id(id).
  const std::string& id_to_bytes(int32_t id) const { return id_to_bytes_[static_cast<size_t>(id)]; }
  bool has_id(int32_t id) const { return id >= 0 && static_cast<size_t>(id) < present_.size() && present_[id]; }
  // One past the largest id.
  int32_t num_ids() const { return static_cast<int32_t>(id_to_bytes_.size()); }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  // Open-addressing table keyed by (left id << 32 | right id); ~280k merges for Llama-3.1, probed
  // once per adjacent pair per merge step, so it is the hot loop of encoding.
  class MergeTable {
   public:
    void reserve(size_t n);
    void insert(uint64_t key, Merge merge);
    const Merge* find(uint64_t key) const;

   private:
    static constexpr uint64_t kEmpty = ~uint64_t{0};
    std::vector<uint64_t> keys_;
    std::vector<Merge> values_;
    size_t mask_ = 0;
  };

  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  void merge_small(std::vector<int32_t>* symbols) const;
  void merge_large(std::string_view bytes, std::vector<int32_t>* out) const;

  // Open-addressing index from a token's bytes to its id: slots hold (hash << 32 | id + 1) and the
  // bytes are compared against id_to_bytes_, so each token's bytes are stored once and the index
  // costs 8-16 bytes a token (a std::unordered_map<std::string, int32_t> keeps a node and a second
  // copy of the bytes). Load time was the same within noise on the shared 2-core VM.
  class VocabIndex {
   public:
    void reserve(size_t n);
    // REQUIRES: id_to_bytes[id] holds the token's bytes; ids inserted once.
    void insert(uint32_t hash, int32_t id);
    int32_t find(std::string_view bytes, uint32_t hash, const std::vector<std::string>& id_to_bytes) const;

   private:
    std::vector<uint64_t> slots_;
    size_t mask_ = 0;
  };
  static uint32_t hash_bytes(std::string_view bytes);

  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  VocabIndex bytes_to_id_;
  std::vector<std::string> id_to_bytes_;  // [num_ids] raw bytes; empty where no token has the id
  std::vector<bool> present_;             // [num_ids]
  int32_t byte_ids_[256];                 // id of each single-byte token
  MergeTable merges_;
  // Llama-3's "ignore_merges": a pre-token that is itself in the vocabulary is emitted whole,
  // as tiktoken does, even where merging would split it differently.
  bool ignore_merges_ = false;

  // Cache of recent pre-token results: text repeats a small set of words, and BPE costs
  // O(n^2) per word. A shard is cleared when full, which is cheaper than LRU bookkeeping per hit.
  static constexpr size_t kMaxCachedWordBytes = 256;  // as Hugging Face's BPE cache
  static constexpr size_t kNumCacheShards = 16;
  static constexpr size_t kMaxShardEntries = (1 << 16) / kNumCacheShards;
  struct CacheShard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> words;  // GUARDED_BY(mu)
  };
  mutable CacheShard cache_[kNumCacheShards];
};

}  // namespace tandem::tokenizer
