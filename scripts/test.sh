#!/usr/bin/env bash
# The test command: sets up (idempotent), builds, runs every CPU test through ctest, then the same
# suite again under AddressSanitizer + UBSan in build-asan/ (skip with TANDEM_SKIP_ASAN=1), then every
# libFuzzer target of tests/fuzz for FUZZ_SECONDS (25) each, built with clang in build-fuzz/ (skip with
# TANDEM_SKIP_FUZZ=1; tools/fuzz.sh runs one longer).
# GPU-only tests carry the ctest label `gpu` and are skipped here; tools/gpu/gpu_check.sh runs them on a
# GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" -LE gpu "$@"
if [ "${TANDEM_SKIP_ASAN:-0}" != 1 ]; then
  echo "test: AddressSanitizer/UBSan build in build-asan/"
  SKIP_DATA=1 BUILD_DIR=build-asan BUILD_TYPE=Debug CMAKE_ARGS="-DTANDEM_CUDA=OFF -DTANDEM_SANITIZE=ON" scripts/setup.sh
  ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j "$(nproc)" -LE gpu "$@"
fi
if [ "${TANDEM_SKIP_FUZZ:-0}" != 1 ]; then
  echo "test: fuzz targets (libFuzzer, ASan/UBSan) in build-fuzz/"
  # A fixed seed: the pass repeats itself run to run; tools/fuzz.sh alone explores with fresh seeds.
  FUZZ_SEED=${FUZZ_SEED:-1} tools/fuzz.sh all "${FUZZ_SECONDS:-25}"
fi
