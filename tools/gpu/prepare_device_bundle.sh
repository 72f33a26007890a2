#!/bin/bash
# Builds (unless --no-build) and collects what tools/gpu/gpu_check.sh needs on the lent GPU machine into one
# folder that travels with a `run` call (carry=[".device/cuda"]): the binaries, the non-system shared
# libraries they need (spdlog, fmt, gomp; not libc/libstdc++, not CUDA's, which the GPU machine has in
# /usr/local/cuda/lib64), and the check scripts. Keep the folder under ~60 MB.
#
#   [BUILD_DIR=build] tools/gpu/prepare_device_bundle.sh [--no-build] [DEST]     DEST defaults to .device/cuda of this checkout
#
# `run` sends the lead's checkout (/work/main), so from a worktree pass DEST=/work/main/.device/cuda.
# Then, on the GPU machine (repo root):
#   LD_LIBRARY_PATH=$PWD/.device/cuda/lib:/usr/local/cuda/lib64 .device/cuda/tools/gpu_check.sh $OUT
set -euo pipefail
cd "$(dirname "$0")/../.."
build=1
if [[ "${1:-}" == "--no-build" ]]; then build=0; shift; fi
dest=${1:-.device/cuda}
if (( build )); then
  cmake -S . -B "${BUILD_DIR:-build}" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "${BUILD_DIR:-build}" -j"$(nproc)" --target tandem cuda_kernels_test cuda_backend_test backend_tool \
    cuda_fp8_test gpu_serving_test kv_transfer_bench
fi
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib" "$dest/tools"
b=${BUILD_DIR:-build}
bins=($b/tandem $b/tests/backend/cuda_kernels_test $b/tests/backend/cuda_backend_test
      $b/tests/backend/backend_tool)
# Optional binaries, when built: the FP8 GPU tests, the GPU serving and structured-output tests and the KV
# transfer benchmark.
for extra in $b/tests/backend/cuda_fp8_test $b/tests/integration/gpu_serving_test $b/tests/integration/gpu_structured_test \
             $b/bench/kv_transfer_bench; do
  [[ -x $extra ]] && bins+=("$extra")
done
cp "${bins[@]}" "$dest/bin/"
tools/gpu/bundle_libs.sh "$dest/lib" "${bins[@]}"
cp tools/gpu/gpu_check.sh tools/gpu/gpu_bench.sh tools/references/compare_transformers.py "$dest/tools/"
du -sh "$dest"
