#!/bin/sh
# Reproduces this folder's figures on a CPU machine: the 30-minute chaos soak (niced: the machine was
# shared), then the overload run. Needs build/tandem, etcd and nats-server (scripts/setup.sh) and the
# Qwen3 tokenizer (scripts/fetch_data.sh).
set -e
cd "$(dirname "$0")"
ROOT=../../..
nice -n 19 python3 "$ROOT/bench/chaos_soak.py" --tandem "$ROOT/build/tandem" --duration 1800 --round 300 --warmup 20 \
  --seed 30 --summary soak-30min.json 2>&1 | tee soak-30min.log
python3 overload.py --tandem "$ROOT/build/tandem" --out overload.json 2>&1 | tee overload.log
