#!/bin/bash
# The folder tools/disagg_study.sh needs on the lent GPU machine (carry=[".device/study"]): the tandem
# binary (stripped), the non-system shared libraries it needs, and the tokenizers of the random presets
# (the benchmark builds token-exact prompts with them). About 30 MB.
#
#   [BUILD_DIR=build] tools/prepare_study_bundle.sh [DEST]     DEST defaults to .device/study
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.device/study}
b=${BUILD_DIR:-build}
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib" "$dest/data/tokenizers"
cp "$b/tandem" "$dest/bin/"
strip --strip-debug "$dest/bin/tandem"
tools/bundle_libs.sh "$dest/lib" "$b/tandem"
cp -r data/tokenizers/llama3_1 data/tokenizers/qwen3 "$dest/data/tokenizers/"
cp data/npm/node_modules/chart.js/dist/chart.umd.min.js "$dest/data/"
du -sh "$dest"
