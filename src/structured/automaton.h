// Byte-level regular languages for constrained decoding: a small expression tree (Node), compiled
// through a Thompson NFA and the subset construction into a minimal DFA over bytes, with each state's
// distance (in bytes) to acceptance. Every grammar this part accepts (JSON schemas without recursion,
// JSON of bounded depth, regexes, choice lists) is regular, so a DFA state is the whole matcher state:
// a sequence's constraint is one int, and a state's token mask depends on nothing else (cacheable).
//
// Ownership and thread-safety: Nodes are immutable and shared (a tree may share subtrees); a Dfa is an
// immutable value after compile_dfa() and safe to read from many threads.
#pragma once

#include <bitset>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::structured {

// A grammar that cannot be built: an unsupported feature, a language too large, an empty language.
// Thrown inside this part only; the public entry points return it as a Status.
struct GrammarError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Node;
using NodePtr = std::shared_ptr<const Node>;

struct Node {
  enum class Kind {
    kEmpty,     // the empty string
    kBytes,     // one byte from `bytes`
    kNonAscii,  // one UTF-8 encoded code point >= U+0080 (surrogates excluded)
    kSeq,       // kids in order
    kAlt,       // any one kid
    kRepeat,    // kids[0] between min and max times (max -1: unbounded)
    kMembers,   // JSON object members: kids in order, each skippable unless required[i], separated by
                // kids.back() (the separator node, so kids has required.size() + 1 entries)
  };
  Kind kind = Kind::kEmpty;
  std::bitset<256> bytes;
  std::vector<NodePtr> kids;
  std::vector<bool> required;
  int min = 0, max = -1;
};

NodePtr empty_node();
NodePtr byte_set(const std::bitset<256>& bytes);
NodePtr byte_range(unsigned char lo, unsigned char hi);
NodePtr literal(std::string_view bytes);
NodePtr non_ascii_char();
NodePtr seq(std::vector<NodePtr> kids);
NodePtr alt(std::vector<NodePtr> kids);
NodePtr repeat(NodePtr kid, int min, int max);
inline NodePtr optional(NodePtr kid) { return repeat(std::move(kid), 0, 1); }
NodePtr members(std::vector<NodePtr> items, std::vector<bool> required, NodePtr separator);

// A minimal DFA over bytes. State 0 is the start; kDead is the rejecting sink (not stored).
struct Dfa {
  static constexpr int32_t kDead = -1;
  int num_states = 0;
  int num_classes = 0;
  uint8_t byte_class[256] = {};       // byte -> equivalence class (bytes no transition tells apart)
  std::vector<int32_t> next;          // [num_states * num_classes] target state or kDead
  std::vector<uint8_t> accepting;     // [num_states]
  std::vector<int32_t> dist;          // [num_states] fewest bytes to an accepting state
  std::vector<uint8_t> has_exit;      // [num_states] some byte leads to a live state

  int32_t step(int32_t state, unsigned char byte) const {
    return next[static_cast<size_t>(state) * num_classes + byte_class[byte]];
  }
  // kDead when `bytes` leaves the language's prefixes.
  int32_t walk(int32_t state, std::string_view bytes) const {
    for (unsigned char b : bytes) {
      if (state < 0) return state;
      state = step(state, b);
    }
    return state;
  }
  bool matches(std::string_view bytes) const {
    const int32_t s = walk(0, bytes);
    return s >= 0 && accepting[s];
  }
};

struct DfaLimits {
  int max_nfa_states = 400000;
  int max_dfa_states = 60000;
  // Work of the subset construction (see compile_dfa), which bounds a compile's time and memory (tenths
  // of a second and some 30 MB at this limit; seconds under ASan, which the fuzz target's timeout
  // allows) whatever the DFA's size. The schemas of bench/structured_bench need at most 1 million.
  int64_t max_subset_steps = 4000000;
};

// Throws GrammarError when the NFA, the DFA or the work to build it would pass `limits`, or when the
// language is empty.
Dfa compile_dfa(const NodePtr& root, const DfaLimits& limits = {});

// The number of NFA states `root` needs, or a number > limit (counting stops there): a cheap size check
// for the frontend, which validates a request without building its DFA.
int64_t count_nfa_states(const NodePtr& root, int64_t limit);

}  // namespace tandem::structured
