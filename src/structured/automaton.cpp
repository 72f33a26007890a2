// Expression tree -> Thompson NFA -> subset construction over byte classes -> Moore minimisation
// (see automaton.h).
#include "structured/automaton.h"

#include <algorithm>
#include <deque>
#include <unordered_map>

namespace tandem::structured {

NodePtr empty_node() { return std::make_shared<Node>(); }

NodePtr byte_set(const std::bitset<256>& bytes) {
  auto n = std::make_shared<Node>();
  n->kind = Node::Kind::kBytes;
  n->bytes = bytes;
  return n;
}

NodePtr byte_range(unsigned char lo, unsigned char hi) {
  std::bitset<256> b;
  for (int c = lo; c <= hi; ++c) b.set(c);
  return byte_set(b);
}

NodePtr literal(std::string_view bytes) {
  std::vector<NodePtr> kids;
  for (unsigned char c : bytes) kids.push_back(byte_range(c, c));
  return seq(std::move(kids));
}

NodePtr non_ascii_char() {
  auto n = std::make_shared<Node>();
  n->kind = Node::Kind::kNonAscii;
  return n;
}

NodePtr seq(std::vector<NodePtr> kids) {
  if (kids.empty()) return empty_node();
  if (kids.size() == 1) return kids[0];
  auto n = std::make_shared<Node>();
  n->kind = Node::Kind::kSeq;
  n->kids = std::move(kids);
  return n;
}

NodePtr alt(std::vector<NodePtr> kids) {
  if (kids.size() == 1) return kids[0];
  if (kids.empty()) throw GrammarError("an empty alternative list matches nothing");
  auto n = std::make_shared<Node>();
  n->kind = Node::Kind::kAlt;
  n->kids = std::move(kids);
  return n;
}

NodePtr repeat(NodePtr kid, int min, int max) {
  if (min < 0 || (max >= 0 && max < min)) throw GrammarError("a repetition's bounds are inverted");
  auto n = std::make_shared<Node>();
  n->kind = Node::Kind::kRepeat;
  n->kids = {std::move(kid)};
  n->min = min;
  n->max = max;
  return n;
}

NodePtr members(std::vector<NodePtr> items, std::vector<bool> required, NodePtr separator) {
  auto n = std::make_shared<Node>();
  n->kind = Node::Kind::kMembers;
  n->kids = std::move(items);
  n->kids.push_back(std::move(separator));
  n->required = std::move(required);
  return n;
}

namespace {

// Trees share subtrees (a JSON array's item schema appears twice, a $ref's target once per use), and
// the NFA holds one copy per use: a node's count is computed once and multiplied along each path, so
// the cost is linear in the distinct nodes even when the paths through them are exponentially many.
int64_t count_states(const Node& node, int64_t limit, std::unordered_map<const Node*, int64_t>* memo) {
  if (auto it = memo->find(&node); it != memo->end()) return it->second;
  auto cap = [limit](int64_t x) { return std::min(x, limit + 1); };
  int64_t total = limit + 1;
  switch (node.kind) {
    case Node::Kind::kEmpty: total = 1; break;
    case Node::Kind::kBytes: total = 2; break;
    case Node::Kind::kNonAscii: total = 9; break;
    case Node::Kind::kSeq:
    case Node::Kind::kAlt:
    case Node::Kind::kMembers: {
      total = cap(2 + 2 * static_cast<int64_t>(node.kids.size()));
      const int64_t copies = node.kind == Node::Kind::kMembers ? 2 : 1;
      for (const NodePtr& k : node.kids) {
        if (total > limit) break;
        total = cap(total + count_states(*k, limit, memo) * copies);
      }
      break;
    }
    case Node::Kind::kRepeat: {
      const int64_t k = count_states(*node.kids[0], limit, memo);
      const int64_t copies = node.max < 0 ? node.min + 1 : node.max;
      total = cap(2 + cap(k * copies) + copies);
      break;
    }
  }
  memo->emplace(&node, total);
  return total;
}

}  // namespace

int64_t count_nfa_states(const NodePtr& root, int64_t limit) {
  std::unordered_map<const Node*, int64_t> memo;
  return count_states(*root, limit, &memo);
}

namespace {

struct Nfa {
  struct Edge {
    uint8_t lo, hi;
    int32_t to;
  };
  std::vector<std::vector<Edge>> edges;
  std::vector<std::vector<int32_t>> eps;
  int max_states = 0;

  int32_t add() {
    if (static_cast<int>(edges.size()) >= max_states) {
      throw GrammarError("the grammar is too large (more than " + std::to_string(max_states) + " automaton states)");
    }
    edges.emplace_back();
    eps.emplace_back();
    return static_cast<int32_t>(edges.size() - 1);
  }
  void link(int32_t from, int32_t to) { eps[from].push_back(to); }
  void range(int32_t from, int lo, int hi, int32_t to) {
    edges[from].push_back({static_cast<uint8_t>(lo), static_cast<uint8_t>(hi), to});
  }
};

struct Frag {
  int32_t start, end;
};

class Builder {
 public:
  explicit Builder(Nfa* nfa) : nfa_(nfa) {}

  Frag build(const Node& n) {
    switch (n.kind) {
      case Node::Kind::kEmpty: {
        const int32_t s = nfa_->add();
        return {s, s};
      }
      case Node::Kind::kBytes: {
        const int32_t s = nfa_->add(), e = nfa_->add();
        for (int c = 0; c < 256;) {  // one edge per run of set bytes
          if (!n.bytes.test(c)) {
            ++c;
            continue;
          }
          int d = c;
          while (d + 1 < 256 && n.bytes.test(d + 1)) ++d;
          nfa_->range(s, c, d, e);
          c = d + 1;
        }
        return {s, e};
      }
      case Node::Kind::kNonAscii: return non_ascii();
      case Node::Kind::kSeq: {
        Frag f = build(*n.kids[0]);
        for (size_t i = 1; i < n.kids.size(); ++i) {
          const Frag g = build(*n.kids[i]);
          nfa_->link(f.end, g.start);
          f.end = g.end;
        }
        return f;
      }
      case Node::Kind::kAlt: {
        const int32_t s = nfa_->add(), e = nfa_->add();
        for (const NodePtr& k : n.kids) {
          const Frag g = build(*k);
          nfa_->link(s, g.start);
          nfa_->link(g.end, e);
        }
        return {s, e};
      }
      case Node::Kind::kRepeat: return build_repeat(n);
      case Node::Kind::kMembers: return build_members(n);
    }
    throw GrammarError("unknown node");
  }

 private:
  // One UTF-8 encoded code point in U+0080..U+10FFFF without surrogates (RFC 3629, section 4).
  Frag non_ascii() {
    const int32_t s = nfa_->add(), e = nfa_->add(), t1 = nfa_->add(), t2 = nfa_->add(), t3 = nfa_->add();
    const int32_t e0 = nfa_->add(), ed = nfa_->add(), f0 = nfa_->add(), f4 = nfa_->add();
    nfa_->range(s, 0xC2, 0xDF, t1);
    nfa_->range(s, 0xE0, 0xE0, e0);
    nfa_->range(e0, 0xA0, 0xBF, t1);
    nfa_->range(s, 0xE1, 0xEC, t2);
    nfa_->range(s, 0xED, 0xED, ed);
    nfa_->range(ed, 0x80, 0x9F, t1);
    nfa_->range(s, 0xEE, 0xEF, t2);
    nfa_->range(s, 0xF0, 0xF0, f0);
    nfa_->range(f0, 0x90, 0xBF, t2);
    nfa_->range(s, 0xF1, 0xF3, t3);
    nfa_->range(s, 0xF4, 0xF4, f4);
    nfa_->range(f4, 0x80, 0x8F, t2);
    nfa_->range(t3, 0x80, 0xBF, t2);
    nfa_->range(t2, 0x80, 0xBF, t1);
    nfa_->range(t1, 0x80, 0xBF, e);
    return {s, e};
  }

  Frag build_repeat(const Node& n) {
    const Node& kid = *n.kids[0];
    const int32_t s = nfa_->add();
    int32_t cur = s;
    for (int i = 0; i < n.min; ++i) {
      const Frag g = build(kid);
      nfa_->link(cur, g.start);
      cur = g.end;
    }
    if (n.max < 0) {
      const int32_t loop = nfa_->add();
      nfa_->link(cur, loop);
      const Frag g = build(kid);
      nfa_->link(loop, g.start);
      nfa_->link(g.end, loop);
      return {s, loop};
    }
    const int32_t e = nfa_->add();
    for (int i = n.min; i < n.max; ++i) {
      nfa_->link(cur, e);
      const Frag g = build(kid);
      nfa_->link(cur, g.start);
      cur = g.end;
    }
    nfa_->link(cur, e);
    return {s, e};
  }

  // none_i: nothing emitted yet before item i; some_i: something was. An item entered from some_i is
  // preceded by the separator; after any item the chain continues in some_{i+1}, so each item's
  // fragment is built once however many items before it were skipped.
  Frag build_members(const Node& n) {
    const size_t count = n.required.size();
    const Node& sep = *n.kids.back();
    int32_t none = nfa_->add(), some = nfa_->add();
    const int32_t start = none;
    for (size_t i = 0; i < count; ++i) {
      const int32_t entry = nfa_->add();
      nfa_->link(none, entry);
      const Frag s = build(sep);
      nfa_->link(some, s.start);
      nfa_->link(s.end, entry);
      const Frag item = build(*n.kids[i]);
      nfa_->link(entry, item.start);
      const int32_t next_none = nfa_->add(), next_some = nfa_->add();
      nfa_->link(item.end, next_some);
      if (!n.required[i]) {
        nfa_->link(none, next_none);
        nfa_->link(some, next_some);
      }
      none = next_none;
      some = next_some;
    }
    const int32_t e = nfa_->add();
    nfa_->link(none, e);
    nfa_->link(some, e);
    return {start, e};
  }

  Nfa* nfa_;
};

struct VecHash {
  size_t operator()(const std::vector<int32_t>& v) const {
    uint64_t h = 1469598103934665603ull;
    for (int32_t x : v) h = (h ^ static_cast<uint32_t>(x)) * 1099511628211ull;
    return static_cast<size_t>(h);
  }
};

// Hopcroft's partition refinement (Hopcroft 1971; the "smaller half" worklist as in Knuutila 2001,
// "Re-describing an algorithm by Hopcroft"): states with the same language get one block. A sink state
// stands for kDead; states that cannot reach acceptance end in its block, returned as -1. O(n k log n)
// for n states and k classes, where Moore's round-by-round refinement needs one round per distinguishing
// length (hundreds for schemas with bounded repetitions).
std::vector<int32_t> minimal_blocks(const std::vector<int32_t>& next, int n, int num_classes, const std::vector<uint8_t>& accepting,
                                    const std::vector<int32_t>& dist, int* num_live_blocks) {
  const int sink = n, total = n + 1;
  auto target = [&](int s, int c) {
    if (s == sink) return sink;
    const int32_t t = next[static_cast<size_t>(s) * num_classes + c];
    return t >= 0 ? t : sink;
  };
  // Inverse transitions per class: inv[inv_begin[c * (total + 1) + t] ..] are the states entering t on c.
  std::vector<int32_t> inv_begin(static_cast<size_t>(num_classes) * (total + 1) + 1, 0), inv;
  for (int s = 0; s < total; ++s) {
    for (int c = 0; c < num_classes; ++c) ++inv_begin[static_cast<size_t>(c) * (total + 1) + target(s, c) + 1];
  }
  for (size_t i = 1; i < inv_begin.size(); ++i) inv_begin[i] += inv_begin[i - 1];
  inv.resize(static_cast<size_t>(total) * num_classes);
  {
    std::vector<int32_t> fill(inv_begin.begin(), inv_begin.end() - 1);
    for (int s = 0; s < total; ++s) {
      for (int c = 0; c < num_classes; ++c) inv[fill[static_cast<size_t>(c) * (total + 1) + target(s, c)]++] = s;
    }
  }
  // Blocks are ranges [first, end) of `elems`; the first `marked` of a block are marked.
  std::vector<int32_t> elems(total), loc(total), blk(total), first, end, marked;
  int pos = 0;
  for (int pass = 0; pass < 2; ++pass) {  // accepting states first, then the rest (sink included)
    const int b = static_cast<int>(first.size());
    const int begin = pos;
    for (int s = 0; s < total; ++s) {
      const bool acc = s != sink && accepting[s] && dist[s] >= 0;
      if (acc != (pass == 0)) continue;
      elems[pos] = s;
      loc[s] = pos++;
      blk[s] = b;
    }
    if (pos > begin) {
      first.push_back(begin);
      end.push_back(pos);
      marked.push_back(0);
    }
  }
  std::vector<uint8_t> in_work;
  std::vector<std::pair<int32_t, int32_t>> work;
  auto add_work = [&](int b, int c) {
    const size_t k = static_cast<size_t>(b) * num_classes + c;
    if (in_work.size() <= k) in_work.resize(std::max(k + 1, in_work.size() * 2), 0);
    if (in_work[k]) return;
    in_work[k] = 1;
    work.emplace_back(b, c);
  };
  const int smaller = first.size() == 2 && end[1] - first[1] < end[0] - first[0] ? 1 : 0;
  for (int c = 0; c < num_classes; ++c) add_work(smaller, c);
  std::vector<int32_t> splitter, touched;
  while (!work.empty()) {
    const auto [a, c] = work.back();
    work.pop_back();
    in_work[static_cast<size_t>(a) * num_classes + c] = 0;
    splitter.assign(elems.begin() + first[a], elems.begin() + end[a]);
    touched.clear();
    for (int32_t t : splitter) {
      const size_t base = static_cast<size_t>(c) * (total + 1);
      for (int32_t i = inv_begin[base + t]; i < inv_begin[base + t + 1]; ++i) {
        const int32_t s = inv[i];
        const int b = blk[s];
        const int m = first[b] + marked[b];
        if (loc[s] < m) continue;  // marked already
        const int32_t other = elems[m];
        std::swap(elems[loc[s]], elems[m]);
        loc[other] = loc[s];
        loc[s] = m;
        if (marked[b]++ == 0) touched.push_back(b);
      }
    }
    for (int b : touched) {
      const int m = marked[b];
      marked[b] = 0;
      if (m == end[b] - first[b]) continue;
      const int nb = static_cast<int>(first.size());
      first.push_back(first[b]);
      end.push_back(first[b] + m);
      marked.push_back(0);
      first[b] += m;
      for (int i = first[nb]; i < end[nb]; ++i) blk[elems[i]] = nb;
      const bool new_smaller = end[nb] - first[nb] <= end[b] - first[b];
      for (int k = 0; k < num_classes; ++k) {
        const size_t key = static_cast<size_t>(b) * num_classes + k;
        if (key < in_work.size() && in_work[key]) {
          add_work(nb, k);
        } else {
          add_work(new_smaller ? nb : b, k);
        }
      }
    }
  }
  // Live blocks numbered 0.., the sink's block -1.
  std::vector<int32_t> id(first.size(), -1), out(n);
  int count = 0;
  for (int s = 0; s < n; ++s) {
    const int b = blk[s];
    if (b == blk[sink]) {
      out[s] = -1;
      continue;
    }
    if (id[b] < 0) id[b] = count++;
    out[s] = id[b];
  }
  *num_live_blocks = count;
  return out;
}

}  // namespace

Dfa compile_dfa(const NodePtr& root, const DfaLimits& limits) {
  Nfa nfa;
  nfa.max_states = limits.max_nfa_states;
  const Frag top = Builder(&nfa).build(*root);
  const int num_nfa = static_cast<int>(nfa.edges.size());

  // Byte classes: bytes that every edge treats alike.
  Dfa dfa;
  std::bitset<257> boundary;
  for (const auto& es : nfa.edges) {
    for (const Nfa::Edge& e : es) {
      boundary.set(e.lo);
      boundary.set(e.hi + 1);
    }
  }
  int cls = 0;
  for (int b = 0; b < 256; ++b) {
    if (b > 0 && boundary.test(b)) ++cls;
    dfa.byte_class[b] = static_cast<uint8_t>(cls);
  }
  const int num_classes = cls + 1;

  std::vector<int32_t> stamp(num_nfa, -1);
  int32_t stamp_id = 0;
  std::vector<int32_t> stack;
  // The subset construction's work: NFA states visited by closures, bucket entries, and one per DFA state
  // and byte class. It is bounded apart from the DFA's size because a few thousand DFA states that each
  // hold thousands of NFA states (a bounded repetition of a loop, e.g. (\w+\s?){0,1000}) took minutes.
  int64_t steps = 0;
  auto closure = [&](std::vector<int32_t>& set) {
    ++stamp_id;
    stack.clear();
    for (int32_t s : set) {
      if (stamp[s] != stamp_id) {
        stamp[s] = stamp_id;
        stack.push_back(s);
      }
    }
    set.clear();
    while (!stack.empty()) {
      const int32_t s = stack.back();
      stack.pop_back();
      set.push_back(s);
      ++steps;
      for (int32_t t : nfa.eps[s]) {
        if (stamp[t] != stamp_id) {
          stamp[t] = stamp_id;
          stack.push_back(t);
        }
      }
    }
    // Only states with byte edges or the accepting end tell subsets apart.
    std::erase_if(set, [&](int32_t s) { return nfa.edges[s].empty() && s != top.end; });
    std::sort(set.begin(), set.end());
  };

  std::unordered_map<std::vector<int32_t>, int32_t, VecHash> ids;
  std::vector<std::vector<int32_t>> sets;
  std::vector<int32_t> next;  // [states * num_classes]
  std::vector<int32_t> start{top.start};
  closure(start);
  ids.emplace(start, 0);
  sets.push_back(start);
  std::vector<std::vector<int32_t>> buckets(num_classes);
  for (size_t d = 0; d < sets.size(); ++d) {
    for (auto& b : buckets) b.clear();
    steps += num_classes;
    for (int32_t s : sets[d]) {
      for (const Nfa::Edge& e : nfa.edges[s]) {
        steps += dfa.byte_class[e.hi] - dfa.byte_class[e.lo] + 1;
        for (int c = dfa.byte_class[e.lo]; c <= dfa.byte_class[e.hi]; ++c) buckets[c].push_back(e.to);
      }
    }
    next.resize((d + 1) * num_classes, Dfa::kDead);
    for (int c = 0; c < num_classes; ++c) {
      if (buckets[c].empty()) continue;
      std::vector<int32_t> target = buckets[c];
      closure(target);
      if (steps > limits.max_subset_steps) {
        throw GrammarError("the grammar is too complex to enforce (building its automaton takes more than " +
                           std::to_string(limits.max_subset_steps) +
                           " steps; a bounded repetition such as {0,1000} of a group containing * or + costs the most)");
      }
      if (target.empty()) continue;
      auto [it, inserted] = ids.emplace(target, static_cast<int32_t>(sets.size()));
      if (inserted) {
        if (static_cast<int>(sets.size()) >= limits.max_dfa_states) {
          throw GrammarError("the grammar is too large (more than " + std::to_string(limits.max_dfa_states) + " DFA states)");
        }
        sets.push_back(std::move(target));
      }
      next[d * num_classes + c] = it->second;
    }
  }
  const int n = static_cast<int>(sets.size());
  std::vector<uint8_t> accepting(n);
  for (int d = 0; d < n; ++d) accepting[d] = std::binary_search(sets[d].begin(), sets[d].end(), top.end);
  sets.clear();
  ids.clear();

  // States that cannot reach acceptance are the dead state.
  std::vector<std::vector<int32_t>> rev(n);
  for (int d = 0; d < n; ++d) {
    for (int c = 0; c < num_classes; ++c) {
      const int32_t t = next[static_cast<size_t>(d) * num_classes + c];
      if (t >= 0) rev[t].push_back(d);
    }
  }
  std::vector<int32_t> dist(n, -1);
  std::deque<int32_t> queue;
  for (int d = 0; d < n; ++d) {
    if (accepting[d]) {
      dist[d] = 0;
      queue.push_back(d);
    }
  }
  while (!queue.empty()) {
    const int32_t s = queue.front();
    queue.pop_front();
    for (int32_t p : rev[s]) {
      if (dist[p] < 0) {
        dist[p] = dist[s] + 1;
        queue.push_back(p);
      }
    }
  }
  if (dist[0] < 0) throw GrammarError("the grammar matches no string");
  for (auto& t : next) {
    if (t >= 0 && dist[t] < 0) t = Dfa::kDead;
  }

  int num_blocks = 0;
  const std::vector<int32_t> block = minimal_blocks(next, n, num_classes, accepting, dist, &num_blocks);

  // Renumber blocks in breadth-first order from the start, so the start is state 0.
  std::vector<int32_t> order(num_blocks, -1), rep(num_blocks, -1);
  for (int d = 0; d < n; ++d) {
    if (block[d] >= 0 && rep[block[d]] < 0) rep[block[d]] = d;
  }
  std::vector<int32_t> bfs{block[0]};
  order[block[0]] = 0;
  for (size_t i = 0; i < bfs.size(); ++i) {
    const int32_t d = rep[bfs[i]];
    for (int c = 0; c < num_classes; ++c) {
      const int32_t t = next[static_cast<size_t>(d) * num_classes + c];
      if (t < 0) continue;
      const int32_t b = block[t];
      if (order[b] < 0) {
        order[b] = static_cast<int32_t>(bfs.size());
        bfs.push_back(b);
      }
    }
  }
  dfa.num_states = static_cast<int>(bfs.size());
  dfa.num_classes = num_classes;
  dfa.next.assign(static_cast<size_t>(dfa.num_states) * num_classes, Dfa::kDead);
  dfa.accepting.assign(dfa.num_states, 0);
  dfa.dist.assign(dfa.num_states, 0);
  dfa.has_exit.assign(dfa.num_states, 0);
  for (int i = 0; i < dfa.num_states; ++i) {
    const int32_t d = rep[bfs[i]];
    dfa.accepting[i] = accepting[d];
    dfa.dist[i] = dist[d];
    for (int c = 0; c < num_classes; ++c) {
      const int32_t t = next[static_cast<size_t>(d) * num_classes + c];
      if (t < 0) continue;
      dfa.next[static_cast<size_t>(i) * num_classes + c] = order[block[t]];
      dfa.has_exit[i] = 1;
    }
  }
  return dfa;
}

}  // namespace tandem::structured
