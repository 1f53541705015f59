"""Mixture-of-experts forward: ours vs transformers on the same weights, batch and threads; and the
cost of caching every expert-level hook.

    .venv/bin/python -m benchmarks.moe [--threads 1] [--batch 4] [--seq 128] [--repeats 5]

Each family is a randomly initialised transformers model of a few layers (sizes printed), loaded
into the harness in memory. transformers runs its default experts implementation (grouped matmul
where torch has it) and SDPA attention.

Whole forward: `--pairs` back-to-back pairs of runs in alternating order; the ratio is the median
of the per-pair ratios ours / transformers (below 1.0 means we are faster) with a 95% bootstrap
interval, because both spend over 90% of the time in the same BLAS matmuls and the difference
sits inside run-to-run noise. MoE block and hook cost: medians of `repeats` interleaved runs.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers as tf  # noqa: E402

import harness  # noqa: E402
from benchmarks.timing import interleaved_medians, paired_ratio  # noqa: E402

D, LAYERS, HEADS, VOCAB = 512, 4, 8, 2000


def configs():
    common = dict(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  max_position_embeddings=1024, tie_word_embeddings=False)
    return {
        "mixtral (8 experts, top-2)": (tf.MixtralForCausalLM, tf.MixtralConfig(
            intermediate_size=1024, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2, **common)),
        "qwen3-moe (16 experts, top-4)": (tf.Qwen3MoeForCausalLM, tf.Qwen3MoeConfig(
            intermediate_size=1024, moe_intermediate_size=512, num_key_value_heads=2, head_dim=64, num_experts=16,
            num_experts_per_tok=4, norm_topk_prob=True, **common)),
        "deepseek-v3 (MLA, 16+1 experts, top-4, 4 groups)": (tf.DeepseekV3ForCausalLM, tf.DeepseekV3Config(
            intermediate_size=1024, moe_intermediate_size=512, num_key_value_heads=HEADS, n_routed_experts=16,
            num_experts_per_tok=4, n_group=4, topk_group=2, n_shared_experts=1, first_k_dense_replace=1,
            kv_lora_rank=128, q_lora_rank=192, qk_rope_head_dim=32, qk_nope_head_dim=64, v_head_dim=64, **common)),
    }


def medians_ms(fns: dict, repeats: int) -> dict[str, float]:
    """Median milliseconds of each function, timed in turn within every repeat."""
    return {name: seconds * 1e3 for name, seconds in interleaved_medians(fns, repeats=repeats).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=20, help="alternating pairs for the whole-forward ratio")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, transformers {tf.__version__}, torch threads {torch.get_num_threads()}, "
          f"batch {args.batch} x {args.seq} tokens, d_model {D}, {LAYERS} layers, fp32, median of {args.repeats}")
    tokens = torch.randint(0, VOCAB, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    x = torch.randn(args.batch, args.seq, D, generator=torch.Generator().manual_seed(1))
    rows = []
    for name, (cls, config) in configs().items():
        torch.manual_seed(0)
        config._attn_implementation = "sdpa"
        hf = cls(config).eval()
        ours = harness.load(hf)
        layer = LAYERS - 1  # a MoE layer in every family here
        with torch.no_grad():
            assert (hf(tokens).logits - ours(tokens)).abs().max().item() < 1e-3, name
            _, cache = ours.run_with_cache(tokens, names_filter=expert_hooks)
            whole = paired_ratio(lambda: ours(tokens), lambda: hf(tokens, use_cache=False), repeats=args.pairs)
            t = medians_ms({
                "ours": lambda: ours(tokens),
                "cached": lambda: ours.run_with_cache(tokens, names_filter=expert_hooks),
                "hf_block": lambda: hf.model.layers[layer].mlp(x),
                "ours_block": lambda: ours.blocks[layer].mlp(x),
            }, args.repeats)
        rows.append((name, whole, t, len(cache)))
        del hf, ours, cache

    print(f"\n{'model':48s} {'forward: transformers':>21s} {'ours':>7s} {'ratio [95% CI]':>18s} | "
          f"{'MoE block: transformers':>23s} {'ours':>6s} {'ratio':>5s} | {'ours + expert hooks cached':>26s} {'cost':>5s}")
    for name, whole, t, n_hooks in rows:
        interval = f"{whole['ratio']:.3f} [{whole['ci_low']:.2f}, {whole['ci_high']:.2f}]"
        print(f"{name:48s} {whole['reference_s'] * 1e3:18.1f} ms {whole['ours_s'] * 1e3:7.1f} {interval:>18s} | "
              f"{t['hf_block']:20.1f} ms {t['ours_block']:6.1f} {t['ours_block'] / t['hf_block']:5.2f} | "
              f"{t['cached']:11.1f} ms ({n_hooks:3d} hooks) {t['cached'] / t['ours']:4.2f}x")


def expert_hooks(name: str) -> bool:
    """Every MoE hook: router logits, choices, weights, shared experts, each expert's activations."""
    return ".mlp." in name and any(s in name for s in ("experts.", "hook_router", "hook_topk", "shared"))


if __name__ == "__main__":
    main()
