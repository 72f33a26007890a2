#!/bin/bash
# Issue 17's GPU check on one H200: the refactor must change no figure. Two bundles travel packed:
# .device/before.tgz (build/ at fa4336c, before the refactor) and .device/after.tgz (the refactored main,
# tools/gpu/prepare_device_bundle.sh); both RelWithDebInfo, stripped, the same compiler and flags.
#
#   bench/results/2026-12-02-h200-refactor/gpu_session.sh check OUT   # GPU tests, sanitizers, transformers comparison (after)
#   bench/results/2026-12-02-h200-refactor/gpu_session.sh ab OUT      # tools/gpu/gpu_bench.sh before/after/before/after
#
# Run from the repository root with carry [".device/before.tgz", ".device/after.tgz"]; results come back
# as OUT/<mode>.tgz plus OUT/<mode>_console.log; summarize.py reads the unpacked ab results.
set -u
mode=${1:?usage: gpu_session.sh check|ab OUT}
out=${2:?usage: gpu_session.sh check|ab OUT}
mkdir -p .device "$out"
for v in before after; do
  [[ -d .device/$v ]] || { mkdir -p .device/$v && tar -C .device/$v -xzf .device/$v.tgz; } || exit 1
done
work=$(mktemp -d)
case $mode in
  check)
    STEP_TIMEOUT=300 tools/gpu/gpu_check.sh "$work/check" .device/after 2>&1 | tee "$out/check_console.log" |
      grep -E "^==|rc=|FAILED|PASSED"
    ;;
  ab)
    # Alternated (ABAB) so drift of a shared machine hits both; the sampled runs and the GEMM rate are left
    # out (the prefill figure is compared in TFLOP/s, not as a ratio).
    for round in 1 2; do
      for v in before after; do
        echo "#### $v round $round"
        SKIP="sampled gemm" STEP_TIMEOUT=90 tools/gpu/gpu_bench.sh "$work/ab/${v}_$round" ".device/$v" 2>&1 |
          grep -E "^==|Throughput|Ratio|decode_ms|prefill_model|ratio:"
      done
    done 2>&1 | tee "$out/ab_console.log"
    ;;
  *) echo "unknown mode $mode"; exit 2 ;;
esac
tar -C "$work" -czf "$out/$mode.tgz" .
