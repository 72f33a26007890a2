// Single-thread encode throughput of the tokenizer on a ~1 MB mixed-language text (DESIGN.md §6:
// a benchmark, not a test). The text is built deterministically from the test corpus
// (tests/data/tokenizer/corpus.json): its strings in a fixed pseudo-random order, joined by
// newlines, until 1 MiB. Prints load time, cold-cache and warm encode MB/s (wall and thread CPU
// time), and tokens/s.
//
//   build/bench/tokenizer_bench [--model DIR] [--corpus corpus.json] [--write-text PATH] [--reps N]
#include <nlohmann/json.hpp>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// This thread's CPU time: on a shared machine (other builds running) wall time overstates the cost.
double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

std::string build_text(const std::string& corpus_path, size_t target_bytes) {
  std::ifstream in(corpus_path);
  if (!in) {
    std::fprintf(stderr, "cannot open %s\n", corpus_path.c_str());
    std::exit(1);
  }
  const auto corpus = nlohmann::json::parse(in).get<std::vector<std::string>>();
  std::string text;
  uint64_t state = 0x9E3779B97F4A7C15ULL;  // xorshift64: the same order on every machine
  while (text.size() < target_bytes) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    text += corpus[state % corpus.size()];
    text += '\n';
  }
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model = std::string(TANDEM_DATA_DIR) + "/tokenizers/qwen3";
  std::string corpus = std::string(TANDEM_TEST_DATA_DIR) + "/tokenizer/corpus.json";
  std::string write_text;
  int reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--model") model = argv[i + 1];
    else if (flag == "--corpus") corpus = argv[i + 1];
    else if (flag == "--write-text") write_text = argv[i + 1];
    else if (flag == "--reps") reps = std::stoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  const std::string text = build_text(corpus, 1 << 20);
  if (!write_text.empty()) std::ofstream(write_text, std::ios::binary) << text;
  const double mb = static_cast<double>(text.size()) / 1e6;

  auto t0 = Clock::now();
  const auto tok = tandem::tokenizer::Tokenizer::load(model);
  const double load_s = seconds_since(t0);

  t0 = Clock::now();
  const size_t num_tokens = tok->encode(text, false).size();
  const double cold_s = seconds_since(t0);

  std::vector<double> warm, warm_cpu;
  for (int r = 0; r < reps; ++r) {
    t0 = Clock::now();
    const double c0 = thread_cpu_seconds();
    const size_t n = tok->encode(text, false).size();
    warm_cpu.push_back(thread_cpu_seconds() - c0);
    warm.push_back(seconds_since(t0));
    if (n != num_tokens) return 3;
  }
  std::sort(warm.begin(), warm.end());
  std::sort(warm_cpu.begin(), warm_cpu.end());
  const double median = warm[warm.size() / 2];
  std::printf("model=%s text_bytes=%zu tokens=%zu load_s=%.3f\n", model.c_str(), text.size(), num_tokens, load_s);
  std::printf("encode cold_cache: %.2f MB/s (%.3f s)\n", mb / cold_s, cold_s);
  std::printf("encode warm_cache: median %.2f MB/s, best %.2f MB/s, %.0f tokens/s (%d reps)\n", mb / median,
              mb / warm.front(), static_cast<double>(num_tokens) / median, reps);
  std::printf("encode warm_cache by thread CPU time: median %.2f MB/s, best %.2f MB/s\n", mb / warm_cpu[warm_cpu.size() / 2],
              mb / warm_cpu.front());
  return 0;
}
