#!/bin/bash
# Builds (unless --no-build) and collects what the tensor-parallel GPU runs need (tools/gpu/tp_multi_gpu.sh
# on a machine with two or more GPUs; bench/results/2026-12-02-h200-tp1/run.sh on one) into one folder that
# travels with a `run` call: the binaries (debug info stripped), the non-system shared libraries they need
# (not CUDA's, and not NCCL, which the binaries dlopen from the GPU machine's CUDA or PyTorch), and the
# scripts. Keep it under the 64 MiB a run carries.
#
#   [BUILD_DIR=build] tools/gpu/prepare_tp_bundle.sh [--no-build] [DEST]     DEST defaults to .device/nccl-tp
#
# `run` sends the lead's checkout (/work/main), so from a worktree pass DEST=/work/main/.device/nccl-tp and
# carry [".device/nccl-tp"]. Then, on the GPU machine (repository root):
#   tools/gpu/tp_multi_gpu.sh $OUT/tp .device/nccl-tp
set -euo pipefail
cd "$(dirname "$0")/../.."
build=1
if [[ "${1:-}" == "--no-build" ]]; then build=0; shift; fi
dest=${1:-.device/nccl-tp}
b=${BUILD_DIR:-build}
targets=(tandem cuda_tensor_parallel_test cuda_backend_test backend_tool kv_transfer_bench allreduce_bench)
if (( build )); then cmake --build "$b" -j"${JOBS:-2}" --target "${targets[@]}"; fi
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib" "$dest/tools"
bins=($b/tandem $b/tests/backend/cuda_tensor_parallel_test $b/tests/backend/cuda_backend_test $b/tests/backend/backend_tool
      $b/bench/kv_transfer_bench $b/bench/allreduce_bench)
cp "${bins[@]}" "$dest/bin/"
strip --strip-debug "$dest"/bin/*
tools/gpu/bundle_libs.sh "$dest/lib" "${bins[@]}"
cp tools/gpu/tp_multi_gpu.sh "$dest/tools/"
du -sh "$dest"
