#!/bin/bash
# The folder tools/study/disagg_study.sh needs on the lent GPU machine (carry=[".device/study"]): the tandem
# binary (stripped), the non-system shared libraries it needs, and the tokenizers of the random presets
# (the benchmark builds token-exact prompts with them). About 40 MB; with --with-gpu-tests also the GPU
# test binaries (kernels, backend, serving), so one two-GPU call can check and measure (~55 MB; keep
# the folder plus the checkout under the 64 MiB a call may carry: TOKENIZERS=llama3_1 saves 10 MB).
#
#   [BUILD_DIR=build] [TOKENIZERS="llama3_1 qwen3"] tools/study/prepare_study_bundle.sh [--with-gpu-tests] [DEST]
#   DEST defaults to .device/study
set -euo pipefail
cd "$(dirname "$0")/../.."
with_tests=0
if [[ "${1:-}" == "--with-gpu-tests" ]]; then with_tests=1; shift; fi
dest=${1:-.device/study}
b=${BUILD_DIR:-build}
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib" "$dest/data/tokenizers"
bins=("$b/tandem")
if (( with_tests )); then
  bins+=("$b/tests/backend/cuda_kernels_test" "$b/tests/backend/cuda_backend_test" "$b/tests/integration/gpu_serving_test")
fi
cp "${bins[@]}" "$dest/bin/"
strip --strip-debug "$dest"/bin/*
tools/gpu/bundle_libs.sh "$dest/lib" "${bins[@]}"
for t in ${TOKENIZERS:-llama3_1 qwen3}; do cp -r "data/tokenizers/$t" "$dest/data/tokenizers/"; done
cp data/npm/node_modules/chart.js/dist/chart.umd.min.js "$dest/data/"
du -sh "$dest"
