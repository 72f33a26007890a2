#!/bin/bash
# Where the serving path's CPU goes with the fake engine: `tandem serve --engine fake` loaded by
# `tandem bench serve` (256 x 512/512 streamed, step 10 ms), the frontend and the decode worker each
# sampled by `perf record --call-graph dwarf` during the second (measured) pass.
# Usage (repository root): perf_fake_serve.sh TANDEM OUTDIR; then
#   perf report -i OUTDIR/fe.data --no-children --sort sym   (or wk.data)
set -e
T=$1; O=$2; mkdir -p "$O"
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
$T serve --engine fake --model random:qwen3-0.6b --tokenizer data/tokenizers/qwen3 --port $PORT \
  --child-log-level warn --worker-arg=--fake-step-ms=10 > "$O/serve.log" 2>&1 & SERVE=$!
for i in $(seq 600); do n=$(curl -s localhost:$PORT/metrics | awk '/^tandem_workers\{/ {s+=$2} END {print s+0}'); [ "$n" -ge 2 ] && break; sleep 0.1; done
FE=$(pgrep -P $SERVE -f ' frontend ')
WK=$(pgrep -P $SERVE -f 'worker-id decode-0')
B="$T bench serve --base-url http://127.0.0.1:$PORT --tokenizer data/tokenizers/qwen3 --dataset-name random --random-input-len 512 --random-output-len 512 --num-prompts 256 --request-rate inf --ignore-eos --progress none --no-server-metrics"
$B --num-warmups 0 --seed 7 > /dev/null
perf record -F 199 --call-graph dwarf,16384 -p $FE -o "$O/fe.data" 2>/dev/null & P1=$!
perf record -F 199 --call-graph dwarf,16384 -p $WK -o "$O/wk.data" 2>/dev/null & P2=$!
sleep 0.5
$B --num-warmups 1 > "$O/bench.txt" 2>&1
kill -INT $P1 $P2; wait $P1 $P2 || true
kill -TERM $SERVE; wait $SERVE || true
