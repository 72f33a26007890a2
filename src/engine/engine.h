// Engine: continuous batching over one Backend (DESIGN.md §3 "engine"). The engine loop runs on its
// own thread: schedule -> build the ForwardBatch -> backend.forward -> sample -> apply stop rules ->
// emit outputs. Workers use only this header.
//
// Thread-safety: every public method may be called from any thread. Output callbacks run on the
// engine thread.
//
// Usage (a worker):
//   auto engine = create_engine(backend::create_backend(*weights, backend_options), EngineOptions{},
//                               detokenizers);  // detokenizers may be null
//   Request r;
//   r.request_id = "req-1";
//   r.prompt_token_ids = ids;
//   r.sampling.max_tokens = 64;
//   Status s = engine->submit(std::move(r), [queue](RequestOutput out) { queue->push(std::move(out)); });
//   if (!s.ok()) ...  // map s.code() to the HTTP status; nothing was queued
//   ...
//   engine->abort("req-1");  // the client went away: a final kAbort output follows
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/constraint.h"
#include "engine/request.h"

namespace tandem::engine {

struct EngineOptions {
  int max_batch_tokens = 2048;  // --max-batch-tokens: tokens per step (decodes + prefill chunks)
  int max_seqs = 256;           // --max-seqs: sequences per step
  bool enable_prefix_caching = true;
  int max_model_len = 0;        // 0 = the model's max_position_embeddings
  // Compiles SamplingParams::guided; null: requests with a constraint are refused (InvalidArgument).
  std::shared_ptr<const ConstraintCompiler> constraints;
};

// Incremental detokenization, supplied by the tokenizer part (the engine does not own vocabularies).
class TextStream {
 public:
  virtual ~TextStream() = default;
  // Feeds one token; returns the text it completes (never a partial UTF-8 character).
  virtual std::string push(int32_t token_id) = 0;
};
class TextStreamFactory {
 public:
  virtual ~TextStreamFactory() = default;
  virtual std::unique_ptr<TextStream> new_stream(bool skip_special_tokens) = 0;
};

// Blocks reserved on a decode worker for a remote prefill.
struct KvReservation {
  std::vector<int32_t> block_ids;  // one per block_size tokens of the prompt (the last may be partial)
  // Leading prompt tokens already in those blocks (prefix cache), a multiple of block_size. Those
  // blocks may be shared with running sequences: a transfer writes only block_ids[num_cached_tokens /
  // block_size ..], never the ones before.
  int num_cached_tokens = 0;
};

struct EngineStats {
  int num_running = 0;
  int num_waiting = 0;
  int num_kv_blocks_total = 0;
  int num_kv_blocks_used = 0;
  int num_kv_blocks_cached = 0;       // unreferenced, kept for prefix reuse, evictable
  int64_t prefix_cache_queries = 0;   // prompt tokens looked up
  int64_t prefix_cache_hits = 0;      // prompt tokens found
  int64_t num_preemptions = 0;
  int64_t prompt_tokens_total = 0;
  int64_t generation_tokens_total = 0;
  // The longest sequence (prompt + output) this engine runs: EngineOptions::max_model_len (or the
  // model's max_position_embeddings) capped by the KV pool. A prompt must be shorter than this.
  int max_model_len = 0;
  // Where the engine thread's time goes over the steps it ran (host wall clock): inside the backend's
  // forward (GPU step plus the backend's own host work) and outside it (scheduling, batch preparation,
  // sampling, stop checks, output delivery). The second is the CPU side's cost per step.
  int64_t num_steps = 0;
  double forward_seconds = 0;
  double outside_forward_seconds = 0;
  // The same over decode steps only (one new token per sequence).
  int64_t num_decode_steps = 0;
  double decode_forward_seconds = 0;
  double decode_outside_forward_seconds = 0;
};

// What the prefix cache stored and evicted over one engine step (KV events, docs/routing.md): block
// hashes as common/block_hash.h names them, salted by kv_hash_salt(); disjoint lists.
struct KvCacheEvents {
  std::vector<uint64_t> stored;
  std::vector<uint64_t> removed;
};

class Engine {
 public:
  // Stops the loop thread and ends every live request with kAbort.
  virtual ~Engine() = default;

  // Admits a request. InvalidArgument for bad sampling parameters or token ids, a request_id already
  // live, n > 1 with a PrefillMode other than kLocal, or stop strings on an engine without a
  // TextStreamFactory; TooLarge for a prompt that can never fit (prompt length >= max_model_len, which
  // is capped by the KV pool's size); NotFound for kDecodeFromKv without a reservation under that id;
  // Unavailable while shutting down. On OK, `on_output` receives the outputs until one per choice has
  // finished == true (on the engine thread; from the destroying thread for requests the destructor
  // aborts).
  //
  // kPrefillOnly: the one output carries the first token, finished == true, and kv_block_ids. Its
  // finish_reason is kNone when decoding should continue elsewhere, or kStop/kLength when the first
  // token already ends the request (EOS, a stop rule, max_tokens == 1). The blocks stay held either
  // way until release_blocks() or abort() for that id.
  // kDecodeFromKv: first_token_id is streamed as the choice's first output token (without logprobs),
  // counts toward max_tokens and goes through the stop rules like a sampled token.
  // A kLocal submit for an id holding a reservation frees the reservation first (local fallback).
  virtual Status submit(Request request, OutputCallback on_output) = 0;
  // Ends the request with FinishReason::kAbort and frees its blocks; also releases blocks held for the
  // id (a reservation or a finished prefill's KV). No-op for an unknown id. The final output follows
  // within one engine step.
  virtual void abort(const std::string& request_id) = 0;

  // Decode side of a remote prefill: reserves blocks for `prompt_token_ids` (reusing cached prefix
  // blocks) under `request_id`, until submit() with kDecodeFromKv or kLocal for that id, or
  // release_blocks(). ResourceExhausted when the pool cannot hold the prompt now.
  virtual StatusOr<KvReservation> reserve_kv(const std::string& request_id,
                                             const std::vector<int32_t>& prompt_token_ids) = 0;
  // Frees blocks held for `request_id` (a reservation, or a finished kPrefillOnly request's blocks).
  // Full blocks keep their contents in the prefix cache. No-op for an unknown id.
  virtual void release_blocks(const std::string& request_id) = 0;

  // Leading tokens of `prompt_token_ids` whose KV this engine's prefix cache holds now (a multiple of
  // block_size; 0 with prefix caching off), for routing and the local-or-remote prefill decision. A
  // hint: the blocks may be evicted before a later reserve_kv/submit. Looks only; changes nothing.
  virtual int num_cached_prefix_tokens(const std::vector<int32_t>& prompt_token_ids) const {
    (void)prompt_token_ids;
    return 0;
  }

  virtual EngineStats stats() const = 0;
  virtual backend::Backend& backend() = 0;

  // KV events: `callback` runs on the engine thread, outside the engine's lock, after every step whose
  // prefix cache changed, with that step's net change. Set before the first submit. An engine without a
  // prefix cache never calls it.
  virtual void set_on_kv_events(std::function<void(KvCacheEvents)> callback) { (void)callback; }
  // Every block hash the prefix cache holds now (a snapshot for a KV index's resynchronisation). Events
  // already taken and ones not yet delivered may both overlap it: applying a store or an eviction
  // again is harmless, so a snapshot followed by the events after it ends in the cache's state.
  virtual std::vector<uint64_t> kv_cached_hashes() const { return {}; }
  // The salt of the first block's chain hash (the model); 0 with no prefix cache.
  virtual uint64_t kv_hash_salt() const { return 0; }

  // Called once, on the engine thread and after the failed step's outputs are delivered, when a step
  // fails with the backend's device unusable (Backend::device_health): by then every request the
  // engine held has ended with an error, and submit() and reserve_kv() answer Unavailable from then on.
  // Set before the first submit.
  virtual void set_on_device_lost(std::function<void(const Status&)> callback) { (void)callback; }
};

// Starts the engine loop thread. `text` may be null (no text deltas, no stop strings).
std::unique_ptr<Engine> create_engine(std::unique_ptr<backend::Backend> backend, const EngineOptions& options,
                                      std::shared_ptr<TextStreamFactory> text = nullptr);

}  // namespace tandem::engine
