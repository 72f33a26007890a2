#!/usr/bin/env python3
"""Cross-checks the committed tokenizer references (made by the @lenml/tokenizers Node port, see
tests/data/tokenizer/README.md) against Hugging Face's own Rust tokenizers, wherever the `tokenizers`
Python package is installed (pip install tokenizers). It also prints Hugging Face's output on the
cases where the Node port is known to differ, and, given the benchmark text (the file
bench/tokenizer_bench writes with --write-text), times Hugging Face's single-thread encode.

    python3 tools/references/hf_tokenizer_check.py                       # from a checkout
    python3 tools/references/hf_tokenizer_check.py --bench-text FILE
    python3 tools/references/hf_tokenizer_check.py BUNDLE                # a copied folder, below

From a checkout it reads the fixtures in tests/data/tokenizer and the tokenizer files that
scripts/fetch_data.sh put in data/tokenizers ($TANDEM_DATA_DIR/tokenizers when set). A BUNDLE folder
(for a machine without the checkout) holds tokenizers/{qwen3,llama3_1}/tokenizer.json, corpus.json,
invalid_utf8.json, references_{qwen3,llama3_1}.json and optionally bench_text.txt.

Exits 1 when any encoding or decoding differs from the references, 0 when all agree.
"""
import argparse
import json
import os
import sys
import time

# Single-thread timings: set before tokenizers starts its thread pool.
os.environ.setdefault("RAYON_NUM_THREADS", "1")

try:
    import tokenizers
    from tokenizers import Tokenizer
except ImportError:
    sys.exit("hf_tokenizer_check: needs the Hugging Face `tokenizers` package (pip install tokenizers)")


def repository_root():
    # Walk up from this file rather than assume its depth under tools/.
    d = os.path.dirname(os.path.abspath(__file__))
    while d != os.path.dirname(d):
        if os.path.isdir(os.path.join(d, "tests", "data", "tokenizer")):
            return d
        d = os.path.dirname(d)
    return None


def paths(args):
    if args.bundle:
        b = args.bundle
        text = args.bench_text or os.path.join(b, "bench_text.txt")
        return b, os.path.join(b, "tokenizers"), text if os.path.exists(text) else None
    root = repository_root()
    if root is None:
        sys.exit("hf_tokenizer_check: not inside a checkout; pass a BUNDLE folder")
    data = os.environ.get("TANDEM_DATA_DIR", os.path.join(root, "data"))
    return os.path.join(root, "tests", "data", "tokenizer"), os.path.join(data, "tokenizers"), args.bench_text


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", help="a folder with the fixtures and tokenizer files (see above)")
    parser.add_argument("--bench-text", help="time Hugging Face's encode on this text")
    args = parser.parse_args()
    fixtures, tokenizer_dir, bench_text = paths(args)

    corpus = load(os.path.join(fixtures, "corpus.json"))
    invalid = [bytes.fromhex(h).decode("utf-8", errors="replace") for h in load(os.path.join(fixtures, "invalid_utf8.json"))]
    print(f"tokenizers {tokenizers.__version__}, Python {sys.version.split()[0]}")
    special_cases = ["a\u0085\u0085b", "a\uFEFF\uFEFFb", "a\u180E\u180Eb", "x'\u017F\u017F", "It'\u017F", "a \u0085 b", "\uFEFFhello"]
    all_agree = True
    for model in ("qwen3", "llama3_1"):
        tok = Tokenizer.from_file(os.path.join(tokenizer_dir, model, "tokenizer.json"))
        refs = load(os.path.join(fixtures, f"references_{model}.json"))
        encode = lambda s, special=False: tok.encode(s, add_special_tokens=special).ids
        mismatches = [i for i, s in enumerate(corpus) if encode(s) != refs["encode"][i]]
        mismatches_special = [i for i, s in enumerate(corpus) if encode(s, True) != refs["encode_add_special"][i]]
        mismatches_invalid = [i for i, s in enumerate(invalid) if encode(s) != refs["invalid_utf8"][i]]
        mismatches_decode = [i for i, s in enumerate(corpus)
                             if tok.decode(refs["encode"][i], skip_special_tokens=True) != refs["decode_skip_special"][i]]
        n = len(corpus)
        print(f"{model}: encode {n - len(mismatches)}/{n} agree, with special tokens {n - len(mismatches_special)}/{n}, "
              f"invalid UTF-8 {len(invalid) - len(mismatches_invalid)}/{len(invalid)}, decode {n - len(mismatches_decode)}/{n}")
        for name, found in (("encode", mismatches), ("with special tokens", mismatches_special),
                            ("invalid UTF-8", mismatches_invalid), ("decode", mismatches_decode)):
            if found:
                all_agree = False
                print(f"  {name} differs at {found[:20]}{' ...' if len(found) > 20 else ''}")
        for i in mismatches[:5]:
            print("  ", json.dumps(corpus[i]), encode(corpus[i]), refs["encode"][i])
        for s in special_cases:
            normalized = tok.normalizer.normalize_str(s) if tok.normalizer else s
            print(f"  special {json.dumps(s)}: ids={encode(s)} pieces={[p for p, _ in tok.pre_tokenizer.pre_tokenize_str(normalized)]}")
        if bench_text:
            with open(bench_text, encoding="utf-8") as f:
                text = f.read()
            # Throughput of one encode call on the whole text, as bench/tokenizer_bench measures it.
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                count = len(encode(text))
                times.append(time.perf_counter() - t0)
            times.sort()
            mb = len(text.encode("utf-8")) / 1e6
            print(f"  bench: {count} tokens, median {mb / times[2]:.2f} MB/s, best {mb / times[0]:.2f} MB/s")
            lines = text.split("\n")
            t0 = time.perf_counter()
            for line in lines:
                encode(line)
            print(f"  bench per-line ({len(lines)} calls): {mb / (time.perf_counter() - t0):.2f} MB/s")
    print("all agree" if all_agree else "DIFFERENCES FOUND")
    return 0 if all_agree else 1


if __name__ == "__main__":
    sys.exit(main())
