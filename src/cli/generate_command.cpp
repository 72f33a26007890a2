// `tandem generate`: offline generation in one process, for debugging.
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/reference_decode.h"
#include "cli/commands.h"
#include "common/error.h"
#include "model/weight_source.h"

namespace tandem::cli {
namespace {

struct GenerateOptions {
  std::string model;
  std::string prompt_ids;
  int max_tokens = 16;
  uint64_t seed = 0;
  std::string device = "cpu";
  int threads = 0;
};

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      size_t used = 0;
      long value = std::stol(item, &used);
      if (used != item.size() || value < 0 || value > INT32_MAX) throw std::invalid_argument(item);
      ids.push_back(static_cast<int32_t>(value));
    } catch (const std::exception&) {
      throw Error("--prompt-ids: '" + item + "' is not a token id (expected e.g. 1,2,3)");
    }
  }
  if (ids.empty()) throw Error("--prompt-ids: no token ids given");
  return ids;
}

}  // namespace

Runner add_generate_command(CLI::App& app) {
  auto opts = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate greedily from a prompt, offline (one process)");
  cmd->add_option("--model", opts->model, "Hugging Face model directory or random:<preset>")->required();
  cmd->add_option("--prompt-ids", opts->prompt_ids, "Prompt as comma-separated token ids, e.g. 1,2,3")->required();
  cmd->add_option("--max-tokens", opts->max_tokens, "Tokens to generate")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--seed", opts->seed, "Seed of random:<preset> weights")->capture_default_str();
  cmd->add_option("--device", opts->device, "cpu or cuda:N")->capture_default_str();
  cmd->add_option("--threads", opts->threads, "CPU threads (0 = all cores)")->capture_default_str();
  return [opts]() {
    std::vector<int32_t> prompt = parse_ids(opts->prompt_ids);
    auto weights = model::open_weight_source(opts->model, opts->seed);
    const int vocab = weights->config().vocab_size;
    for (int32_t id : prompt) {
      if (id >= vocab) throw Error("--prompt-ids: token id " + std::to_string(id) + " is outside the vocabulary (size " + std::to_string(vocab) + ")");
    }
    backend::BackendOptions backend_options;
    backend_options.device = opts->device;
    backend_options.num_threads = opts->threads;
    const int block_size = backend_options.block_size;
    backend_options.num_kv_blocks = (static_cast<int>(prompt.size()) + opts->max_tokens + block_size - 1) / block_size;
    auto backend = backend::create_backend(*weights, backend_options);
    auto result = backend::reference_greedy_decode(*backend, prompt, opts->max_tokens);
    throw_if_error(result.status());
    std::string line;
    for (size_t i = 0; i < result->tokens.size(); ++i) line += (i ? "," : "") + std::to_string(result->tokens[i]);
    std::printf("%s\n", line.c_str());
    return 0;
  };
}

}  // namespace tandem::cli
