#!/bin/bash
# Ran at commit 36bce9d, when gpu_experiments.sh still had the GEMV prefetch A/B (since removed).
# The H200 runs of the second 2026-11-28 session, in one `run` call from the repository root with the
# bundle of tools/gpu/prepare_device_bundle.sh in .device/cuda (carry=[".device/cuda"]):
#   1. bench   tools/gpu/gpu_bench.sh: every figure of issue 9 on this GPU (the bars are H200 figures)
#   2. exp     tools/gpu/gpu_experiments.sh: kernel tests (with the GEMV bulk-prefetch variant), the
#              TANDEM_GEMV_PREFETCH A/B at batch 1, the step timing and the graphed cuBLAS bench
# Everything lands in DIR/results.tar.gz (the device tool brings back few files).
#   bench/results/2026-11-28-h200/gpu_session_2026_11_28b.sh DIR
set -u
out=${1:?usage: gpu_session_2026_11_28b.sh DIR}
work=$(mktemp -d)
STEP_TIMEOUT=120 timeout 260 tools/gpu/gpu_bench.sh "$work/bench" .device/cuda 2>&1 | tee "$work/bench_console.log"
STEP_TIMEOUT=120 timeout 280 tools/gpu/gpu_experiments.sh "$work/exp" .device/cuda 2>&1 | tee "$work/exp_console.log"
tar -C "$work" -czf "$out/results.tar.gz" .
