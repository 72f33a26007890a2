// `tandem tokenize`: prints the token ids of a text with a model directory's tokenizer.json, for
// checking the tokenizer against Hugging Face by hand.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "tokenizer/tokenizer.h"

namespace tandem::cli {
namespace {

struct TokenizeOptions {
  std::string model;
  std::string text;
  bool no_special_tokens = false;
};

}  // namespace

Runner add_tokenize_command(CLI::App& app) {
  auto opts = std::make_shared<TokenizeOptions>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text (comma-separated)");
  cmd->add_option("--model", opts->model, "Directory holding tokenizer.json (and tokenizer_config.json)")->required();
  cmd->add_option("text", opts->text, "The text to encode")->required();
  cmd->add_flag("--no-special-tokens", opts->no_special_tokens,
                "Do not add the post-processor's special tokens (Llama-3.1's <|begin_of_text|>)");
  return [opts]() {
    const auto tok = tokenizer::Tokenizer::load(opts->model);
    const auto ids = tok->encode(opts->text, !opts->no_special_tokens);
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? "," : "") + std::to_string(ids[i]);
    std::printf("%s\n", line.c_str());
    return 0;
  };
}

}  // namespace tandem::cli
