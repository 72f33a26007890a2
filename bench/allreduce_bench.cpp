// allreduce_bench: the tensor-parallel all-reduce at decode sizes (issue 19's table: 8 KB - 1 MB, one
// decode step of batch 1 to 64 on Llama's hidden sizes), NCCL over the GPUs of one process exactly as
// the CUDA tensor-parallel backend calls it: bf16, in place, stream-ordered, captured in a CUDA graph of
// --per-graph calls (as a decode step holds two per layer), replayed; one thread per rank.
//
//   build/bench/allreduce_bench --devices 0,1 [--sizes 8192,32768,...] [--per-graph 160] [--replays 20]
//
// Prints one JSON object: per size (bytes) the microseconds of one all-reduce (best replay / per-graph)
// and the algorithm bandwidth (bytes / time). A one-shot all-reduce of our own over peer-mapped buffers,
// to keep the faster per size, is not written yet (docs/parallelism.md).
#include <CLI/CLI.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "backend/cuda/nccl_communicator.h"
#include "common/error.h"

using namespace tandem;

namespace {

std::vector<int> parse_list(const std::string& text) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoi(item));
  return out;
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw Error(std::string(what) + ": " + cudaGetErrorString(err));
}

}  // namespace

int main(int argc, char** argv) {
  std::string devices_text = "0,1", sizes_text = "8192,16384,32768,65536,131072,262144,524288,1048576";
  int per_graph = 160, replays = 20;
  CLI::App app("NCCL all-reduce at decode sizes, captured in CUDA graphs");
  app.add_option("--devices", devices_text, "GPUs, one rank each")->capture_default_str();
  app.add_option("--sizes", sizes_text, "Message sizes in bytes (bf16)")->capture_default_str();
  app.add_option("--per-graph", per_graph, "All-reduces per captured graph")->capture_default_str();
  app.add_option("--replays", replays, "Timed replays per size")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    const std::vector<int> devices = parse_list(devices_text), sizes = parse_list(sizes_text);
    auto comms = backend::cuda::make_nccl_communicators(devices);
    if (!comms.ok()) throw Error(comms.status().to_string());
    const int world = static_cast<int>(devices.size());
    const size_t largest = static_cast<size_t>(*std::max_element(sizes.begin(), sizes.end()));
    std::vector<double> best_us(sizes.size(), 1e30);
    std::vector<std::string> errors(world);
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r) {
      threads.emplace_back([&, r] {
        try {
          check(cudaSetDevice(devices[r]), "cudaSetDevice");
          void* buffer = nullptr;
          cudaStream_t stream = nullptr;
          check(cudaMalloc(&buffer, largest), "cudaMalloc");
          check(cudaMemset(buffer, 0, largest), "cudaMemset");
          check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
          for (size_t s = 0; s < sizes.size(); ++s) {
            const size_t count = static_cast<size_t>(sizes[s]) / 2;
            cudaGraph_t graph = nullptr;
            cudaGraphExec_t exec = nullptr;
            check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
            Status issued;
            for (int i = 0; i < per_graph && issued.ok(); ++i) {
              issued = (*comms)[r]->all_reduce_sum(buffer, count, backend::cuda::NcclType::kBFloat16, stream);
            }
            check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
            if (!issued.ok()) throw Error(issued.to_string());
            check(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
            check(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");  // warm-up
            check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
            for (int k = 0; k < replays; ++k) {
              const auto t0 = std::chrono::steady_clock::now();
              check(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
              check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
              const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / per_graph;
              if (r == 0) best_us[s] = std::min(best_us[s], us);
            }
            cudaGraphExecDestroy(exec);
            cudaGraphDestroy(graph);
          }
          cudaStreamDestroy(stream);
          cudaFree(buffer);
        } catch (const std::exception& e) {
          errors[r] = e.what();
          (*comms)[r]->abort(Status::Internal(e.what()));
        }
      });
    }
    for (auto& t : threads) t.join();
    backend::cuda::destroy_nccl_communicators(*comms);
    for (const auto& e : errors) {
      if (!e.empty()) throw Error(e);
    }
    std::printf("{\"benchmark\":\"allreduce\",\"nccl\":\"%s\",\"world\":%d,\"per_graph\":%d,\"results\":[",
                backend::cuda::nccl_version().c_str(), world, per_graph);
    for (size_t s = 0; s < sizes.size(); ++s) {
      std::printf("%s{\"bytes\":%d,\"us\":%.2f,\"algbw_gbps\":%.2f}", s ? "," : "", sizes[s], best_us[s], sizes[s] / best_us[s] / 1e3);
    }
    std::printf("]}\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "allreduce_bench: %s\n", e.what());
    return 1;
  }
}
