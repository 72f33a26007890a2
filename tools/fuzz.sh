#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz (one per parser that takes bytes from outside) under
# ASan/UBSan, from the repository root:
#   tools/fuzz.sh TARGET MINUTES     one target, longer (e.g. tools/fuzz.sh http_request_fuzz 10)
#   tools/fuzz.sh all SECONDS        every target in turn (scripts/test.sh runs `all 25`)
#   tools/fuzz.sh list               the targets
# Needs clang with libFuzzer (scripts/setup.sh installs it). Configures and builds the CPU-only clang
# build in $FUZZ_BUILD_DIR (default build-fuzz; $BUILD_JOBS compile jobs, default nproc) unless
# FUZZ_SKIP_BUILD=1. Each run starts from the seeds in tests/fuzz/corpus/<target>/ and grows a working
# corpus in $FUZZ_BUILD_DIR/corpus/<target>/ (kept between runs, never written into the repository);
# a crashing input is written to $FUZZ_BUILD_DIR/artifacts/<target>/. Prints executions per target;
# exits non-zero when any target found a crash, a leak or a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
TARGETS=(http_request_fuzz openai_request_fuzz sse_stream_fuzz tokenizer_fuzz chat_template_fuzz
         model_config_fuzz safetensors_fuzz rpc_frames_fuzz kv_transfer_fuzz etcd_response_fuzz
         tool_call_parser_fuzz cluster_handshake_fuzz structured_spec_fuzz
         prefill_queue_message_fuzz)

usage() { echo "usage: tools/fuzz.sh TARGET MINUTES | all SECONDS | list" >&2; exit 2; }
[ $# -ge 1 ] || usage
if [ "$1" = list ]; then printf '%s\n' "${TARGETS[@]}"; exit 0; fi
[ $# -eq 2 ] || usage
# 0 would mean "no limit" to libFuzzer.
[[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: the duration must be a positive whole number" >&2; exit 2; }
if [ "$1" = all ]; then
  selected=("${TARGETS[@]}"); seconds=$2
else
  [[ " ${TARGETS[*]} " == *" $1 "* ]] || { echo "fuzz: unknown target '$1' (tools/fuzz.sh list)" >&2; exit 2; }
  selected=("$1"); seconds=$(( $2 * 60 ))
fi

if [ "${FUZZ_SKIP_BUILD:-0}" != 1 ]; then
  if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    launcher=()
    if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
    cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
      -DCMAKE_CXX_COMPILER=clang++ -DTANDEM_CUDA=OFF -DTANDEM_TESTS=OFF -DTANDEM_FUZZ=ON "${launcher[@]}"
  fi
  cmake --build "$BUILD" -j "${BUILD_JOBS:-$(nproc)}" --target "${selected[@]}"
fi

# Leaks are findings too; UBSan stops at the first report (-fno-sanitize-recover) with a stack.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
summary=""
for t in "${selected[@]}"; do
  work="$BUILD/corpus/$t"; artifacts="$BUILD/artifacts/$t"; log="$BUILD/logs/$t.log"
  mkdir -p "$work" "$artifacts" "$(dirname "$log")"
  echo "fuzz: $t for ${seconds}s"
  rc=0
  # -timeout: one input running 10 s is a hang; -rss_limit_mb: one using 2 GiB is unbounded memory.
  # FUZZ_SEED fixes libFuzzer's random seed (scripts/test.sh sets it, so that CI repeats its own run).
  "$BUILD/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 ${FUZZ_SEED:+-seed=$FUZZ_SEED} \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  corpus=$(ls "$work" | wc -l)
  if [ "$rc" != 0 ]; then
    failed+=("$t")
    echo "fuzz: $t FAILED (exit $rc); the end of $log:"
    tail -40 "$log"
  fi
  summary+=$(printf '%-22s %10s execs  %6s corpus files  %s' "$t" "${execs:-?}" "$corpus" \
    "$([ "$rc" = 0 ] && echo ok || echo "FAILED: see $log and $artifacts/")")$'\n'
done
echo "fuzz: ${seconds}s per target"
printf '%s' "$summary"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in ${failed[*]}; reproduce with $BUILD/fuzz/TARGET $BUILD/artifacts/TARGET/<file>" >&2
  exit 1
fi
