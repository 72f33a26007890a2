// sampler_bench: host time of Sampler::sample() for one row of a real-size vocabulary (Qwen3: 151,936)
// under common settings. No model math; logits are a fixed pseudo-random row with a realistic spread.
//
//   build/bench/sampler_bench [--vocab N] [--iters N]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "engine/sampler.h"

using namespace tandem::engine;

int main(int argc, char** argv) {
  int vocab = 151936, iters = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--vocab")) vocab = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[i + 1]);
  }
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(vocab);
  for (float& x : logits) x = normal(rng);
  std::vector<int32_t> prompt(1000), output(200);
  for (auto& t : prompt) t = static_cast<int32_t>(rng() % vocab);
  for (auto& t : output) t = static_cast<int32_t>(rng() % vocab);

  struct Case {
    const char* name;
    SamplingParams p;
  };
  std::vector<Case> cases(7);
  cases[0].name = "greedy";
  cases[0].p.temperature = 0;
  cases[1].name = "temperature=0.8";
  cases[1].p.temperature = 0.8f;
  cases[2].name = "top_k=50";
  cases[2].p.top_k = 50;
  cases[3].name = "top_p=0.9";
  cases[3].p.top_p = 0.9f;
  cases[4].name = "min_p=0.05";
  cases[4].p.min_p = 0.05f;
  cases[5].name = "penalties+top_p=0.9";
  cases[5].p.top_p = 0.9f;
  cases[5].p.repetition_penalty = 1.1f;
  cases[5].p.frequency_penalty = 0.5f;
  cases[5].p.presence_penalty = 0.5f;
  cases[6].name = "greedy+logprobs=5";
  cases[6].p.temperature = 0;
  cases[6].p.logprobs = 5;
  Sampler sampler(vocab, {});
  for (const Case& c : cases) {
    SampleInput in;
    in.params = &c.p;
    in.prompt_token_ids = prompt;
    in.output_token_ids = output;
    std::vector<double> us;
    TokenLogprobs lp;
    for (int i = 0; i < iters; ++i) {
      in.seed = i;
      const auto t0 = std::chrono::steady_clock::now();
      sampler.sample(logits, in, &lp);
      us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(us.begin(), us.end());
    std::printf("%-22s vocab=%d median_us=%.1f\n", c.name, vocab, us[us.size() / 2]);
  }
  return 0;
}
