// Driver of tools/gpu/gpu_check.sh (not a test): runs a Backend over prompts and dumps last-position logits
// for tools/references/compare_transformers.py, or times prefill and decode.
//
//   backend_tool logits --model M --device cuda:0 --prompts FILE --mode alone|batched|chunked:N --out FILE.f32
//     FILE: {"prompts": [[ids...], ...]}; writes float32 [num_prompts, vocab] row-major.
//   backend_tool bench --model M --device cuda:0 [--prompt-len 1024] [--decode-steps 128] [--batch 1,8,32]
//                      [--tensor-parallel-size N] [--tp-path 1]
//     prints one JSON object: load seconds, prefill tokens/s, decode ms/step at each batch size, with
//     host logits (forward) and with the device argmax (forward_greedy). --tp-path 1 takes the
//     tensor-parallel CUDA path (NCCL) even at TP 1, to measure what it costs against the plain backend.
//   backend_tool fp8-gemm [--device 0] [--size 8192] [--iters 50]
//     prints one JSON object: the TFLOP/s of the backend's FP8 GEMM (cuBLASLt e4m3, per-row scales) on
//     size^3, the reference rate of the FP8 prefill figure.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/backend.h"
#ifdef TANDEM_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "backend/reference_decode.h"
#include "common/error.h"
#include "common/logging.h"
#include "model/weight_source.h"

namespace tb = tandem::backend;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::map<std::string, std::string> parse_flags(int argc, char** argv, int first) {
  std::map<std::string, std::string> flags;
  for (int i = first; i + 1 < argc; i += 2) flags[argv[i]] = argv[i + 1];
  return flags;
}

std::string flag(const std::map<std::string, std::string>& f, const std::string& name, const std::string& def) {
  auto it = f.find(name);
  return it == f.end() ? def : it->second;
}

// Runs the sequences in steps; each step takes up to `chunk` new tokens of every unfinished sequence
// (the whole prompt when chunk is large). Sequence i owns blocks [i * blocks_each, (i + 1) * blocks_each).
tandem::Status prefill(tb::Backend& backend, const std::vector<std::vector<int32_t>>& prompts, const std::vector<size_t>& which,
                       int chunk, int blocks_each, std::vector<std::vector<float>>& last_logits) {
  const int vocab = backend.config().vocab_size;
  const int bs = backend.kv_cache_spec().block_size;
  std::vector<int> done(prompts.size(), 0);
  while (true) {
    std::vector<int32_t> ids, positions, starts{0}, context, tables, rows;
    std::vector<size_t> in_step;
    for (size_t i : which) {
      const int len = static_cast<int>(prompts[i].size());
      if (done[i] >= len) continue;
      const int take = std::min(chunk, len - done[i]);
      for (int k = 0; k < take; ++k) {
        ids.push_back(prompts[i][done[i] + k]);
        positions.push_back(done[i] + k);
      }
      starts.push_back(static_cast<int32_t>(ids.size()));
      context.push_back(done[i] + take);
      rows.push_back(static_cast<int32_t>(ids.size()) - 1);
      for (int b = 0; b < blocks_each; ++b) tables.push_back(static_cast<int32_t>(i * blocks_each + b));
      in_step.push_back(i);
      (void)bs;
    }
    if (in_step.empty()) return tandem::Status::Ok();
    std::vector<float> logits(rows.size() * vocab);
    TANDEM_RETURN_IF_ERROR(backend.forward(tb::ForwardBatch{ids, positions, starts, context, tables, blocks_each, rows}, logits));
    for (size_t r = 0; r < in_step.size(); ++r) {
      const size_t i = in_step[r];
      done[i] = context[r];
      if (done[i] == static_cast<int>(prompts[i].size())) {
        last_logits[i].assign(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
      }
    }
  }
}

int run_logits(const std::map<std::string, std::string>& f) {
  auto weights = tandem::model::open_weight_source(flag(f, "--model", ""));
  std::ifstream in(flag(f, "--prompts", ""));
  const auto j = nlohmann::json::parse(in);
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& p : j.at("prompts")) prompts.push_back(p.get<std::vector<int32_t>>());
  const std::string mode = flag(f, "--mode", "alone");
  size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, p.size());
  tb::BackendOptions options;
  options.device = flag(f, "--device", "cuda:0");
  const int blocks_each = static_cast<int>((longest + options.block_size - 1) / options.block_size);
  options.num_kv_blocks = blocks_each * static_cast<int>(prompts.size());
  auto backend = tb::create_backend(*weights, options);
  std::vector<std::vector<float>> last(prompts.size());
  std::vector<size_t> all(prompts.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  tandem::Status s;
  if (mode == "alone") {
    for (size_t i = 0; i < prompts.size() && s.ok(); ++i) s = prefill(*backend, prompts, {i}, 1 << 30, blocks_each, last);
  } else if (mode == "batched") {
    s = prefill(*backend, prompts, all, 1 << 30, blocks_each, last);
  } else if (mode.rfind("chunked:", 0) == 0) {
    s = prefill(*backend, prompts, all, std::stoi(mode.substr(8)), blocks_each, last);
  } else {
    throw tandem::Error("--mode: alone, batched or chunked:N");
  }
  tandem::throw_if_error(s);
  std::ofstream out(flag(f, "--out", ""), std::ios::binary);
  for (const auto& row : last) out.write(reinterpret_cast<const char*>(row.data()), static_cast<std::streamsize>(row.size() * sizeof(float)));
  return out.good() ? 0 : 1;
}

int run_bench(const std::map<std::string, std::string>& f) {
  const std::string model = flag(f, "--model", "random:qwen3-0.6b");
  const int prompt_len = std::stoi(flag(f, "--prompt-len", "1024"));
  const int decode_steps = std::stoi(flag(f, "--decode-steps", "128"));
  std::vector<int> batches;
  {
    std::stringstream ss(flag(f, "--batch", "1,8,32"));
    std::string item;
    while (std::getline(ss, item, ',')) batches.push_back(std::stoi(item));
  }
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  auto t0 = Clock::now();
  auto weights = tandem::model::open_weight_source(model);
  tb::BackendOptions options;
  options.device = flag(f, "--device", "cuda:0");
  const int blocks_each = (prompt_len + decode_steps + options.block_size) / options.block_size + 1;
  options.num_kv_blocks = blocks_each * std::max(max_batch, 8);
  options.tensor_parallel_size = std::stoi(flag(f, "--tensor-parallel-size", "1"));
  const bool tp_path = flag(f, "--tp-path", "0") == "1";
  std::unique_ptr<tb::Backend> backend;
#ifdef TANDEM_HAVE_CUDA
  if (tp_path) backend = tb::cuda::create_tensor_parallel_cuda_backend(*weights, options);
#else
  if (tp_path) throw tandem::Error("--tp-path 1: this build has no CUDA");
#endif
  if (!backend) backend = tb::create_backend(*weights, options);
  const double load_s = seconds_since(t0);
  const int vocab = backend->config().vocab_size;
  std::mt19937 rng(1);

  nlohmann::json result;
  result["model"] = model;
  result["device"] = backend->device_name();
  result["tensor_parallel_size"] = options.tensor_parallel_size;
  result["tp_path"] = tp_path;
  result["load_seconds"] = load_s;
  result["prompt_len"] = prompt_len;

  // Prefill: 8 prompts of prompt_len in one step (after one warm-up step).
  {
    const int n = 8;
    std::vector<std::vector<int32_t>> prompts(n);
    for (auto& p : prompts) for (int t = 0; t < prompt_len; ++t) p.push_back(static_cast<int32_t>(rng() % vocab));
    std::vector<size_t> all(n);
    for (int i = 0; i < n; ++i) all[i] = i;
    std::vector<std::vector<float>> last(n);
    tandem::throw_if_error(prefill(*backend, prompts, all, 1 << 30, blocks_each, last));  // warm-up
    auto t = Clock::now();
    const int reps = 3;
    for (int r = 0; r < reps; ++r) tandem::throw_if_error(prefill(*backend, prompts, all, 1 << 30, blocks_each, last));
    const double s = seconds_since(t) / reps;
    result["prefill_batch_tokens"] = n * prompt_len;
    result["prefill_ms"] = s * 1e3;
    result["prefill_tokens_per_s"] = n * prompt_len / s;
  }
  // Decode: `batch` sequences with prompt_len tokens of context each, one token per step.
  for (int batch : batches) {
    std::vector<int32_t> ids(batch), positions(batch), starts(batch + 1), context(batch), tables, rows(batch);
    for (int i = 0; i < batch; ++i) {
      starts[i + 1] = i + 1;
      rows[i] = i;
      for (int b = 0; b < blocks_each; ++b) tables.push_back(i * blocks_each + b);
    }
    std::vector<float> logits(static_cast<size_t>(batch) * vocab);
    std::vector<int32_t> greedy(batch);
    // greedy: forward_greedy (argmax on the device, 4 bytes per row back); else forward() with the
    // [batch, vocab] fp32 logits copied to the host, as an engine sampling on the host gets them.
    auto step = [&](int k, bool on_device) {
      for (int i = 0; i < batch; ++i) {
        ids[i] = static_cast<int32_t>(rng() % vocab);
        positions[i] = prompt_len + k;
        context[i] = prompt_len + k + 1;
      }
      const tb::ForwardBatch fb{ids, positions, starts, context, tables, blocks_each, rows};
      tandem::throw_if_error(on_device ? backend->forward_greedy(fb, greedy) : backend->forward(fb, logits));
    };
    for (bool on_device : {false, true}) {
      for (int k = 0; k < 4; ++k) step(k, on_device);
      auto t = Clock::now();
      for (int k = 0; k < decode_steps; ++k) step(k, on_device);
      const double ms = seconds_since(t) * 1e3 / decode_steps;
      const std::string suffix = (on_device ? "_greedy_batch" : "_batch") + std::to_string(batch);
      result["decode_ms_per_step" + suffix] = ms;
      result["decode_tokens_per_s" + suffix] = batch * 1e3 / ms;
    }
  }
  std::printf("%s\n", result.dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    tandem::init_logging("info");
    if (argc < 2) throw tandem::Error("usage: backend_tool logits|bench --flag value ...");
    const std::string cmd = argv[1];
    const auto flags = parse_flags(argc, argv, 2);
    if (cmd == "logits") return run_logits(flags);
    if (cmd == "bench") return run_bench(flags);
#ifdef TANDEM_HAVE_CUDA
    if (cmd == "fp8-gemm") {
      const int n = std::stoi(flag(flags, "--size", "8192"));
      const double tflops = tb::cuda::measure_fp8_gemm_tflops(std::stoi(flag(flags, "--device", "0")), n, n, n,
                                                              std::stoi(flag(flags, "--iters", "50")));
      std::printf("%s\n", nlohmann::json{{"figure", "fp8_gemm_tflops"}, {"value", tflops}, {"unit", "TFLOP/s"},
                                          {"shape", {n, n, n}}, {"gemm", "cublaslt e4m3 outer-vector scales"}}
                               .dump()
                               .c_str());
      return 0;
    }
#endif
    throw tandem::Error("unknown command " + cmd);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
