// The prefix cache's block hash, shared by the engine (which keys its cache by it) and the frontend
// (which hashes a prompt the same way to look it up in the KV index of the workers' caches). Block i
// of a token sequence is named by chain_block_hash(hash of block i - 1, its tokens), the first block's
// parent being the cache's salt (the model): one hash names a whole prefix, so two workers holding the
// same hash hold the same leading tokens.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tandem {

// Never 0 (0 means "not cached" to the engine's block manager).
inline uint64_t chain_block_hash(uint64_t parent, std::span<const int32_t> tokens) {
  auto mix64 = [](uint64_t z) {  // SplitMix64's finalizer: a full-avalanche 64-bit mix
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  uint64_t h = mix64(parent ^ 0x9e3779b97f4a7c15ull);
  for (int32_t t : tokens) h = mix64(h + 0x9e3779b97f4a7c15ull + static_cast<uint32_t>(t));
  return h == 0 ? 1 : h;
}

// The chained hashes of every full block of `tokens`.
inline std::vector<uint64_t> chain_block_hashes(uint64_t salt, int block_size, std::span<const int32_t> tokens) {
  std::vector<uint64_t> out;
  if (block_size <= 0) return out;
  out.reserve(tokens.size() / static_cast<size_t>(block_size));
  uint64_t parent = salt;
  for (size_t end = static_cast<size_t>(block_size); end <= tokens.size(); end += static_cast<size_t>(block_size)) {
    parent = chain_block_hash(parent, tokens.subspan(end - static_cast<size_t>(block_size), static_cast<size_t>(block_size)));
    out.push_back(parent);
  }
  return out;
}

}  // namespace tandem
