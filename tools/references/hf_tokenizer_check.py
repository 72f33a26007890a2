#!/usr/bin/env python3
"""Cross-checks, on a machine that has Hugging Face `tokenizers` (the lent GPU machine), that the
committed @lenml/tokenizers references equal Hugging Face's own encodings, shows HF's output on
the cases where the Node port is known to differ, and times HF's single-thread encode on the
benchmark text (the file bench/tokenizer_bench writes with --write-text).

    python3 tools/references/hf_tokenizer_check.py DIR
DIR holds tokenizers/{qwen3,llama3_1}/tokenizer.json, corpus.json, invalid_utf8.json,
references_{qwen3,llama3_1}.json and bench_text.txt.
"""
import json
import os
import sys
import time

from tokenizers import Tokenizer
import tokenizers

d = sys.argv[1]
corpus = json.load(open(os.path.join(d, "corpus.json"), encoding="utf-8"))
invalid = [bytes.fromhex(h).decode("utf-8", errors="replace") for h in json.load(open(os.path.join(d, "invalid_utf8.json")))]
text = open(os.path.join(d, "bench_text.txt"), encoding="utf-8").read()
print("tokenizers", tokenizers.__version__)
special_cases = ["a\u0085\u0085b", "a\uFEFF\uFEFFb", "a\u180E\u180Eb", "x'\u017F\u017F", "It'\u017F", "a \u0085 b", "\uFEFFhello"]
for model in ("qwen3", "llama3_1"):
    tok = Tokenizer.from_file(os.path.join(d, "tokenizers", model, "tokenizer.json"))
    refs = json.load(open(os.path.join(d, f"references_{model}.json"), encoding="utf-8"))
    mismatches = [i for i, s in enumerate(corpus) if tok.encode(s, add_special_tokens=False).ids != refs["encode"][i]]
    mismatches_special = [i for i, s in enumerate(corpus) if tok.encode(s, add_special_tokens=True).ids != refs["encode_add_special"][i]]
    mismatches_invalid = [i for i, s in enumerate(invalid) if tok.encode(s, add_special_tokens=False).ids != refs["invalid_utf8"][i]]
    mismatches_decode = [i for i, s in enumerate(corpus) if tok.decode(refs["encode"][i], skip_special_tokens=True) != refs["decode_skip_special"][i]]
    print(f"{model}: corpus mismatches {mismatches[:20]} ({len(mismatches)}), with special {len(mismatches_special)}, "
          f"invalid {mismatches_invalid}, decode {mismatches_decode[:20]} ({len(mismatches_decode)})")
    for i in mismatches[:5]:
        print("  ", json.dumps(corpus[i]), tok.encode(corpus[i], add_special_tokens=False).ids, refs["encode"][i])
    for s in special_cases:
        enc = tok.encode(s, add_special_tokens=False)
        print(f"  special {json.dumps(s)}: ids={enc.ids} pieces={[p for p, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(s) if tok.normalizer else s)]}")
    # Single-thread throughput on the benchmark text (one encode call, as bench/tokenizer_bench does).
    os.environ["RAYON_NUM_THREADS"] = "1"
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        n = len(tok.encode(text, add_special_tokens=False).ids)
        times.append(time.perf_counter() - t0)
    times.sort()
    mb = len(text.encode("utf-8")) / 1e6
    print(f"  bench: {n} tokens, median {mb / times[2]:.2f} MB/s, best {mb / times[0]:.2f} MB/s")
    lines = text.split("\n")
    t0 = time.perf_counter()
    for line in lines:
        tok.encode(line, add_special_tokens=False)
    print(f"  bench per-line ({len(lines)} calls): {mb / (time.perf_counter() - t0):.2f} MB/s")
