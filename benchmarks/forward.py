"""Forward-pass speed of HookedLM on SmolLM2-135M against the reference implementations.

Prints, at fixed threads, batch and length:
  ours (no hooks)          vs transformers with sdpa and eager attention  (target <= 1.05 vs sdpa)
  ours with F.linear       the same, with our CPU oneDNN matmul turned off (harness.models.linear)
  ours run_with_cache      of every hook_resid_post vs our plain forward  (target <= 1.25)
  ours run_with_cache      vs TransformerLens's HookedTransformer run_with_cache, same weights (target: faster)

Usage: python benchmarks/forward.py [--threads 2] [--batch 4] [--length 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import harness  # noqa: E402
from benchmarks.timing import interleaved_medians  # noqa: E402
from harness import zoo  # noqa: E402
from harness.models.linear import cpu_matmul, using_cpu_matmul  # noqa: E402

MODEL = "smollm2-135m-instruct"


def transformer_lens_copy(folder):
    """TransformerLens's HookedTransformer holding the same SmolLM2 weights (no weight processing)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    c = hf.config
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size, n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
        n_key_value_heads=c.num_key_value_heads, d_head=c.hidden_size // c.num_attention_heads,
        d_mlp=c.intermediate_size, d_vocab=c.vocab_size, n_ctx=2048, act_fn="silu", normalization_type="RMS",
        eps=c.rms_norm_eps, positional_embedding_type="rotary", rotary_dim=c.hidden_size // c.num_attention_heads,
        rotary_base=int(c.rope_parameters["rope_theta"]), gated_mlp=True, final_rms=True,
        original_architecture="LlamaForCausalLM", rotary_adjacent_pairs=False, default_prepend_bos=False,
    )
    tl = HookedTransformer(cfg)
    tl.load_state_dict(convert_llama_weights(hf, cfg), strict=False)
    return tl.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    folder = zoo.resolve(MODEL)
    ours = harness.load(MODEL)
    tokens = torch.randint(0, ours.cfg.d_vocab, (args.batch, args.length), generator=torch.Generator().manual_seed(0))
    resid_names = [f"blocks.{i}.hook_resid_post" for i in range(ours.cfg.n_layers)]

    hf_models = {}
    for attn in ("sdpa", "eager"):
        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=attn).eval()
        with torch.inference_mode():
            assert (hf(tokens).logits - ours(tokens)).abs().max().item() < 1e-3  # same computation
        hf_models[attn] = hf
    tl = transformer_lens_copy(folder)
    fns = {
        "ours forward": lambda: ours(tokens),
        "ours forward, F.linear": lambda: with_aten(lambda: ours(tokens)),
        "transformers sdpa": lambda: hf_models["sdpa"](tokens, use_cache=False),
        "transformers eager": lambda: hf_models["eager"](tokens, use_cache=False),
        "ours run_with_cache": lambda: ours.run_with_cache(tokens, names_filter=resid_names),
        "TransformerLens run_with_cache": lambda: tl.run_with_cache(tokens, names_filter=resid_names),
    }
    with torch.inference_mode():
        results = interleaved_medians(fns, repeats=args.repeats)

    print(f"{MODEL}: batch {args.batch} x {args.length} tokens, fp32, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats, "
          f"our CPU matmul: {cpu_matmul()}")
    for name, seconds in results.items():
        print(f"  {name:32s} {seconds * 1000:9.1f} ms")
    r = results
    print(f"  ratio ours / transformers sdpa         {r['ours forward'] / r['transformers sdpa']:.3f}  (target <= 1.05)")
    print(f"  ratio ours with F.linear / sdpa        {r['ours forward, F.linear'] / r['transformers sdpa']:.3f}")
    print(f"  ratio ours / transformers eager        {r['ours forward'] / r['transformers eager']:.3f}")
    print(f"  ratio run_with_cache / ours forward    {r['ours run_with_cache'] / r['ours forward']:.3f}  (target <= 1.25)")
    print(f"  ratio ours / TransformerLens (cache)   "
          f"{r['ours run_with_cache'] / r['TransformerLens run_with_cache']:.3f}  (target < 1)")


def with_aten(fn):
    with using_cpu_matmul("aten"):
        return fn()


if __name__ == "__main__":
    main()
