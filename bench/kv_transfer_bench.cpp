// kv_transfer_bench: KV transfer between two processes as the transfer layer moves it, side by side
// with a plain device copy of the same bytes (issue 9's "KV transfer" bar, issue 12's peer-copy bar).
//
//   build/bench/kv_transfer_bench [--device cuda:0] [--peer-device cuda:0] [--tokens 4096] [--iters 10]
//                                 [--output-json FILE] [--kv-transfer cuda_ipc|nccl|tcp]
//                                 [--pusher-visible-devices N] [--reference-gbps G]
//
// --kv-transfer nccl moves the blocks over the NCCL path (a two-rank link per pair). With
// --pusher-visible-devices the pusher runs with CUDA_VISIBLE_DEVICES=N, so (run the receiver under another
// CUDA_VISIBLE_DEVICES) the two processes cannot see each other's GPU, as in two pods; the plain copy is
// then not measurable here and the ratio is taken against --reference-gbps (cudaMemcpyPeer measured by a
// run without isolation).
//
// Default geometry is one 4,096-token Llama-3.1-8B prompt: 32 layers x 256 blocks of 16 tokens, 8 KV
// heads x 128 x bf16 x (K, V) = 64 KiB per (layer, block), 512 MiB in all. No model is loaded: both
// processes build a CUDA backend over a stub model of that KV geometry (tiny weights), so the pools,
// their layout and the copy path are the real ones.
//
// This process is the decode side (receiver, on --peer-device): it exports its pools through the
// cuda_ipc transfer backend and expects the pushes. It starts itself again as the prefill side (pusher,
// on --device), which fills its blocks, pushes them --iters times exactly as Worker::run_push does
// (transfer::TransferBackend::push: claim over TCP, one batched device copy over every layer, release),
// and then times a plain cudaMemcpy device-to-device (one GPU) or cudaMemcpyPeer (two GPUs) of the same
// bytes. Destination blocks are a random permutation, as a block manager hands them out. The receiver
// checks a sample of the landed blocks against the pusher's pattern.
//
// Prints GB/s (1e9 B/s) of both and their ratio; the bar is >= 70% of the plain copy.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "common/error.h"
#include "common/logging.h"
#include "model/presets.h"
#include "model/random_weights.h"
#include "transfer/transfer.h"
#include "transfer/transport_choice.h"
#include "worker/worker.h"

using namespace tandem;

namespace {

struct Options {
  std::string device = "cuda:0";
  std::string peer_device = "cuda:0";
  int tokens = 4096;
  int layers = 32;
  int kv_heads = 8;
  int head_dim = 128;
  int block_size = 16;
  int iters = 10;
  std::string output_json;
  std::string kind = "cuda_ipc";
  std::string pusher_visible;   // CUDA_VISIBLE_DEVICES of the pusher process; empty: inherited
  double reference_gbps = 0;    // the plain copy's figure when it cannot be measured here
  std::string push_to;  // internal: run as the pusher, pushing to this address
};

// A model with Llama-3.1-8B's KV geometry and small everything else (the weights are never used).
model::ModelConfig stub_config(const Options& o) {
  model::ModelConfig c = model::preset_config("llama-3.1-8b");
  c.num_layers = o.layers;
  c.num_kv_heads = o.kv_heads;
  c.num_heads = o.kv_heads;
  c.head_dim = o.head_dim;
  c.hidden_size = o.kv_heads * o.head_dim;
  c.intermediate_size = 256;
  c.vocab_size = 512;
  c.eos_token_ids = {0};
  c.bos_token_id = 1;
  return c;
}

std::unique_ptr<backend::Backend> make_backend(const Options& o, const std::string& device, int num_blocks) {
  model::RandomWeights weights(stub_config(o), 0, "stub with Llama-3.1-8B KV geometry");
  backend::BackendOptions options;
  options.device = device;
  options.block_size = o.block_size;
  options.num_kv_blocks = num_blocks;
  options.cuda_graphs = false;
  return backend::create_backend(weights, options);
}

int device_index(const std::string& device) { return device == "cuda" ? 0 : std::stoi(device.substr(device.find(':') + 1)); }

// The byte pattern of (layer, source block): what the receiver checks.
std::vector<std::byte> pattern(int layer, int block, size_t bytes) {
  std::vector<std::byte> out(bytes);
  uint32_t x = static_cast<uint32_t>(layer * 7919 + block * 104729 + 1);
  for (auto& b : out) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<std::byte>(x >> 24);
  }
  return out;
}

std::vector<int32_t> destinations(int num_blocks, int pool_blocks) {
  std::vector<int32_t> ids(pool_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(42));
  ids.resize(num_blocks);
  return ids;
}

// The prefill side: fill, push, time; one JSON line on stdout.
int run_pusher(const Options& o) {
  const int num_blocks = (o.tokens + o.block_size - 1) / o.block_size;
  auto be = make_backend(o, o.device, num_blocks);
  const auto& spec = be->kv_cache_spec();
  for (int layer = 0; layer < spec.num_layers; ++layer) {
    for (int b = 0; b < num_blocks; ++b) {
      Status s = be->write_kv_block(layer, b, pattern(layer, b, spec.block_bytes()));
      if (!s.ok()) throw Error(s.to_string());
    }
  }
  auto memory = worker::backend_kv_memory(*be);
  auto tx = transfer::create_transfer_backend(o.kind, memory, "127.0.0.1", 0);
  const std::vector<int32_t> dst = destinations(num_blocks, 2 * num_blocks);
  std::vector<transfer::BlockCopy> copies;  // layer-major, as Worker::run_push builds them
  for (int layer = 0; layer < spec.num_layers; ++layer) {
    for (int b = 0; b < num_blocks; ++b) copies.push_back({layer, b, dst[b]});
  }
  std::vector<double> seconds;
  std::string transport;
  int64_t bytes = 0;
  for (int i = -1; i < o.iters; ++i) {  // i = -1: warm-up (opens the handles)
    auto stats = tx->push(o.push_to, "bench-" + std::to_string(i + 1), copies, 60000);
    if (!stats.ok()) throw Error("push failed: " + stats.status().to_string());
    if (i >= 0) seconds.push_back(stats->seconds);
    transport = stats->transport;
    bytes = stats->num_bytes;
  }
  std::sort(seconds.begin(), seconds.end());
  // The device copy alone (block ids to the device, one launch, synchronize), without the claim and
  // release over TCP: what the push adds on top of it is the handshake.
  const std::string handles = transfer::parse_peer_address(o.push_to).device_handles;
  double copy_only = 1e9;
  for (int i = 0; i < o.iters && o.kind == "cuda_ipc"; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    Status s = memory->copy_to_peer(handles, copies);
    if (!s.ok()) throw Error("device copy failed: " + s.to_string());
    copy_only = std::min(copy_only, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  const double copy_gbps = o.pusher_visible.empty() ? backend::cuda::measure_device_copy_gbps(device_index(o.device), device_index(o.peer_device),
                                                                                              static_cast<size_t>(bytes), o.iters)
                                                   : o.reference_gbps;
  std::printf("{\"transport\":\"%s\",\"bytes\":%lld,\"num_blocks\":%zu,\"best_s\":%.9f,\"median_s\":%.9f,\"copy_only_s\":%.9f,"
              "\"copy_gbps\":%.3f}\n",
              transport.c_str(), static_cast<long long>(bytes), copies.size(), seconds.front(), seconds[seconds.size() / 2],
              copy_only, copy_gbps);
  std::fflush(stdout);
  return 0;
}

int run_receiver(const Options& o) {
  const int num_blocks = (o.tokens + o.block_size - 1) / o.block_size;
  auto be = make_backend(o, o.peer_device, 2 * num_blocks);
  const auto& spec = be->kv_cache_spec();
  auto memory = worker::backend_kv_memory(*be);
  auto tx = transfer::create_transfer_backend(o.kind, memory, "127.0.0.1", 0);
  const std::vector<int32_t> dst = destinations(num_blocks, 2 * num_blocks);
  for (int i = 0; i <= o.iters; ++i) tx->expect("bench-" + std::to_string(i), dst);

  int out_pipe[2];
  if (pipe(out_pipe) != 0) throw Error("pipe failed");
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out_pipe[1], STDOUT_FILENO);
    close(out_pipe[0]);
    close(out_pipe[1]);
    if (!o.pusher_visible.empty()) setenv("CUDA_VISIBLE_DEVICES", o.pusher_visible.c_str(), 1);
    std::string self = "/proc/self/exe";
    std::vector<std::string> args = {self, "--device", o.device, "--peer-device", o.peer_device, "--tokens",
                                     std::to_string(o.tokens), "--layers", std::to_string(o.layers), "--kv-heads",
                                     std::to_string(o.kv_heads), "--head-dim", std::to_string(o.head_dim), "--block-size",
                                     std::to_string(o.block_size), "--iters", std::to_string(o.iters), "--push-to", tx->address(),
                                     "--kv-transfer", o.kind, "--reference-gbps", std::to_string(o.reference_gbps)};
    if (!o.pusher_visible.empty()) args.insert(args.end(), {"--pusher-visible-devices", o.pusher_visible});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(self.c_str(), argv.data());
    _exit(127);
  }
  close(out_pipe[1]);
  std::string line;
  char buffer[4096];
  ssize_t n;
  while ((n = read(out_pipe[0], buffer, sizeof(buffer))) > 0) line.append(buffer, static_cast<size_t>(n));
  close(out_pipe[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || line.find("\"transport\"") == std::string::npos) {
    std::fprintf(stderr, "kv_transfer_bench: the pusher failed (status %d): %s\n", status, line.c_str());
    return 1;
  }
  // Check a sample of landed blocks (every layer's first, middle and last block).
  std::vector<std::byte> got(spec.block_bytes());
  int bad = 0;
  for (int layer = 0; layer < spec.num_layers; ++layer) {
    for (int b : {0, num_blocks / 2, num_blocks - 1}) {
      if (!be->read_kv_block(layer, dst[b], got).ok() || got != pattern(layer, b, spec.block_bytes())) ++bad;
    }
  }
  auto field = [&](const std::string& key) {
    size_t p = line.find("\"" + key + "\":");
    return p == std::string::npos ? 0.0 : std::atof(line.c_str() + p + key.size() + 3);
  };
  size_t tp = line.find("\"transport\":\"") + 13;
  const std::string transport = line.substr(tp, line.find('"', tp) - tp);
  const double bytes = field("bytes"), best = field("best_s"), median = field("median_s"), copy_gbps = field("copy_gbps");
  const double copy_only = field("copy_only_s");
  const double gbps = bytes / best / 1e9, median_gbps = bytes / median / 1e9;
  const bool same = o.device == o.peer_device && o.pusher_visible.empty();
  const std::string reference = !o.pusher_visible.empty() ? "cudaMemcpyPeer (--reference-gbps)"
                                : same                     ? "cudaMemcpy device-to-device"
                                                           : "cudaMemcpyPeer";
  std::printf("KV transfer %s -> %s: %.1f MiB = %d layers x %d blocks of %zu bytes, %d pushes after a warm-up\n",
              o.device.c_str(), o.peer_device.c_str(), bytes / (1 << 20), spec.num_layers, num_blocks, spec.block_bytes(), o.iters);
  std::printf("  transfer layer (%s push: claim, batched copy, release): best %.3f ms = %.1f GB/s, median %.3f ms = %.1f GB/s\n",
              transport.c_str(), best * 1e3, gbps, median * 1e3, median_gbps);
  std::printf("  device copy alone (ids to the device, one launch, synchronize; no claim/release): %.3f ms = %.1f GB/s\n",
              copy_only * 1e3, bytes / copy_only / 1e9);
  std::printf("  %s of the same bytes: %.1f GB/s\n", reference.c_str(), copy_gbps);
  std::printf("  ratio: %.1f%% (bar >= 70%%)  blocks checked: %d bad of %d\n", 100.0 * gbps / copy_gbps, bad, 3 * spec.num_layers);
  if (!o.output_json.empty()) {
    std::ofstream out(o.output_json);
    out << "{\"benchmark\":\"kv_transfer\",\"device\":\"" << o.device << "\",\"peer_device\":\"" << o.peer_device
        << "\",\"transport\":\"" << transport << "\",\"bytes\":" << static_cast<long long>(bytes) << ",\"tokens\":" << o.tokens
        << ",\"layers\":" << spec.num_layers << ",\"blocks\":" << num_blocks << ",\"block_bytes\":" << spec.block_bytes()
        << ",\"best_ms\":" << best * 1e3 << ",\"median_ms\":" << median * 1e3 << ",\"gbps\":" << gbps
        << ",\"median_gbps\":" << median_gbps << ",\"copy_only_ms\":" << copy_only * 1e3
        << ",\"copy_only_gbps\":" << bytes / copy_only / 1e9 << ",\"reference\":\"" << reference << "\",\"reference_gbps\":" << copy_gbps
        << ",\"ratio\":" << gbps / copy_gbps << ",\"bar\":0.7,\"bad_blocks\":" << bad << "}\n";
  }
  return bad == 0 && transport == o.kind ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app("KV transfer between two processes vs a plain device copy of the same bytes");
  app.add_option("--device", o.device, "Pusher (prefill side) device")->capture_default_str();
  app.add_option("--peer-device", o.peer_device, "Receiver (decode side) device")->capture_default_str();
  app.add_option("--tokens", o.tokens, "Prompt tokens")->capture_default_str();
  app.add_option("--layers", o.layers, "Layers")->capture_default_str();
  app.add_option("--kv-heads", o.kv_heads, "KV heads")->capture_default_str();
  app.add_option("--head-dim", o.head_dim, "Head dimension")->capture_default_str();
  app.add_option("--block-size", o.block_size, "Tokens per block")->capture_default_str();
  app.add_option("--iters", o.iters, "Timed pushes")->capture_default_str();
  app.add_option("--output-json", o.output_json, "Write the figures here");
  app.add_option("--kv-transfer", o.kind, "Transfer backend: cuda_ipc, nccl or tcp")->capture_default_str();
  app.add_option("--pusher-visible-devices", o.pusher_visible, "CUDA_VISIBLE_DEVICES of the pusher process");
  app.add_option("--reference-gbps", o.reference_gbps, "The plain copy's GB/s when the pusher cannot measure it");
  app.add_option("--push-to", o.push_to, "(internal) run as the pusher");
  CLI11_PARSE(app, argc, argv);
  init_logging("warn");  // to stderr: the pusher's stdout carries its result line
  try {
    return o.push_to.empty() ? run_receiver(o) : run_pusher(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kv_transfer_bench: %s\n", e.what());
    return 1;
  }
}
