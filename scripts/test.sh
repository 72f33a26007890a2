#!/usr/bin/env bash
# The test command: sets up (idempotent), builds, runs every CPU test through ctest.
# GPU-only tests are labelled `gpu` and skipped here; tools/gpu_check.sh runs them on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" -LE gpu "$@"
