#!/usr/bin/env python3
"""Builds the transformers reference fixtures under tests/data (DESIGN.md §5).

Runs where torch and transformers are installed (the lent GPU machine; CPU torch is enough):
  python3 tools/references/make_references.py --out OUTDIR [--tandem-model DIR:PRESET:SEED ...]

For each tiny fixture it builds a random-weight model with transformers itself (Llama, Qwen2, Qwen3;
GQA and MQA; llama3 rope scaling; tied and untied embeddings; fp32/bf16/fp16 on disk; single file and
sharded), saves it with save_pretrained into OUTDIR/models/NAME, reloads it in float32 with eager
attention, and writes OUTDIR/references/NAME.json: for prompts of 1, 16, 17 and 40 tokens (block
size 16: one token, exactly one block, one block + 1, more than two blocks) the last-position logits
after prefill and the greedy continuation of 32 tokens, all in fp32.

--tandem-model points at a directory written by `tandem make-model` (so transformers is the judge of
whether it loads) and records the same references for it under references/NAME.json, without copying
the weights (tests regenerate them from PRESET and SEED).
"""
import argparse
import inspect
import json
import os
import sys
import traceback

import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

PROMPT_LENGTHS = [1, 16, 17, 40]
NUM_GREEDY = 32
# A greedy step whose top-two logits are closer than this could flip under fp32 reordering; the
# script re-draws the prompt rather than commit an ambiguous reference.
MIN_TOP2_GAP = 1e-3

FIXTURES = [
    # name, config class, model class, config kwargs, dtype on disk, max shard size or None
    ("llama_gqa_rope3", LlamaConfig, LlamaForCausalLM,
     dict(vocab_size=384, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
          num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5, tie_word_embeddings=False,
          rope=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                    high_freq_factor=4.0, original_max_position_embeddings=32)),
     torch.float32, "120KB"),
    ("llama_mqa_tied_bf16", LlamaConfig, LlamaForCausalLM,
     dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=1, head_dim=32, rms_norm_eps=1e-5, tie_word_embeddings=True,
          rope=dict(rope_type="default", rope_theta=500000.0)),
     torch.bfloat16, None),
    ("qwen2_gqa_tied_fp16", Qwen2Config, Qwen2ForCausalLM,
     dict(vocab_size=352, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
          rope=dict(rope_type="default", rope_theta=1000000.0)),
     torch.float16, None),
    ("qwen3_gqa", Qwen3Config, Qwen3ForCausalLM,
     dict(vocab_size=400, hidden_size=64, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4,
          num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6, tie_word_embeddings=False,
          use_sliding_window=False, rope=dict(rope_type="default", rope_theta=1000000.0)),
     torch.float32, None),
    ("qwen3_mqa_tied_bf16", Qwen3Config, Qwen3ForCausalLM,
     dict(vocab_size=288, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8,
          num_key_value_heads=1, head_dim=16, rms_norm_eps=1e-6, tie_word_embeddings=True,
          use_sliding_window=False, rope=dict(rope_type="default", rope_theta=1000000.0)),
     torch.bfloat16, "60KB"),
]


def make_config(config_class, kwargs):
    kwargs = dict(kwargs)
    rope = kwargs.pop("rope")
    params = inspect.signature(config_class.__init__).parameters
    if "rope_parameters" in params:  # transformers >= 5
        kwargs["rope_parameters"] = rope
    else:
        kwargs["rope_theta"] = rope["rope_theta"]
        if rope["rope_type"] != "default":
            kwargs["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    kwargs["max_position_embeddings"] = 256
    kwargs["bos_token_id"] = 1
    kwargs["eos_token_id"] = 2
    return config_class(**kwargs)


def randomize(model, generator):
    """Weights large enough that greedy paths vary: unit-variance-preserving linears, norms around 1."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=generator))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))
            elif "embed_tokens" in name or name.startswith("lm_head"):
                p.copy_(torch.randn(p.shape, generator=generator) * (3.0 / p.shape[1] ** 0.5))
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * (1.5 / p.shape[1] ** 0.5))


def load_fp32(model_class, path):
    try:
        model = model_class.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        model = model_class.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


@torch.no_grad()
def greedy_reference(model, prompt):
    ids = list(prompt)
    last_logits = None
    tokens, gaps = [], []
    for step in range(NUM_GREEDY):
        logits = model(torch.tensor([ids])).logits[0, -1].float()
        if step == 0:
            last_logits = logits.tolist()
        top2 = torch.topk(logits, 2).values
        gaps.append(float(top2[0] - top2[1]))
        nxt = int(torch.argmax(logits))
        tokens.append(nxt)
        ids.append(nxt)
    return last_logits, tokens, min(gaps)


def references_for(model, vocab_size, seed):
    generator = torch.Generator().manual_seed(seed)
    prompts = []
    for length in PROMPT_LENGTHS:
        for attempt in range(20):
            prompt = torch.randint(3, vocab_size, (length,), generator=generator).tolist()
            last_logits, tokens, gap = greedy_reference(model, prompt)
            if gap >= MIN_TOP2_GAP:
                break
        distinct = len(set(tokens))
        prompts.append(dict(ids=prompt, last_logits=last_logits, greedy=tokens, min_top2_gap=gap,
                            distinct_greedy_tokens=distinct, attempts=attempt + 1))
        print(f"  prompt len {length}: greedy {tokens[:8]}... distinct={distinct} min_gap={gap:.4g}")
    return prompts


def versions():
    return dict(torch=torch.__version__, transformers=transformers.__version__)


def build_fixture(out, name, config_class, model_class, kwargs, dtype, shard, seed):
    print(f"fixture {name}")
    torch.manual_seed(seed)
    config = make_config(config_class, kwargs)
    model = model_class(config)
    randomize(model, torch.Generator().manual_seed(seed))
    model_dir = os.path.join(out, "models", name)
    model.to(dtype)
    save_kwargs = dict(safe_serialization=True)
    if shard:
        save_kwargs["max_shard_size"] = shard
    model.save_pretrained(model_dir, **save_kwargs)
    reloaded = load_fp32(model_class, model_dir)
    ref = dict(model=name, saved_dtype=str(dtype), versions=versions(),
               prompts=references_for(reloaded, config.vocab_size, seed + 1))
    with open(os.path.join(out, "references", name + ".json"), "w") as f:
        json.dump(ref, f)


def build_tandem_reference(out, spec):
    path, preset, seed = spec.split(":")
    print(f"tandem make-model output {path} (preset {preset}, seed {seed})")
    with open(os.path.join(path, "config.json")) as f:
        arch = json.load(f)["architectures"][0]
    model_class = {"LlamaForCausalLM": LlamaForCausalLM, "Qwen2ForCausalLM": Qwen2ForCausalLM,
                   "Qwen3ForCausalLM": Qwen3ForCausalLM}[arch]
    model = load_fp32(model_class, path)
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(7)
    prompts = []
    for length in [5, 33]:
        prompt = torch.randint(3, vocab, (length,), generator=generator).tolist()
        last_logits, tokens, gap = greedy_reference(model, prompt)
        # Real vocabularies make full logit vectors large: keep the 256 largest, enough to check the
        # numerics and the ranking.
        top = sorted(range(len(last_logits)), key=lambda i: -last_logits[i])[:256]
        prompts.append(dict(ids=prompt, top_logits=[[i, last_logits[i]] for i in top], greedy=tokens,
                            min_top2_gap=gap))
        print(f"  prompt len {length}: greedy {tokens[:8]}... min_gap={gap:.4g}")
    name = f"tandem_{preset}_seed{seed}"
    ref = dict(model=name, preset=preset, seed=int(seed), versions=versions(), prompts=prompts)
    with open(os.path.join(out, "references", name + ".json"), "w") as f:
        json.dump(ref, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tandem-model", action="append", default=[], metavar="DIR:PRESET:SEED")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--skip-fixtures", action="store_true", help="only the --tandem-model references")
    args = parser.parse_args()
    os.makedirs(os.path.join(args.out, "models"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "references"), exist_ok=True)
    torch.set_num_threads(8)
    failures = 0
    for i, (name, config_class, model_class, kwargs, dtype, shard) in enumerate(FIXTURES):
        if args.skip_fixtures:
            break
        try:
            build_fixture(args.out, name, config_class, model_class, kwargs, dtype, shard, args.seed + 100 * i)
        except Exception:
            failures += 1
            traceback.print_exc()
    for spec in args.tandem_model:
        try:
            build_tandem_reference(args.out, spec)
        except Exception:
            failures += 1
            traceback.print_exc()
    print(f"done, {failures} failure(s); {versions()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
