// CudaBackend (cuda_backend_impl.cuh): one forward step. The attention plan and the step's metadata packed
// into one upload, the kernels of every layer enqueued on the stream, decode steps captured and replayed as
// CUDA graphs per (batch bucket, block-table width), and the results (logits, argmax or drawn tokens)
// brought back to the host.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/cuda_backend_impl.cuh"
#include "backend/cuda/cuda_check.cuh"
#include "backend/cuda/cuda_log.h"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/sampling.cuh"
#include "backend/cuda/skinny_gemm.cuh"

namespace tandem::backend::cuda {

StepLayout CudaBackend::layout_step(int num_tokens, size_t table_entries, int num_logits, size_t num_items,
                                     size_t num_combines, size_t num_mma_items) {
  StepLayout l;
  size_t offset = 0;
  auto reserve = [&](size_t bytes) {
    const size_t at = offset;
    offset = align_up(offset + bytes);
    return at;
  };
  l.ids = reserve(sizeof(int32_t) * num_tokens);
  l.positions = reserve(sizeof(int32_t) * num_tokens);
  l.slots = reserve(sizeof(int32_t) * num_tokens);
  l.tables = reserve(sizeof(int32_t) * table_entries);
  l.rows = reserve(sizeof(int32_t) * num_logits);
  l.items = reserve(sizeof(AttentionWorkItem) * num_items);
  l.combines = reserve(sizeof(AttentionCombineItem) * num_combines);
  l.mma_items = reserve(sizeof(AttentionWorkItem) * num_mma_items);
  l.total = offset;
  return l;
}

Status CudaBackend::enqueue_step(const StepArgs& a) {
  const auto& c = config_;
  const int n = a.num_tokens;
  const int hidden = c.hidden_size, q_size = c.q_size(), kv_size = c.kv_size();
  const int qkv_size = q_size + 2 * kv_size, inter = c.intermediate_size;
  const std::byte* d = a.metadata;
  const int32_t* d_ids = reinterpret_cast<const int32_t*>(d + a.layout.ids);
  const int32_t* d_pos = reinterpret_cast<const int32_t*>(d + a.layout.positions);
  const int32_t* d_slots = reinterpret_cast<const int32_t*>(d + a.layout.slots);
  const int32_t* d_tables = reinterpret_cast<const int32_t*>(d + a.layout.tables);
  const int32_t* d_rows = reinterpret_cast<const int32_t*>(d + a.layout.rows);

  const bool decode_step = a.decode || (a.num_tokens == a.num_logits && a.num_mma_items == 0 && a.num_tokens <= 256);
  profile_.begin_step(decode_step, stream_);
  TANDEM_CUDA_RETURN(launch_embedding(d_ids, embed_, residual_, n, hidden, stream_, launch_), device_);
  mark(StepPart::kEmbed);
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = layers_[l];
    // The previous layer's MLP output joins the residual here (none before the first layer).
    TANDEM_CUDA_RETURN(launch_add_rms_norm(residual_, l == 0 ? nullptr : delta_, w.input_norm, normed_, nullptr, n,
                                           hidden, c.rms_norm_eps, true, stream_, launch_),
                       device_);
    mark(StepPart::kNorm);
    TANDEM_RETURN_IF_ERROR(w.qkv8 ? fp8_linear(normed_, n, w.qkv8, qkv_, false)
                                  : gemm(normed_, n, hidden, w.qkv, qkv_size, qkv_, false));
    mark(StepPart::kQkvGemm);
    QkvParams qp;
    qp.qkv = qkv_;
    qp.bias = w.qkv_bias;
    qp.q_norm = w.q_norm;
    qp.k_norm = w.k_norm;
    qp.inv_freq = inv_freq_;
    qp.positions = d_pos;
    qp.slots = d_slots;
    qp.kv_pool = layer_pool(l);
    if (kv_.dtype == model::DType::kF8E4M3) qp.kv_pool_fp8 = reinterpret_cast<uint8_t*>(layer_pool_bytes(l));
    qp.num_tokens = n;
    qp.num_heads = c.num_heads;
    qp.num_kv_heads = c.num_kv_heads;
    qp.head_dim = c.head_dim;
    qp.block_size = kv_.block_size;
    qp.eps = c.rms_norm_eps;
    TANDEM_CUDA_RETURN(launch_qkv_rope_kv_write(qp, stream_, launch_), device_);
    mark(StepPart::kQkvRope);
    AttentionParams ap;
    ap.q = qkv_;
    ap.q_row_stride = qkv_size;
    ap.kv_pool = layer_pool(l);
    if (kv_.dtype == model::DType::kF8E4M3) ap.kv_pool_fp8 = reinterpret_cast<const uint8_t*>(layer_pool_bytes(l));
    ap.block_tables = d_tables;
    ap.max_blocks_per_seq = a.max_blocks_per_seq;
    ap.positions = d_pos;
    ap.out = attn_out_;
    ap.items = reinterpret_cast<const AttentionWorkItem*>(d + a.layout.items);
    ap.combines = reinterpret_cast<const AttentionCombineItem*>(d + a.layout.combines);
    ap.mma_items = reinterpret_cast<const AttentionWorkItem*>(d + a.layout.mma_items);
    ap.num_mma_items = a.num_mma_items;
    ap.partial_out = partial_out_;
    ap.partial_ml = partial_ml_;
    ap.num_items = a.num_items;
    ap.num_combines = a.num_combines;
    ap.num_heads = c.num_heads;
    ap.num_kv_heads = c.num_kv_heads;
    ap.head_dim = c.head_dim;
    ap.block_size = kv_.block_size;
    ap.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    ap.decode = a.decode;
    if (a.decode_splits > 1) {
      ap.combine_counters = combine_counters_;
      ap.decode_splits = a.decode_splits;
    }
    TANDEM_CUDA_RETURN(launch_attention(ap, stream_, launch_), device_);
    mark(StepPart::kAttention);
    TANDEM_RETURN_IF_ERROR(w.o8 ? fp8_linear(attn_out_, n, w.o8, delta_, false)
                                : gemm(attn_out_, n, q_size, w.o_proj, hidden, delta_, false));
    TANDEM_RETURN_IF_ERROR(reduce_partial_sums(n));
    mark(StepPart::kOGemm);
    TANDEM_CUDA_RETURN(launch_add_rms_norm(residual_, delta_, w.post_norm, normed_, nullptr, n, hidden, c.rms_norm_eps,
                                           true, stream_, launch_),
                       device_);
    mark(StepPart::kNorm);
    TANDEM_RETURN_IF_ERROR(w.gate_up8 ? fp8_linear(normed_, n, w.gate_up8, gate_up_, false)
                                      : gemm(normed_, n, hidden, w.gate_up, 2 * inter, gate_up_, false));
    mark(StepPart::kGateUpGemm);
    if (w.down8) {
      TANDEM_RETURN_IF_ERROR(fp8_linear(gate_up_, n, w.down8, delta_, true));
    } else if (use_skinny_ && skinny_gemm_supported(n, inter, gate_up_, w.down) && skinny_gemm_preferred(n, inter, hidden)) {
      // Few tokens: the activation is computed as the down projection loads its input (one launch).
      TANDEM_CUDA_RETURN(launch_skinny_gemm_silu(gate_up_, n, inter, w.down, hidden, delta_, false, skinny_ws_,
                                                 num_sms_, stream_, launch_),
                         device_);
    } else {
      TANDEM_CUDA_RETURN(launch_silu_and_mul(gate_up_, act_, n, inter, stream_, launch_), device_);
      TANDEM_RETURN_IF_ERROR(gemm(act_, n, inter, w.down, hidden, delta_, false));
    }
    TANDEM_RETURN_IF_ERROR(reduce_partial_sums(n));
    mark(StepPart::kDownGemm);
  }
  if (a.num_logits > 0) {
    // Only the rows that need logits: the last MLP output is added on the fly, the residual left alone.
    TANDEM_CUDA_RETURN(launch_add_rms_norm(residual_, delta_, final_norm_, normed_, d_rows, a.num_logits, hidden,
                                           c.rms_norm_eps, false, stream_, launch_),
                       device_);
    TANDEM_RETURN_IF_ERROR(lm_head_and_gather(a.num_logits));
    mark(StepPart::kLmHead);
  }
  return Status::Ok();
}

void CudaBackend::fill_slots(const ForwardBatch& b) {
  slots_.resize(b.num_tokens());
  for (int s = 0; s < b.num_seqs(); ++s) {
    const int32_t* table = b.block_tables.data() + static_cast<size_t>(s) * b.max_blocks_per_seq;
    for (int t = b.query_starts[s]; t < b.query_starts[s + 1]; ++t) {
      const int pos = b.positions[t];
      slots_[t] = table[pos / kv_.block_size] * kv_.block_size + pos % kv_.block_size;
    }
  }
}

Status CudaBackend::run_forward(const ForwardBatch& b, std::span<float> logits) {
  const int n = b.num_tokens(), num_seqs = b.num_seqs(), num_logits = b.num_logits();
  TANDEM_RETURN_IF_ERROR(ensure_workspace(n, num_logits));
  fill_slots(b);
  bool one_token_each = n == num_seqs && num_logits <= num_seqs && num_seqs <= kGraphBuckets.back();
  for (int i = 0; one_token_each && i <= num_seqs; ++i) one_token_each = b.query_starts[i] == i;
  if (graphs_enabled_ && one_token_each) {
    return run_decode_graph(b, logits);
  }
  const AttentionPlan plan = plan_attention(b.query_starts.data(), b.context_lens.data(), num_seqs, config_.num_heads,
                                            config_.num_kv_heads, 2 * num_sms_, kMaxPartials, use_mma_);

  // Pack the metadata into one pinned buffer and upload it in one copy.
  const StepLayout layout =
      layout_step(n, b.block_tables.size(), num_logits, plan.items.size(), plan.combines.size(), plan.mma_items.size());
  TANDEM_RETURN_IF_ERROR(ensure_metadata(layout.total));
  std::byte* h = metadata_host_;
  std::memcpy(h + layout.ids, b.token_ids.data(), sizeof(int32_t) * n);
  std::memcpy(h + layout.positions, b.positions.data(), sizeof(int32_t) * n);
  std::memcpy(h + layout.slots, slots_.data(), sizeof(int32_t) * n);
  std::memcpy(h + layout.tables, b.block_tables.data(), sizeof(int32_t) * b.block_tables.size());
  std::memcpy(h + layout.rows, b.logits_indices.data(), sizeof(int32_t) * num_logits);
  std::memcpy(h + layout.items, plan.items.data(), sizeof(AttentionWorkItem) * plan.items.size());
  std::memcpy(h + layout.combines, plan.combines.data(), sizeof(AttentionCombineItem) * plan.combines.size());
  std::memcpy(h + layout.mma_items, plan.mma_items.data(), sizeof(AttentionWorkItem) * plan.mma_items.size());
  TANDEM_CUDA_RETURN(cudaMemcpyAsync(metadata_dev_, metadata_host_, layout.total, cudaMemcpyHostToDevice, stream_), device_);
  StepArgs args;
  args.metadata = metadata_dev_;
  args.layout = layout;
  args.num_tokens = n;
  args.num_logits = num_logits;
  args.max_blocks_per_seq = b.max_blocks_per_seq;
  args.num_items = static_cast<int>(plan.items.size());
  args.num_combines = static_cast<int>(plan.combines.size());
  args.num_mma_items = static_cast<int>(plan.mma_items.size());
  args.decode = plan.decode;
  TANDEM_RETURN_IF_ERROR(enqueue_step(args));
  return finish_step(logits);
}

Status CudaBackend::finish_step(std::span<float> logits) {
  if (!greedy_tokens_.empty()) {
    const int rows = static_cast<int>(greedy_tokens_.size());
    if (sampling_) {
      // The forward is enqueued: the masks the host computed meanwhile join the upload.
      size_t upload = sample_upload_bytes_;
      const uint32_t* masks_dev = nullptr;
      if (!sample_masks_.empty()) {
        if (sample_await_masks_) sample_await_masks_();
        std::memcpy(sample_host_ + sample_masks_offset_, sample_masks_.data(), sample_masks_.size_bytes());
        upload = sample_masks_offset_ + sample_masks_.size_bytes();
        masks_dev = reinterpret_cast<const uint32_t*>(sample_dev_ + sample_masks_offset_);
      }
      TANDEM_CUDA_RETURN(cudaMemcpyAsync(sample_dev_, sample_host_, upload, cudaMemcpyHostToDevice, stream_), device_);
      const auto* rows_dev = reinterpret_cast<const RowSampling*>(sample_dev_);
      const auto* edits_dev = reinterpret_cast<const LogitEdit*>(sample_dev_ + sizeof(RowSampling) * rows);
      auto* logprobs_dev = sample_logprobs_.empty() ? nullptr : reinterpret_cast<RowLogprobs*>(sample_dev_ + sample_logprobs_offset_);
      TANDEM_CUDA_RETURN(launch_sample_rows(logits_dev_, rows_dev, edits_dev, masks_dev, greedy_dev_, logprobs_dev, rows,
                                            config_.vocab_size, stream_, launch_),
                         device_);
      if (logprobs_dev != nullptr) {
        TANDEM_CUDA_RETURN(cudaMemcpyAsync(sample_host_ + sample_logprobs_offset_, logprobs_dev, sample_logprobs_.size_bytes(),
                                           cudaMemcpyDeviceToHost, stream_),
                           device_);
      }
    } else {
      TANDEM_CUDA_RETURN(launch_argmax(logits_dev_, greedy_dev_, rows, config_.vocab_size, stream_, launch_), device_);
    }
    mark(StepPart::kArgmax);
    TANDEM_CUDA_RETURN(cudaMemcpyAsync(greedy_tokens_.data(), greedy_dev_, greedy_tokens_.size_bytes(), cudaMemcpyDeviceToHost,
                                       stream_),
                       device_);
  } else if (!logits.empty()) {
    TANDEM_CUDA_RETURN(cudaMemcpyAsync(logits.data(), logits_dev_, logits.size_bytes(), cudaMemcpyDeviceToHost, stream_),
                       device_);
  }
  const bool timed = step_timing_.in_step();
  if (timed) TANDEM_CUDA_RETURN(step_timing_.record_done(stream_), device_);
  TANDEM_CUDA_RETURN(cudaStreamSynchronize(stream_), device_);
  step_timing_.step_returned(timed);
  if (sampling_ && !sample_logprobs_.empty()) {
    std::memcpy(sample_logprobs_.data(), sample_host_ + sample_logprobs_offset_, sample_logprobs_.size_bytes());
  }
  if (profile_.enabled()) profile_.collect();
  return Status::Ok();
}

// A decode step through a CUDA graph captured for (batch bucket, block-table width bucket): the step's
// metadata is padded to the bucket (padding tokens write their K/V into the hidden scratch block and
// have no attention rows) and copied into the graph's own metadata buffer before each replay.
Status CudaBackend::run_decode_graph(const ForwardBatch& b, std::span<float> logits) {
  const int num_seqs = b.num_seqs(), num_logits = b.num_logits();
  int bucket = kGraphBuckets.back();
  for (int size : kGraphBuckets) {
    if (size >= num_seqs) {
      bucket = size;
      break;
    }
  }
  int width = kGraphMinWidth;
  while (width < b.max_blocks_per_seq) width *= 2;
  TANDEM_RETURN_IF_ERROR(ensure_workspace(bucket, bucket));
  DecodeGraph* graph = nullptr;
  for (auto& g : graphs_) {
    if (g.bucket == bucket && g.width == width) graph = &g;
  }

  const auto& c = config_;
  const int group = c.num_heads / c.num_kv_heads;
  const int tiles = bucket * c.num_kv_heads * ((group + kAttentionRows - 1) / kAttentionRows);
  // The most splits a tile may use (aiming at 4 blocks an SM); each step's plan uses fewer for short
  // contexts (at least kMinSplitKeys keys each), so the captured grid covers long contexts without costing
  // short ones, and the last split of a tile to finish merges it (no combine kernel).
  constexpr int kMinSplitKeys = 32;
  const int target_blocks = 4 * num_sms_;
  int splits = std::clamp((target_blocks + tiles - 1) / tiles, 1, 32);
  if (splits > 1 && tiles * splits > kMaxPartials) splits = std::max(1, kMaxPartials / tiles);
  if (graph) splits = graph->splits;
  const AttentionPlan plan = plan_decode_attention(b.context_lens.data(), num_seqs, bucket, c.num_heads, c.num_kv_heads,
                                                   splits, kMinSplitKeys);
  const StepLayout layout = layout_step(bucket, static_cast<size_t>(bucket) * width, bucket, plan.items.size(),
                                        plan.combines.size());
  TANDEM_RETURN_IF_ERROR(ensure_metadata(layout.total));

  std::byte* h = metadata_host_;
  auto* ids = reinterpret_cast<int32_t*>(h + layout.ids);
  auto* positions = reinterpret_cast<int32_t*>(h + layout.positions);
  auto* slots = reinterpret_cast<int32_t*>(h + layout.slots);
  auto* tables = reinterpret_cast<int32_t*>(h + layout.tables);
  auto* rows = reinterpret_cast<int32_t*>(h + layout.rows);
  const int scratch_slot = kv_.num_blocks * kv_.block_size;  // the hidden block past the engine's blocks
  for (int s = 0; s < bucket; ++s) {
    const bool real = s < num_seqs;
    ids[s] = real ? b.token_ids[s] : 0;
    positions[s] = real ? b.positions[s] : 0;
    slots[s] = real ? slots_[s] : scratch_slot;
    rows[s] = s < num_logits ? b.logits_indices[s] : s;
    int32_t* row = tables + static_cast<size_t>(s) * width;
    for (int k = 0; k < width; ++k) {
      row[k] = real && k < b.max_blocks_per_seq ? b.block_tables[static_cast<size_t>(s) * b.max_blocks_per_seq + k] : -1;
    }
  }
  std::memcpy(h + layout.items, plan.items.data(), sizeof(AttentionWorkItem) * plan.items.size());
  std::memcpy(h + layout.combines, plan.combines.data(), sizeof(AttentionCombineItem) * plan.combines.size());

  bool captured_now = false;
  if (!graph) {
    DecodeGraph g;
    g.bucket = bucket;
    g.width = width;
    g.splits = splits;
    g.metadata_bytes = layout.total;
    TANDEM_CUDA_RETURN(cudaMalloc(&g.metadata, layout.total), device_);
    StepArgs args;
    args.metadata = g.metadata;
    args.layout = layout;
    args.num_tokens = bucket;
    args.num_logits = bucket;
    args.max_blocks_per_seq = width;
    args.num_items = static_cast<int>(plan.items.size());
    args.num_combines = static_cast<int>(plan.combines.size());
    args.decode = true;
    args.decode_splits = splits > 1 ? splits : 0;
    cudaGraph_t captured = nullptr;
    TANDEM_CUDA_RETURN(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), device_);
    Status enqueued = enqueue_step(args);
    cudaError_t end = cudaStreamEndCapture(stream_, &captured);
    if (enqueued.ok() && end == cudaSuccess) end = cudaGraphInstantiate(&g.exec, captured, 0);
    if (captured) cudaGraphDestroy(captured);
    if (!enqueued.ok() || end != cudaSuccess) {
      cudaFree(g.metadata);
      cudaGetLastError();
      graphs_enabled_ = false;  // run eagerly from now on
      log_error("cuda backend: capturing a decode graph failed on cuda:" + std::to_string(device_) + " (" +
                (enqueued.ok() ? std::string(cudaGetErrorString(end)) : enqueued.message()) +
                "); decode steps run without CUDA graphs");
      return run_forward(b, logits);
    }
    captured_now = true;
    log_info("cuda backend: captured decode graph batch_bucket=" + std::to_string(bucket) +
             " block_table_width=" + std::to_string(width) + " kv_splits=" + std::to_string(splits));
    graphs_.push_back(g);
    graph = &graphs_.back();
  }
  // A step that captured its graph is not timed: its host work is the capture.
  if (step_timing_.enabled() && !captured_now) {
    TANDEM_CUDA_RETURN(step_timing_.replay_begins(stream_), device_);
  }
  TANDEM_CUDA_RETURN(cudaMemcpyAsync(graph->metadata, metadata_host_, layout.total, cudaMemcpyHostToDevice, stream_), device_);
  TANDEM_CUDA_RETURN(cudaGraphLaunch(graph->exec, stream_), device_);
  return finish_step(logits);
}

void CudaBackend::clear_graphs() {
  for (auto& g : graphs_) {
    cudaGraphExecDestroy(g.exec);
    cudaFree(g.metadata);
  }
  graphs_.clear();
}

}  // namespace tandem::backend::cuda
