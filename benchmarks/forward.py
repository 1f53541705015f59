"""Forward-pass speed of HookedLM on SmolLM2-135M against the reference implementations.

Prints, at fixed threads, batch and length:
  ours (no hooks)          vs transformers with sdpa and eager attention  (target <= 1.05 vs sdpa)
  ours with F.linear       the same, with our CPU oneDNN matmul turned off (harness.models.linear)
  ours run_with_cache      of every hook_resid_post vs our plain forward  (target <= 1.25)
  ours run_with_cache      vs TransformerLens's HookedTransformer run_with_cache, same weights (target: faster)

Then the families without a packaged checkpoint (OLMo 2, GPT-OSS): a randomly initialised
transformers model of a few layers (sizes printed), loaded into the harness in memory, ours vs
transformers on the same weights and tokens, as the median of --pairs alternating pairs with a 95%
bootstrap interval (benchmarks.timing.paired_ratio), with our oneDNN matmul on and off.
transformers runs OLMo 2 with sdpa and GPT-OSS with eager attention (its only kind on CPU: sinks).

Usage: python -m benchmarks.forward [--threads 2] [--batch 4] [--length 256] [--repeats 5] [--pairs 10]
       [--skip-smollm2] [--skip-families]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import harness  # noqa: E402
from benchmarks.timing import interleaved_medians, paired_ratio  # noqa: E402
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
    parser.add_argument("--pairs", type=int, default=10, help="alternating pairs per family ratio")
    parser.add_argument("--skip-smollm2", action="store_true", help="only the families without a checkpoint")
    parser.add_argument("--skip-families", action="store_true", help="only SmolLM2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.skip_smollm2:
        smollm2(args)
    if not args.skip_families:
        families(args)


def smollm2(args) -> None:
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


FAMILY_SIZE = dict(vocab_size=2000, hidden_size=512, num_hidden_layers=4, num_attention_heads=8,
                   num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False)


def family_models():
    """name -> (transformers class, config, attention implementation)."""
    import transformers as tf

    return {
        "olmo2 (post-norms, QK-norm)": (tf.Olmo2ForCausalLM, tf.Olmo2Config(intermediate_size=1024, **FAMILY_SIZE),
                                         "sdpa"),
        "gpt_oss (sinks, sliding/full, 8 experts top-2)": (tf.GptOssForCausalLM, tf.GptOssConfig(
            intermediate_size=512, head_dim=64, num_local_experts=8, num_experts_per_tok=2, sliding_window=128,
            rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 8.0, "beta_fast": 32.0,
                             "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 128},
            **FAMILY_SIZE), "eager"),
    }


def families(args) -> None:
    tokens = torch.randint(0, FAMILY_SIZE["vocab_size"], (args.batch, args.length),
                           generator=torch.Generator().manual_seed(0))
    print(f"\nfamilies without a checkpoint: random init, d_model {FAMILY_SIZE['hidden_size']}, "
          f"{FAMILY_SIZE['num_hidden_layers']} layers, batch {args.batch} x {args.length} tokens, fp32, "
          f"{torch.get_num_threads()} threads, {args.pairs} alternating pairs per ratio")
    print(f"  {'family':48s} {'transformers':>13s} {'ours':>9s} {'ours / transformers [95% CI]':>29s} "
          f"{'same, F.linear':>22s}")
    for name, (cls, config, attn) in family_models().items():
        torch.manual_seed(0)
        config._attn_implementation = attn
        hf = cls(config).eval()
        ours = harness.load(hf)
        with torch.inference_mode():
            assert (hf(tokens).logits - ours(tokens)).abs().max().item() < 1e-3, name  # same computation
            fast = paired_ratio(lambda: ours(tokens), lambda: hf(tokens, use_cache=False), repeats=args.pairs)
            with using_cpu_matmul("aten"):
                aten = paired_ratio(lambda: ours(tokens), lambda: hf(tokens, use_cache=False), repeats=args.pairs)
        print(f"  {name:48s} {fast['reference_s'] * 1e3:10.1f} ms {fast['ours_s'] * 1e3:6.1f} ms "
              f"{_interval(fast):>29s} {_interval(aten):>22s}")


def _interval(r: dict) -> str:
    return f"{r['ratio']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"


def with_aten(fn):
    with using_cpu_matmul("aten"):
        return fn()


if __name__ == "__main__":
    main()
