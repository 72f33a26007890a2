#!/bin/bash
# Copies into DEST_LIB the shared libraries that BINARIES need beyond what the lent GPU machine has: not
# the C/C++ runtime, not CUDA's (it has /usr/local/cuda/lib64). Used by the bundle scripts.
#
#   tools/gpu/bundle_libs.sh DEST_LIB BINARY...
set -euo pipefail
dest=${1:?usage: bundle_libs.sh DEST_LIB BINARY...}
shift
mkdir -p "$dest"
ldd "$@" | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libgcc_s.so*|libstdc++.so*|ld-linux*) ;;
    libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*) ;;
    *) cp -L "$lib" "$dest/" ;;
  esac
done
