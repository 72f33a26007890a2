#!/bin/bash
# Where the serve path's CPU goes: tandem frontend + serve_overhead_bench worker under one
# `tandem bench serve` run (256 x 64/128), each sampled by `perf record --call-graph dwarf`.
# Usage (repository root): perf_profile.sh TANDEM BENCH OUTDIR; then perf report -i OUTDIR/fe.data (or wk.data).
# perf_frontend_base.txt and perf_worker_base_cold.txt are `perf report --children --sort sym -g none` of
# the baseline build (the worker's profile is of a fresh worker, hence "cold": see README).
set -e
T=$1; B=$2; O=$3; mkdir -p $O; rm -f $O/ready.json
$T --log-level warn frontend --port 0 --ready-file $O/ready.json --tokenizer data/tokenizers/qwen3 2>/dev/null & FE=$!
for i in $(seq 200); do [ -s $O/ready.json ] && break; sleep 0.05; done
HTTP=$(python3 -c "import json;print(json.load(open('$O/ready.json'))['http_port'])")
REG=$(python3 -c "import json;print(json.load(open('$O/ready.json'))['registry_port'])")
$B worker --frontend 127.0.0.1:$REG > $O/worker.out 2>/dev/null & WK=$!
for i in $(seq 400); do n=$(curl -s localhost:$HTTP/metrics | awk '/^tandem_workers\{/ {s+=$2} END {print s+0}'); [ "$n" -ge 1 ] && break; sleep 0.05; done
perf record -F 999 --call-graph dwarf,16384 -p $FE -o $O/fe.data 2>/dev/null & P1=$!
perf record -F 999 --call-graph dwarf,16384 -p $WK -o $O/wk.data 2>/dev/null & P2=$!
sleep 0.5
$T bench serve --base-url http://127.0.0.1:$HTTP --model null --tokenizer data/tokenizers/qwen3 --dataset-name random --random-input-len 64 --random-output-len 128 --num-prompts 256 --request-rate inf --ignore-eos --num-warmups 1 --progress none --no-server-metrics > $O/bench.txt 2>&1
kill -INT $P1 $P2; wait $P1 $P2 || true
kill -TERM $WK; sleep 0.2; kill -TERM $WK; wait $WK || true
kill -TERM $FE; wait $FE || true
