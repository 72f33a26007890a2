#!/usr/bin/env python3
"""Builds the FP8 transformers reference fixtures under tests/data (issue 18).

Runs where torch, transformers and safetensors are installed (the lent GPU machine; CPU torch is enough):
  python3 tools/references/make_fp8_references.py --out OUTDIR

Each fixture is a tiny random-weight model made by transformers (as make_references.py makes them) whose
linear projections (q/k/v/o, gate/up/down) are quantized here to FP8 e4m3fn with torch's own cast and
saved in the layout of a published FP8 checkpoint into OUTDIR/models/NAME (everything else in bf16):
  llama_fp8_block            quant_method "fp8", weight_block_size [128, 128]: weight F8_E4M3 and
                             weight_scale_inv F32 [ceil(out/128), ceil(in/128)] (Qwen3-*-FP8, DeepSeek-V3)
  qwen3_fp8_channel_tied     compressed-tensors float-quantized, strategy "channel": weight_scale F32
                             [out, 1], dynamic per-token activations, ignore lm_head (RedHat Llama-3.1 FP8)
  llama_fp8_tensor_static    compressed-tensors, strategy "tensor": one weight_scale, static activations
                             with an input_scale per projection
OUTDIR/references/NAME.json holds what make_references.py records (for prompts of 1, 16, 17 and 40
tokens: last-position logits and 32 greedy tokens), computed by transformers in fp32 with eager attention
on the dequantized weights (the FP8 value times its scale, in fp32). Also recorded: `transformers_load`,
whether transformers itself loads the FP8 directory and reads the same FP8 values and scales (FineGrainedFP8
for the block format; compressed-tensors needs its own package), and `fp8_vs_fp32`, how far the FP8 model
is from the unquantized fp32 one (logits relative error, greedy tokens in common), for docs/quantization.md.
"""
import argparse
import json
import os
import sys
import tempfile
import traceback

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_references import greedy_reference, load_fp32, make_config, randomize, references_for, versions  # noqa: E402

E4M3_MAX = 448.0
BLOCK = 128
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Widths are multiples of 128 for the block format (transformers' FP8 loader tiles them exactly); partial
# blocks are covered by tests/model/fp8_test.cpp.
FIXTURES = [
    # name, config class, model class, config kwargs, scheme ("block" | "channel" | "tensor"), static activations
    ("llama_fp8_block", LlamaConfig, LlamaForCausalLM,
     dict(vocab_size=384, hidden_size=256, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
          rope=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                    high_freq_factor=4.0, original_max_position_embeddings=32)),
     "block", False),
    ("qwen3_fp8_channel_tied", Qwen3Config, Qwen3ForCausalLM,
     dict(vocab_size=320, hidden_size=128, intermediate_size=320, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6, tie_word_embeddings=True,
          use_sliding_window=False, rope=dict(rope_type="default", rope_theta=1000000.0)),
     "channel", False),
    ("llama_fp8_tensor_static", LlamaConfig, LlamaForCausalLM,
     dict(vocab_size=288, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=1, head_dim=32, rms_norm_eps=1e-5, tie_word_embeddings=False,
          rope=dict(rope_type="default", rope_theta=10000.0)),
     "tensor", True),
]


def is_projection(name):
    return name.startswith("model.layers.") and name.endswith(".weight") and name.split(".")[-2] in PROJECTIONS


def quantize(w, scheme):
    """w [out, in] fp32 -> (e4m3fn values, fp32 scales as stored, dequantized fp32 weight)."""
    out_f, in_f = w.shape
    if scheme == "block":
        rows, cols = -(-out_f // BLOCK), -(-in_f // BLOCK)
        padded = torch.zeros(rows * BLOCK, cols * BLOCK)
        padded[:out_f, :in_f] = w
        amax = padded.view(rows, BLOCK, cols, BLOCK).abs().amax(dim=(1, 3))
        scales = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
        full = scales.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)[:out_f, :in_f]
    elif scheme == "channel":
        amax = w.abs().amax(dim=1, keepdim=True)
        scales = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))  # [out, 1]
        full = scales.expand(out_f, in_f)
    else:
        amax = w.abs().amax()
        scales = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))  # a scalar
        full = scales
    q = (w / full).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scales.to(torch.float32).contiguous(), q.to(torch.float32) * full


def quantization_config(scheme, static):
    if scheme == "block":
        return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                "weight_block_size": [BLOCK, BLOCK], "modules_to_not_convert": ["lm_head"]}
    args = lambda strategy, dynamic: {"num_bits": 8, "type": "float", "symmetric": True, "strategy": strategy,
                                      "dynamic": dynamic, "group_size": None, "block_structure": None,
                                      "actorder": None, "observer": None if dynamic else "minmax",
                                      "observer_kwargs": {}}
    group = {"targets": ["Linear"], "weights": args(scheme, False),
             "input_activations": args("tensor", False) if static else args("token", True),
             "output_activations": None}
    return {"quant_method": "compressed-tensors", "format": "float-quantized",
            "quantization_status": "compressed", "config_groups": {"group_0": group},
            "ignore": ["lm_head"], "kv_cache_scheme": None}


def check_transformers_load(model_dir, on_disk, deq):
    """Whether transformers loads the FP8 directory itself and sees our values: 'ok: ...' or why not."""
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    except Exception as e:  # recorded, not fatal: the references do not depend on it
        return f"failed to load: {type(e).__name__}: {e}"[:400]
    params = {n: p.detach().cpu() for n, p in list(model.named_parameters()) + list(model.named_buffers())}
    checked, worst = 0, 0.0
    for name, value in on_disk.items():
        if not is_projection(name):
            continue
        stem = name[: -len("weight")]
        if params.get(name) is not None and params[name].dtype == torch.float8_e4m3fn:
            scale = params.get(stem + "weight_scale_inv", params.get(stem + "weight_scale"))
            if scale is None or not torch.equal(params[name].view(torch.uint8), value.view(torch.uint8)):
                return f"mismatch: {name} FP8 values differ from what was saved"
            disk_scale = on_disk.get(stem + "weight_scale_inv", on_disk.get(stem + "weight_scale"))
            if not torch.equal(scale.float().reshape(disk_scale.shape), disk_scale):
                return f"mismatch: {name} scales differ from what was saved"
        elif params.get(name) is not None:  # transformers dequantized on load (no GPU): bf16 at best
            err = float((params[name].float() - deq[name]).norm() / deq[name].norm())
            worst = max(worst, err)
            if err > 1e-2:
                return f"mismatch: {name} dequantized by transformers differs by {err:.3g} relative"
        else:
            return f"mismatch: transformers has no parameter {name}"
        checked += 1
    return f"ok: {checked} projections, FP8 values and scales as saved" + (
        f" (dequantized by transformers, worst relative difference {worst:.3g})" if worst else "")


@torch.no_grad()
def fp8_vs_fp32(original, quantized, prompts):
    rows = []
    for p in prompts:
        ids = torch.tensor([p["ids"]])
        a, b = original(ids).logits[0, -1], quantized(ids).logits[0, -1]
        _, fp32_tokens, _ = greedy_reference(original, p["ids"])
        common = next((i for i, (x, y) in enumerate(zip(fp32_tokens, p["greedy"])) if x != y), len(fp32_tokens))
        rows.append(dict(prompt_len=len(p["ids"]), logits_relative_error=float((a - b).norm() / a.norm()),
                         greedy_tokens_in_common=common, of=len(fp32_tokens)))
    return rows


def build_fixture(out, name, config_class, model_class, kwargs, scheme, static, seed):
    print(f"fixture {name} ({scheme}{', static activations' if static else ''})")
    torch.manual_seed(seed)
    config = make_config(config_class, kwargs)
    original = model_class(config)
    randomize(original, torch.Generator().manual_seed(seed))
    original.eval()
    state = {k: v.detach().float().contiguous() for k, v in original.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    on_disk, deq = {}, {}
    for tensor_name, w in state.items():
        if not is_projection(tensor_name):
            on_disk[tensor_name] = w.to(torch.bfloat16)
            deq[tensor_name] = on_disk[tensor_name].float()
            continue
        q, scales, dequantized = quantize(w, scheme)
        stem = tensor_name[: -len("weight")]
        on_disk[tensor_name] = q
        on_disk[stem + ("weight_scale_inv" if scheme == "block" else "weight_scale")] = scales
        if static:
            on_disk[stem + "input_scale"] = torch.tensor([1.0 / E4M3_MAX * 4.0])  # unused by an fp32 reference
        deq[tensor_name] = dequantized

    model_dir = os.path.join(out, "models", name)
    os.makedirs(model_dir, exist_ok=True)
    config.architectures = [model_class.__name__]  # save_pretrained of a bare config leaves it out
    config.save_pretrained(model_dir)
    with open(os.path.join(model_dir, "config.json")) as f:
        config_json = json.load(f)
    config_json["quantization_config"] = quantization_config(scheme, static)
    config_json["torch_dtype"] = "bfloat16"
    if "dtype" in config_json:  # transformers >= 5 spells it so
        config_json["dtype"] = "bfloat16"
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(config_json, f, indent=2)
    save_file(on_disk, os.path.join(model_dir, "model.safetensors"), metadata={"format": "pt"})

    # The reference: the same architecture in fp32 on the dequantized weights, saved and reloaded the way
    # make_references.py loads its fixtures (fp32, eager attention).
    reference_model = model_class(config)
    load = dict(deq)
    if config.tie_word_embeddings:
        load["lm_head.weight"] = load["model.embed_tokens.weight"]
    reference_model.load_state_dict(load, strict=True)
    with tempfile.TemporaryDirectory() as tmp:
        reference_model.save_pretrained(tmp, safe_serialization=True)
        reference = load_fp32(model_class, tmp)
    prompts = references_for(reference, config.vocab_size, seed + 1)
    ref = dict(model=name, saved_dtype=f"fp8 e4m3 {scheme}", versions=versions(),
               quantization_config=config_json["quantization_config"],
               transformers_load=check_transformers_load(model_dir, on_disk, deq),
               fp8_vs_fp32=fp8_vs_fp32(original, reference, prompts), prompts=prompts)
    print(f"  transformers load: {ref['transformers_load']}")
    with open(os.path.join(out, "references", name + ".json"), "w") as f:
        json.dump(ref, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=4321)
    args = parser.parse_args()
    os.makedirs(os.path.join(args.out, "models"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "references"), exist_ok=True)
    torch.set_num_threads(8)
    failures = 0
    for i, (name, config_class, model_class, kwargs, scheme, static) in enumerate(FIXTURES):
        try:
            build_fixture(args.out, name, config_class, model_class, kwargs, scheme, static, args.seed + 100 * i)
        except Exception:
            failures += 1
            traceback.print_exc()
    print(f"done, {failures} failure(s); {versions()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
