// The frontend's KV index (see kv_index.h).
#include "frontend/kv_index.h"

#include <algorithm>

namespace tandem::frontend {

void KvIndex::add_worker(Worker w) {
  remove_worker(w);
  workers_[w];
}

void KvIndex::remove_worker(Worker w) {
  auto it = workers_.find(w);
  if (it == workers_.end()) return;
  drop_blocks(w, it->second);
  workers_.erase(it);
}

void KvIndex::store(Worker w, WorkerState& s, uint64_t hash) {
  if (!s.held.insert(hash).second) return;
  nodes_[hash].push_back(w);
}

void KvIndex::evict(Worker w, WorkerState& s, uint64_t hash) {
  if (s.held.erase(hash) == 0) return;
  auto node = nodes_.find(hash);
  if (node == nodes_.end()) return;
  auto& holders = node->second;
  holders.erase(std::remove(holders.begin(), holders.end(), w), holders.end());
  if (holders.empty()) nodes_.erase(node);
}

void KvIndex::drop_blocks(Worker w, WorkerState& s) {
  const std::vector<uint64_t> held(s.held.begin(), s.held.end());
  for (uint64_t h : held) evict(w, s, h);
}

KvIndex::Applied KvIndex::apply(Worker w, const rpc::pb::KvEvents& events) {
  auto it = workers_.find(w);
  if (it == workers_.end()) return Applied::kIgnored;
  WorkerState& s = it->second;
  if (s.awaiting_snapshot) return Applied::kIgnored;
  if (events.seq() <= s.seq) return Applied::kIgnored;  // already in the snapshot
  if (events.seq() != s.seq + 1) {
    // A batch went missing: what the index holds for this worker may be wrong in ways no later batch
    // repairs (an eviction never seen). Start over from a snapshot.
    drop_blocks(w, s);
    s.awaiting_snapshot = true;
    return Applied::kNeedSnapshot;
  }
  for (uint64_t h : events.removed()) evict(w, s, h);
  for (uint64_t h : events.stored()) store(w, s, h);
  s.seq = events.seq();
  return Applied::kApplied;
}

void KvIndex::apply_snapshot(Worker w, const rpc::pb::KvSnapshot& snapshot) {
  auto it = workers_.find(w);
  if (it == workers_.end()) return;
  WorkerState& s = it->second;
  drop_blocks(w, s);
  for (uint64_t h : snapshot.hashes()) store(w, s, h);
  s.seq = snapshot.seq();
  s.awaiting_snapshot = false;
}

bool KvIndex::awaiting_snapshot(Worker w) const {
  auto it = workers_.find(w);
  return it != workers_.end() && it->second.awaiting_snapshot;
}

void KvIndex::add_pending(Worker w, const std::string& request_id, std::vector<uint64_t> hashes) {
  auto it = workers_.find(w);
  if (it == workers_.end()) return;
  WorkerState& s = it->second;
  remove_pending(w, request_id);
  for (uint64_t h : hashes) s.pending[h]++;
  s.requests[request_id] = std::move(hashes);
}

void KvIndex::remove_pending(Worker w, const std::string& request_id) {
  auto it = workers_.find(w);
  if (it == workers_.end()) return;
  WorkerState& s = it->second;
  auto r = s.requests.find(request_id);
  if (r == s.requests.end()) return;
  for (uint64_t h : r->second) {
    auto p = s.pending.find(h);
    if (p != s.pending.end() && --p->second == 0) s.pending.erase(p);
  }
  s.requests.erase(r);
}

int KvIndex::overlap_blocks(Worker w, std::span<const uint64_t> prompt_hashes) const {
  auto it = workers_.find(w);
  if (it == workers_.end()) return 0;
  const WorkerState& s = it->second;
  int found = 0;
  for (uint64_t h : prompt_hashes) {
    // Walk the path from the root: a node off the path ends it.
    auto node = nodes_.find(h);
    const bool held = node != nodes_.end() && std::find(node->second.begin(), node->second.end(), w) != node->second.end();
    if (!held && s.pending.count(h) == 0) break;
    ++found;
  }
  return found;
}

std::vector<uint64_t> KvIndex::blocks(Worker w) const {
  auto it = workers_.find(w);
  if (it == workers_.end()) return {};
  std::vector<uint64_t> out(it->second.held.begin(), it->second.held.end());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace tandem::frontend
