// KvIndex: the frontend's one picture of every worker's prefix cache (docs/routing.md), built from the
// workers' KV events. A radix tree over block hashes: block i of a prompt is named by a hash chained
// over every token up to its end (common/block_hash.h), so a node's hash names its whole path from the
// root, and the tree is kept as a map from node hash to the workers holding that block. A prompt's
// overlap on a worker is the length of the path, walked from the root one block at a time, along which
// the worker holds every node.
//
// Each worker's events are numbered; a batch that is not the next one (one was lost, or the worker's
// connection is new) makes the index drop the worker's blocks and wait for a snapshot, ignoring
// batches until it arrives (the caller asks for it). Requests routed to a worker and not yet in its
// events count as held there (pending), so a burst of one prefix lands on one worker.
//
// Ownership: a value owned by the worker directory. Thread-safety: none (the frontend's I/O thread).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "rpc/messages.pb.h"

namespace tandem::frontend {

class KvIndex {
 public:
  using Worker = uint64_t;  // the directory's WorkerKey

  // A worker that publishes KV events; it holds nothing until its first snapshot.
  void add_worker(Worker w);
  // Forgets the worker: its blocks and its pending requests.
  void remove_worker(Worker w);
  bool has_worker(Worker w) const { return workers_.count(w) != 0; }

  enum class Applied { kApplied, kIgnored, kNeedSnapshot };
  // One batch of events. kNeedSnapshot: the batch was not the next one expected (a gap); the worker's
  // blocks were dropped and the caller must ask for a snapshot. kIgnored: a snapshot is awaited, or
  // the worker is unknown.
  Applied apply(Worker w, const rpc::pb::KvEvents& events);
  // The worker's whole cache as of batch `snapshot.seq()`; batches after it apply from here on.
  void apply_snapshot(Worker w, const rpc::pb::KvSnapshot& snapshot);
  // The worker's blocks are being resynchronised (no snapshot since registering or since a gap).
  bool awaiting_snapshot(Worker w) const;

  // A request routed to `w` whose prompt has these block hashes: they count as held there until
  // remove_pending (the request ended or moved).
  void add_pending(Worker w, const std::string& request_id, std::vector<uint64_t> hashes);
  void remove_pending(Worker w, const std::string& request_id);

  // Leading blocks of `prompt_hashes` that `w` holds or has pending.
  int overlap_blocks(Worker w, std::span<const uint64_t> prompt_hashes) const;
  // The blocks `w` holds by its events (sorted; for tests and /metrics).
  std::vector<uint64_t> blocks(Worker w) const;
  size_t num_nodes() const { return nodes_.size(); }

 private:
  struct WorkerState {
    uint64_t seq = 0;               // the last batch applied (or the snapshot's)
    bool awaiting_snapshot = true;
    std::unordered_set<uint64_t> held;                                   // nodes holding this worker
    std::unordered_map<uint64_t, int> pending;                           // hash -> pending requests
    std::unordered_map<std::string, std::vector<uint64_t>> requests;     // pending request -> hashes
  };
  void store(Worker w, WorkerState& s, uint64_t hash);
  void evict(Worker w, WorkerState& s, uint64_t hash);
  void drop_blocks(Worker w, WorkerState& s);

  std::unordered_map<uint64_t, std::vector<Worker>> nodes_;  // block hash -> workers holding it
  std::unordered_map<Worker, WorkerState> workers_;
};

}  // namespace tandem::frontend
