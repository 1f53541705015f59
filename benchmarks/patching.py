"""A full head-patching sweep (every head's output, all positions) against TransformerLens's
`get_act_patch_attn_head_out_all_pos` on the same weights and prompts.

Ours batches several patched runs into one forward, starts each run at the patched layer (the
corrupted run below it is shared), and unembeds only the last position when the metric reads
only that. TransformerLens runs one full forward per head. Both are timed end to end, including
caching the clean run; the results are checked to agree.

Models: "gpt2" (a random GPT-2-config model, sizes set by the flags; TransformerLens loads the
same weights) or "smollm2-135m-instruct" (real weights; IOI prompts).

Usage: python benchmarks/patching.py [--model gpt2] [--threads 1] [--prompts 8] [--length 16]
                                     [--layers 4] [--d-model 256] [--heads 8] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformer_lens.patching as tlp  # noqa: E402

import harness  # noqa: E402
from probes import circuits as C  # noqa: E402


def gpt2_pair(args):
    import transformers as tf
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    torch.manual_seed(0)
    hf = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=args.d_model, n_layer=args.layers, n_head=args.heads,
                                          vocab_size=50257, n_positions=256)).eval()
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head, d_mlp=4 * c.n_embd,
        d_vocab=c.vocab_size, n_ctx=c.n_positions, act_fn="gelu_new", normalization_type="LN",
        eps=c.layer_norm_epsilon, positional_embedding_type="standard", default_prepend_bos=False)
    tl = HookedTransformer(cfg)
    tl.load_state_dict(convert_gpt2_weights(hf, cfg), strict=False)
    ours = harness.load(hf).eval()
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, c.vocab_size, (args.prompts, args.length), generator=gen)
    corrupted = clean.clone()
    corrupted[:, args.length // 3] = torch.randint(0, c.vocab_size, (args.prompts,), generator=gen)
    answers = torch.randint(0, c.vocab_size, (args.prompts, 2), generator=gen)
    return ours, tl.eval(), clean, corrupted, answers, f"random GPT-2 config ({args.layers} layers x {args.heads} heads, d_model {args.d_model}, vocab 50257)"


def smollm2_pair(args):
    from benchmarks.forward import transformer_lens_copy
    from harness import zoo

    ours = harness.load(args.model).eval()
    tl = transformer_lens_copy(zoo.resolve(args.model))
    prompts = C.ioi(ours, n=args.prompts)
    return ours, tl, prompts.clean, prompts.corrupted, prompts.answers, f"{args.model} (IOI prompts)"


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=None, help="our patched runs per forward")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ours, tl, clean, corrupted, answers, what = (gpt2_pair if args.model == "gpt2" else smollm2_pair)(args)
    metric = C.logit_diff(answers)  # reads the last position only

    def full_logits_metric(logits):  # the same numbers, but forces the full logits everywhere
        return metric(logits)

    def tl_sweep():
        with torch.no_grad():
            _, clean_cache = tl.run_with_cache(clean)
            return tlp.get_act_patch_attn_head_out_all_pos(tl, corrupted, clean_cache, metric)

    n_heads = ours.cfg.n_layers * ours.cfg.n_heads
    results = {}
    results["TransformerLens"] = timed(tl_sweep, args.repeats)
    results["ours"] = timed(lambda: C.patch_heads_all_pos(ours, clean, corrupted, metric, args.batch_size), args.repeats)
    results["ours, full logits"] = timed(
        lambda: C.patch_heads_all_pos(ours, clean, corrupted, full_logits_metric, args.batch_size), args.repeats)
    results["ours, unbatched"] = timed(
        lambda: C.patch_heads_all_pos(ours, clean, corrupted, metric, batch_size=1), args.repeats)
    reference = results["TransformerLens"][1]
    for name, (_, values) in results.items():
        diff = (values - reference.cpu()).abs().max().item()
        assert diff < 1e-3, f"{name} disagrees with TransformerLens by {diff}"

    print(f"head-patching sweep (all positions): {what}")
    print(f"  {n_heads} heads, {clean.shape[0]} prompts x {clean.shape[1]} tokens, fp32, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}; results agree to 1e-3")
    tl_s = results["TransformerLens"][0]
    for name, (seconds, _) in results.items():
        print(f"  {name:22s} {seconds:8.2f} s   ratio to TransformerLens {seconds / tl_s:6.3f}")
    print(f"  target: ours faster (ratio < 1): {'met' if results['ours'][0] < tl_s else 'NOT met'}")


if __name__ == "__main__":
    main()
