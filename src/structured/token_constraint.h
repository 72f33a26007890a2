// Grammars compiled against a tokenizer's vocabulary: per-step allowed-token masks for constrained
// decoding.
//
// TokenVocabulary holds every token's bytes as a trie in preorder, so one pass over the arrays walks the
// DFA for every token at once and skips a whole subtree where a prefix is already rejected.
// CompiledGrammar is a spec's minimal DFA (automaton.h) plus, per DFA state, the set of tokens that keep
// the text a prefix of the language — computed the first time a sequence reaches the state, then cached
// for every later sequence and step. A sequence's state is one DFA state id (Matcher).
//
// Ending: the mask never holds EOS; `fill_mask` says whether ending is allowed (the state accepts), and
// the engine sets its EOS ids then. Termination under a budget: a token is allowed only if the state it
// leads to can still reach acceptance within the tokens left (fewest bytes to acceptance <= tokens left;
// every byte is a token of a byte-level BPE vocabulary), so a reply always ends valid before max_tokens
// when max_tokens is at least the grammar's shortest text's length.
//
// Ownership and thread-safety: a TokenVocabulary and a CompiledGrammar are immutable after construction
// (the mask cache fills under a lock and is read lock-free); share them across threads with shared_ptr.
// A Matcher belongs to one sequence and one thread at a time.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "structured/automaton.h"

namespace tandem::structured {

class TokenVocabulary {
 public:
  // token_bytes[id]: what token `id` decodes to; nullopt (or empty) for tokens never allowed inside
  // constrained text (special tokens, ids no token has). `size` is the mask's length in tokens (the
  // model's vocabulary, which may exceed the tokenizer's).
  TokenVocabulary(const std::vector<std::optional<std::string>>& token_bytes, int size);

  int size() const { return size_; }
  int num_words() const { return (size_ + 31) / 32; }
  const std::string& bytes(int32_t id) const { return bytes_[id]; }
  bool usable(int32_t id) const { return id >= 0 && id < static_cast<int32_t>(bytes_.size()) && !bytes_[id].empty(); }
  size_t num_trie_nodes() const { return byte_.size(); }

 private:
  friend class CompiledGrammar;
  int size_;
  std::vector<std::string> bytes_;     // [tokenizer ids] empty = never allowed
  // The trie in preorder; node i's parent prefix is the path to it.
  std::vector<uint8_t> byte_;          // [nodes] the edge byte into node i
  std::vector<uint16_t> depth_;        // [nodes] 1 for children of the root
  std::vector<int32_t> subtree_end_;   // [nodes] first node after i's subtree
  std::vector<int32_t> tokens_begin_;  // [nodes + 1] node i's tokens: token_ids_[tokens_begin_[i] .. tokens_begin_[i+1])
  std::vector<int32_t> token_ids_;     // tokens whose bytes end at each node, grouped by node
  int max_depth_ = 0;
};

class CompiledGrammar {
 public:
  // Builds the spec's DFA (spec.h). InvalidArgument naming what is unsupported or too large.
  static StatusOr<std::shared_ptr<const CompiledGrammar>> compile(const std::string& spec_text,
                                                                  std::shared_ptr<const TokenVocabulary> vocab);
  // The same, cached by spec text in a process-wide map of up to 64 recent grammars per vocabulary.
  static StatusOr<std::shared_ptr<const CompiledGrammar>> compile_cached(const std::string& spec_text,
                                                                         std::shared_ptr<const TokenVocabulary> vocab);

  CompiledGrammar(Dfa dfa, std::shared_ptr<const TokenVocabulary> vocab);

  const Dfa& dfa() const { return dfa_; }
  const TokenVocabulary& vocab() const { return *vocab_; }

  // Writes the tokens allowed after DFA state `state` into `words` ([vocab.num_words()] bits, token t is
  // bit t % 32 of word t / 32; every word is written), when at most `remaining_tokens` (>= 1) tokens may
  // still be generated. Returns whether the text may end here (EOS allowed).
  bool fill_mask(int32_t state, int remaining_tokens, std::span<uint32_t> words) const;
  // The state after `token` (Dfa::kDead when the token is not allowed from `state`).
  int32_t advance(int32_t state, int32_t token) const;
  // Computes every state's mask now (a benchmark's compile time with masks included).
  void precompute_all_masks() const;

 private:
  struct StateMask {
    std::vector<int32_t> sparse;  // the allowed ids, when few
    std::vector<uint32_t> dense;  // [num_words] otherwise
    int32_t max_next_dist = 0;    // largest distance to acceptance over the allowed tokens' next states
  };
  const StateMask& mask_of(int32_t state) const;
  // Visits each token allowed from `state` with the DFA state it leads to.
  template <typename Visit>
  void walk(int32_t state, Visit&& visit) const;

  Dfa dfa_;
  std::shared_ptr<const TokenVocabulary> vocab_;
  mutable std::mutex mu_;
  mutable std::vector<std::unique_ptr<StateMask>> owned_;             // GUARDED_BY(mu_)
  mutable std::unique_ptr<std::atomic<const StateMask*>[]> masks_;    // [num_states] set once, then read lock-free
};

// One sequence's position in a grammar.
class Matcher {
 public:
  explicit Matcher(std::shared_ptr<const CompiledGrammar> grammar) : grammar_(std::move(grammar)) {}
  bool fill_mask(int remaining_tokens, std::span<uint32_t> words) const {
    return grammar_->fill_mask(state_, remaining_tokens, words);
  }
  // False (and the state unchanged) when `token` is not allowed.
  bool advance(int32_t token) {
    const int32_t next = grammar_->advance(state_, token);
    if (next < 0) return false;
    state_ = next;
    return true;
  }
  bool accepting() const { return grammar_->dfa().accepting[state_] != 0; }
  int32_t state() const { return state_; }

 private:
  std::shared_ptr<const CompiledGrammar> grammar_;
  int32_t state_ = 0;
};

}  // namespace tandem::structured
