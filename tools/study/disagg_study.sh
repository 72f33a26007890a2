#!/bin/bash
# Issue 12's goodput study, for a machine with two GPUs: `tandem serve` in each layout, loaded by
# `tandem bench serve` at increasing request rates on a long-prompt workload and on a mix, with goodput
# under SLOs. One result file per (layout, workload); `tandem bench report` overlays them afterwards.
#
#   tools/study/disagg_study.sh OUT [BUNDLE]     BUNDLE: bin/tandem, lib/, data/tokenizers (tools/study/prepare_study_bundle.sh)
#
# Layouts (CONFIGS):
#   a        two aggregated workers, one per GPU, behind the router
#   b        one prefill worker (cuda:0) + one decode worker (cuda:1), every prefill remote
#   c        the same two workers, conditional disaggregation with the default thresholds
#   c_tuned  the same with TUNED_ARGS
#   c_qN, c_lM, c_lM_qN   layout c with --max-prefill-queue N and/or --max-local-prefill M (e.g. c_q6)
#   aN       N aggregated workers, spread over the GPUs (e.g. a4 on four GPUs)
#   pPdD     P prefill + D decode workers, conditional with the default thresholds; GPUs split between
#            the roles in proportion (serve's layout), e.g. p2d1 on three GPUs, p2d2 on four; takes the
#            _qN / _lM suffixes of c (p2d2_q6), and pPdD_remote is every prefill remote (as b)
# Environment (defaults in brackets): MODEL [random:llama-3.1-8b], DEVICE [cuda], CONFIGS [a b c c_tuned],
# RATES [1,2,4,6], NUM_PROMPTS per rate [80], WORKLOADS [long mix], LONG_IN/LONG_OUT [3000/150], MIX_IN/MIX_RATIO/MIX_OUT
# [1500/0.9/150: prompts uniform in 150..2850], SLO ["ttft:1000 tpot:50"], TUNED_ARGS
# ["--max-local-prefill 1024 --max-prefill-queue 4"], SERVE_ARGS (extra, every layout), PORT [18000],
# TOKENIZER [the bundle's tokenizers/llama3_1 for llama models, else tokenizers/qwen3]. MODEL="" serves
# the demo model (a CPU smoke test of the script: DEVICE=cpu and small lengths).
set -u
out=${1:?usage: disagg_study.sh OUT [BUNDLE]}
bundle=${2:-.device/study}
mkdir -p "$out"
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
[[ -d $bundle/data ]] && export TANDEM_DATA_DIR=$PWD/$bundle/data
tandem=$bundle/bin/tandem
model=${MODEL-random:llama-3.1-8b}  # MODEL="" serves the demo model
device=${DEVICE:-cuda}
rates=${RATES:-1,2,4,6}
num_prompts=${NUM_PROMPTS:-80}
slo=${SLO:-ttft:1000 tpot:50}
tuned=${TUNED_ARGS:---max-local-prefill 1024 --max-prefill-queue 4}
port=${PORT:-18000}
# The benchmark builds token-exact prompts with the served model's tokenizer, and the frontend needs
# the same one for text prompts (random presets carry none).
data=${TANDEM_DATA_DIR:-data}
tokenizer=${TOKENIZER:-$data/tokenizers/$([[ $model == *llama* ]] && echo llama3_1 || echo qwen3)}
model_args=()
[[ -n $model ]] && model_args=(--model "$model" --tokenizer "$tokenizer")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/device.txt" 2>&1

layout_args() {
  case $1 in
    a) echo "--num-prefill-workers 0 --num-decode-workers 2" ;;
    b) echo "--num-prefill-workers 1 --num-decode-workers 1 --max-local-prefill 0 --max-prefill-queue 1000000" ;;
    c) echo "--num-prefill-workers 1 --num-decode-workers 1" ;;
    c_tuned) echo "--num-prefill-workers 1 --num-decode-workers 1 $tuned" ;;
    a[0-9]*) echo "--num-prefill-workers 0 --num-decode-workers ${1#a}" ;;
    c_l*|c_q*|p[0-9]*d[0-9]*)
      local workers="--num-prefill-workers 1 --num-decode-workers 1" thresholds="" part rest=${1#c_}
      if [[ $1 =~ ^p([0-9]+)d([0-9]+)(_|$) ]]; then
        workers="--num-prefill-workers ${BASH_REMATCH[1]} --num-decode-workers ${BASH_REMATCH[2]}"
        rest=${1#p"${BASH_REMATCH[1]}"d"${BASH_REMATCH[2]}"}
      fi
      for part in $(tr '_' ' ' <<< "$rest"); do
        case $part in
          l[0-9]*) thresholds+=" --max-local-prefill ${part#l}" ;;
          q[0-9]*) thresholds+=" --max-prefill-queue ${part#q}" ;;
          remote) thresholds+=" --max-local-prefill 0 --max-prefill-queue 1000000" ;;
          *) echo "unknown threshold $part in $1" >&2; return 1 ;;
        esac
      done
      echo "$workers$thresholds" ;;
    *) echo "unknown layout $1" >&2; return 1 ;;
  esac
}

for config in ${CONFIGS:-a b c c_tuned}; do
  args=$(layout_args "$config") || exit 2
  log=$out/serve_$config.log
  echo "== $config: tandem serve $args ${SERVE_ARGS:-}"
  # shellcheck disable=SC2086
  # No prefix cache: a sweep sends the same prompts at every rate, and cache hits would turn later rates'
  # prefills into no-ops (and long prompts into "short" ones for the router).
  "$tandem" serve "${model_args[@]}" --device "$device" --port "$port" $args --worker-arg=--no-prefix-caching ${SERVE_ARGS:-} \
    --child-log-level warn > "$log" 2>&1 &
  serve_pid=$!
  ready=0
  for _ in $(seq 1 600); do
    if grep -q "Tandem is serving" "$log"; then ready=1; break; fi
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 1
  done
  if (( ! ready )); then
    echo "   $config did not start (see $log)"; tail -5 "$log"
    kill -TERM "$serve_pid" 2>/dev/null; wait "$serve_pid"
    continue
  fi
  for workload in ${WORKLOADS:-long mix}; do
    if [[ $workload == long ]]; then
      shape=(--random-input-len "${LONG_IN:-3000}" --random-output-len "${LONG_OUT:-150}")
    else
      shape=(--random-input-len "${MIX_IN:-1500}" --random-range-ratio "${MIX_RATIO:-0.9}" --random-output-len "${MIX_OUT:-150}")
    fi
    t0=$(date +%s)
    # shellcheck disable=SC2086
    "$tandem" bench serve --base-url "http://127.0.0.1:$port" --tokenizer "$tokenizer" --dataset random "${shape[@]}" --num-prompts "$num_prompts" \
      --request-rate "$rates" --ignore-eos --goodput $slo --label "$config $workload" --progress lines --progress-interval 20 \
      --save-result "$out/${config}_${workload}.json" > "$out/bench_${config}_${workload}.log" 2>&1
    echo "   $workload rc=$? in $(( $(date +%s) - t0 )) s"
    grep -iE "goodput|request rate|TTFT|TPOT" "$out/bench_${config}_${workload}.log" | grep -iE "goodput|rate" | head -8
  done
  kill -TERM "$serve_pid"
  wait "$serve_pid"
done

# One page overlaying every result (Chart.js from the bundle, or from data/npm where the repository's
# data is; otherwise make it later with `tandem bench report`).
chartjs=$bundle/data/chart.umd.min.js
[[ -f $chartjs ]] || chartjs=data/npm/node_modules/chart.js/dist/chart.umd.min.js
shopt -s nullglob
results=("$out"/*_long.json "$out"/*_mix.json)
if [[ -f $chartjs && -f ${results[0]} ]]; then
  "$tandem" bench report --chartjs "$chartjs" --title "Disaggregation study: $model" -o "$out/report.html" "${results[@]}"
fi
