"""Mixture-of-experts forward: ours vs transformers on the same weights, batch and threads; and the
cost of caching every expert-level hook.

    .venv/bin/python -m benchmarks.moe [--threads 1] [--batch 4] [--seq 128] [--pairs 20]

Each family is a randomly initialised transformers model of a few layers (sizes printed), loaded
into the harness in memory. transformers runs its default experts implementation (grouped matmul
where torch has it) and SDPA attention.

Every figure is a ratio over `--pairs` back-to-back pairs of runs in alternating order: the median
of the per-pair ratios (below 1.0 means we are faster) with a 95% bootstrap interval. Whole
forward and MoE block are each given twice: as we run by default (float32 inference on CPU through
oneDNN's matmul, harness.models.linear) and with that turned off, where both sides run the same
MKL matmuls and differ only by noise. Hook cost: caching every expert-level hook vs no hooks.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers as tf  # noqa: E402

import harness  # noqa: E402
from benchmarks.timing import paired_ratio  # noqa: E402
from harness.models.linear import cpu_matmul, using_cpu_matmul  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=20, help="alternating pairs per ratio")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, transformers {tf.__version__}, torch threads {torch.get_num_threads()}, "
          f"batch {args.batch} x {args.seq} tokens, d_model {D}, {LAYERS} layers, fp32, {args.pairs} pairs per ratio, "
          f"our CPU matmul: {cpu_matmul()}")
    tokens = torch.randint(0, VOCAB, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    x = torch.randn(args.batch, args.seq, D, generator=torch.Generator().manual_seed(1))
    rows = [measure(name, cls, config, tokens, x, args.pairs) for name, (cls, config) in configs().items()]

    print(f"\n{'model':48s} | {'forward: transformers':>21s} {'ours':>6s} {'ratio [95% CI]':>18s} "
          f"{'with F.linear':>18s} | {'MoE block: transformers':>23s} {'ours':>5s} {'ratio [95% CI]':>18s} "
          f"{'with F.linear':>18s} | {'expert hooks cached':>27s}")
    for name, whole, whole_aten, block, block_aten, hooks, n_hooks in rows:
        print(f"{name:48s} | {whole['reference_s'] * 1e3:18.1f} ms {whole['ours_s'] * 1e3:6.1f} {interval(whole)} "
              f"{interval(whole_aten)} | {block['reference_s'] * 1e3:20.1f} ms {block['ours_s'] * 1e3:5.1f} "
              f"{interval(block)} {interval(block_aten)} | {n_hooks:3d} hooks {interval(hooks)}x")


def measure(name: str, cls, config, tokens: torch.Tensor, x: torch.Tensor, pairs: int) -> tuple:
    torch.manual_seed(0)
    config._attn_implementation = "sdpa"
    hf = cls(config).eval()
    ours = harness.load(hf)
    layer = LAYERS - 1  # a MoE layer in every family here
    with torch.no_grad():
        assert (hf(tokens).logits - ours(tokens)).abs().max().item() < 1e-3, name
        _, cache = ours.run_with_cache(tokens, names_filter=expert_hooks)
        hf_forward, hf_block = lambda: hf(tokens, use_cache=False), lambda: hf.model.layers[layer].mlp(x)
        ours_forward, ours_block = lambda: ours(tokens), lambda: ours.blocks[layer].mlp(x)
        whole = paired_ratio(ours_forward, hf_forward, repeats=pairs)
        block = paired_ratio(ours_block, hf_block, repeats=pairs)
        with using_cpu_matmul("aten"):
            whole_aten = paired_ratio(ours_forward, hf_forward, repeats=pairs)
            block_aten = paired_ratio(ours_block, hf_block, repeats=pairs)
        hooks = paired_ratio(lambda: ours.run_with_cache(tokens, names_filter=expert_hooks), ours_forward,
                             repeats=pairs)
    return name, whole, whole_aten, block, block_aten, hooks, len(cache)


def interval(r: dict) -> str:
    return f"{r['ratio']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]".rjust(18)


def expert_hooks(name: str) -> bool:
    """Every MoE hook: router logits, choices, weights, shared experts, each expert's activations."""
    return ".mlp." in name and any(s in name for s in ("experts.", "hook_router", "hook_topk", "shared"))


if __name__ == "__main__":
    main()
