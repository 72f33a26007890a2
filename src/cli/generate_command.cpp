// `tandem generate`: offline generation in one process through the engine (continuous batching), for
// debugging and quick checks. Prompts are token ids, or text (--prompt, --chat through the model's chat
// template, or a prompts file with --prompts-format text|chat) through the model's tokenizer.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "cli/model_files.h"
#include "common/error.h"
#include "engine/engine.h"
#include "model/weight_source.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace tandem::cli {
namespace {

struct GenerateOptions {
  std::string model;
  std::string prompt_ids;
  std::string prompts_file;
  std::string prompt_text;
  std::string chat_text;
  std::string prompts_format = "ids";
  std::string tokenizer_dir;
  int max_tokens = 16;
  uint64_t weights_seed = 0;
  float temperature = 0.0f;
  float top_p = 1.0f;
  int top_k = 0;
  float min_p = 0.0f;
  uint64_t sampling_seed = 0;
  bool has_sampling_seed = false;
  bool ignore_eos = false;
  EngineFlags engine_flags;
};

std::vector<int32_t> parse_ids(const std::string& text, const std::string& where) {
  std::vector<int32_t> ids;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const size_t first = item.find_first_not_of(" \t\r");
    const size_t last = item.find_last_not_of(" \t\r");
    item = first == std::string::npos ? "" : item.substr(first, last - first + 1);
    try {
      size_t used = 0;
      long value = std::stol(item, &used);
      if (used != item.size() || value < 0 || value > INT32_MAX) throw std::invalid_argument(item);
      ids.push_back(static_cast<int32_t>(value));
    } catch (const std::exception&) {
      throw Error(where + ": '" + item + "' is not a token id (expected e.g. 1,2,3)");
    }
  }
  if (ids.empty()) throw Error(where + ": no token ids given");
  return ids;
}

// One prompt per line, comma-separated token ids; blank lines and lines starting with '#' are skipped.
std::vector<std::vector<int32_t>> read_prompts_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("--prompts-file: cannot open '" + path + "'");
  std::vector<std::vector<int32_t>> prompts;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos || line[line.find_first_not_of(" \t\r")] == '#') continue;
    prompts.push_back(parse_ids(line, path + ":" + std::to_string(line_no)));
  }
  if (prompts.empty()) throw Error("--prompts-file: '" + path + "' holds no prompts");
  return prompts;
}

// Non-empty lines of a text prompts file.
std::vector<std::string> read_text_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("--prompts-file: cannot open '" + path + "'");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  if (lines.empty()) throw Error("--prompts-file: '" + path + "' holds no prompts");
  return lines;
}

}  // namespace

Runner add_generate_command(CLI::App& app) {
  auto opts = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate from token-id prompts, offline (one process, the engine)");
  cmd->add_option("--model", opts->model, "Hugging Face model directory or random:<preset>")->required();
  auto* ids = cmd->add_option("--prompt-ids", opts->prompt_ids, "One prompt as comma-separated token ids, e.g. 1,2,3");
  auto* file = cmd->add_option("--prompts-file", opts->prompts_file, "File with one prompt per line (comma-separated token ids)");
  auto* text = cmd->add_option("--prompt", opts->prompt_text, "One prompt as text (through the tokenizer)");
  auto* chat = cmd->add_option("--chat", opts->chat_text, "One user message, rendered with the model's chat template");
  for (CLI::Option* a : {ids, file, text, chat}) {
    for (CLI::Option* b : {ids, file, text, chat}) if (a != b) a->excludes(b);
  }
  cmd->add_option("--prompts-format", opts->prompts_format, "Lines of --prompts-file: ids (comma-separated token ids), text, or chat (user messages)")
      ->capture_default_str()->check(CLI::IsMember({"ids", "text", "chat"}));
  cmd->add_option("--tokenizer", opts->tokenizer_dir, "Directory with tokenizer.json (default: the model's, or the real one of a random preset's vocabulary)");
  cmd->add_option("--max-tokens", opts->max_tokens, "Tokens to generate per prompt")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--seed", opts->weights_seed, "Seed of random:<preset> weights")->capture_default_str();
  cmd->add_option("--temperature", opts->temperature, "Sampling temperature (0 = greedy)")->capture_default_str()->check(CLI::Range(0.0f, 100.0f));
  cmd->add_option("--top-p", opts->top_p, "Nucleus sampling mass, (0, 1]")->capture_default_str();
  cmd->add_option("--top-k", opts->top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
  cmd->add_option("--min-p", opts->min_p, "Keep tokens with p >= min_p * p_max")->capture_default_str();
  auto* sseed = cmd->add_option("--sampling-seed", opts->sampling_seed, "Seed of the token sampling (default: random)");
  cmd->add_flag("--ignore-eos", opts->ignore_eos, "Keep generating after EOS");
  add_engine_flags(cmd, &opts->engine_flags, kGenerateRules);
  return [opts, sseed]() {
    opts->has_sampling_seed = sseed->count() > 0;
    auto weights = model::open_weight_source(opts->model, opts->weights_seed);
    const int vocab = weights->config().vocab_size;
    // Text in means text out: a tokenizer encodes the prompts and the engine streams text deltas.
    const bool text_mode = !opts->prompt_text.empty() || !opts->chat_text.empty() ||
                           (!opts->prompts_file.empty() && opts->prompts_format != "ids");
    std::shared_ptr<const tokenizer::Tokenizer> tok;
    std::unique_ptr<tokenizer::ChatTemplate> chat_template;
    if (text_mode) {
      tok = tokenizer::Tokenizer::load(find_tokenizer_dir(opts->model, opts->tokenizer_dir, vocab));
      if (!opts->chat_text.empty() || opts->prompts_format == "chat") {
        if (tok->chat_template().empty()) throw Error("--chat: the tokenizer has no chat_template");
        chat_template = std::make_unique<tokenizer::ChatTemplate>(tok->chat_template());
      }
    }
    auto encode_text = [&](const std::string& text) { return tok->encode(text, /*add_special_tokens=*/true); };
    auto encode_chat = [&](const std::string& message) {
      tokenizer::ChatInputs inputs;
      inputs.messages = nlohmann::ordered_json::array({{{"role", "user"}, {"content", message}}});
      inputs.add_generation_prompt = true;
      inputs.bos_token = tok->bos_token();
      inputs.eos_token = tok->eos_token();
      auto rendered = chat_template->render(inputs);
      throw_if_error(rendered.status());
      // The template writes the special tokens itself.
      return tok->encode(*rendered, /*add_special_tokens=*/false);
    };
    std::vector<std::vector<int32_t>> prompts;
    if (!opts->prompts_file.empty() && opts->prompts_format == "ids") {
      prompts = read_prompts_file(opts->prompts_file);
    } else if (!opts->prompts_file.empty()) {
      for (const std::string& line : read_text_lines(opts->prompts_file)) {
        prompts.push_back(opts->prompts_format == "chat" ? encode_chat(line) : encode_text(line));
      }
    } else if (!opts->prompt_ids.empty()) {
      prompts.push_back(parse_ids(opts->prompt_ids, "--prompt-ids"));
    } else if (!opts->prompt_text.empty()) {
      prompts.push_back(encode_text(opts->prompt_text));
    } else if (!opts->chat_text.empty()) {
      prompts.push_back(encode_chat(opts->chat_text));
    } else {
      throw Error("give --prompt-ids, --prompt, --chat or --prompts-file");
    }
    for (const auto& prompt : prompts) {
      for (int32_t id : prompt) {
        if (id >= vocab) throw Error("token id " + std::to_string(id) + " is outside the vocabulary (size " + std::to_string(vocab) + ")");
      }
    }
    backend::BackendOptions backend_options = opts->engine_flags.backend_options();
    const int block_size = backend_options.block_size;
    int blocks = opts->engine_flags.num_kv_blocks;
    if (blocks <= 0) {
      for (const auto& prompt : prompts) blocks += (static_cast<int>(prompt.size()) + opts->max_tokens + block_size - 1) / block_size;
    }
    backend_options.num_kv_blocks = blocks;
    auto engine = engine::create_engine(backend::create_backend(*weights, backend_options), opts->engine_flags.engine_options(),
                                        tok ? std::make_shared<DetokenizerStreams>(tok) : nullptr);

    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::vector<int32_t>> outputs(prompts.size());
    std::vector<std::string> texts(prompts.size());
    std::vector<std::string> errors(prompts.size());
    size_t num_finished = 0;
    const auto start = std::chrono::steady_clock::now();
    for (size_t i = 0; i < prompts.size(); ++i) {
      engine::Request request;
      request.request_id = std::to_string(i);
      request.prompt_token_ids = prompts[i];
      engine::SamplingParams& s = request.sampling;
      s.max_tokens = opts->max_tokens;
      s.temperature = opts->temperature;
      s.top_p = opts->top_p;
      s.top_k = opts->top_k;
      s.min_p = opts->min_p;
      s.ignore_eos = opts->ignore_eos;
      if (opts->has_sampling_seed) s.seed = opts->sampling_seed + i;
      Status status = engine->submit(std::move(request), [&, i](engine::RequestOutput out) {
        std::lock_guard<std::mutex> lock(mu);
        outputs[i].insert(outputs[i].end(), out.token_ids.begin(), out.token_ids.end());
        texts[i] += out.text;
        if (out.finished) {
          if (out.finish_reason == engine::FinishReason::kError) errors[i] = out.error.to_string();
          ++num_finished;
          cv.notify_all();
        }
      });
      if (!status.ok()) throw Error("prompt " + std::to_string(i) + ": " + status.to_string());
    }
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return num_finished == prompts.size(); });
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    size_t num_tokens = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (!errors[i].empty()) throw Error("prompt " + std::to_string(i) + ": " + errors[i]);
      if (text_mode) {
        // One block per prompt; a blank line between prompts keeps multi-line texts apart.
        std::printf("%s%s\n", i ? "\n" : "", texts[i].c_str());
      } else {
        std::string line;
        for (size_t t = 0; t < outputs[i].size(); ++t) line += (t ? "," : "") + std::to_string(outputs[i][t]);
        std::printf("%s\n", line.c_str());
      }
      num_tokens += outputs[i].size();
    }
    const engine::EngineStats stats = engine->stats();
    std::fprintf(stderr, "generated %zu tokens for %zu prompts in %.3f s (%.1f tok/s); prefix cache hits %lld/%lld tokens; preemptions %lld\n",
                 num_tokens, prompts.size(), seconds, num_tokens / seconds, static_cast<long long>(stats.prefix_cache_hits),
                 static_cast<long long>(stats.prefix_cache_queries), static_cast<long long>(stats.num_preemptions));
    return 0;
  };
}

}  // namespace tandem::cli
