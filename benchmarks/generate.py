"""Greedy generation with a key/value cache: ours vs transformers' `generate` on the same weights.

    python -m benchmarks.generate [--threads 2] [--batch 1,4] [--prompt 64] [--new 32] [--pairs 8]

SmolLM2-135M from the zoo, fp32. Both sides decode exactly `--new` tokens (no early stop) from the
same random prompts; the script checks that they pick the same tokens, then prints tokens/s and
the ratio of times ours / transformers (below 1.0 means we are faster) as the median of
alternating pairs with a 95% bootstrap interval, with and without our CPU oneDNN matmul
(harness.models.linear). Every decoding step is a one-token forward, so this is the shape where
single-row matmuls, cache updates and per-step overhead dominate.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import harness  # noqa: E402
from benchmarks.timing import paired_ratio  # noqa: E402
from harness import zoo  # noqa: E402
from harness.models.linear import cpu_matmul, using_cpu_matmul  # noqa: E402

MODEL = "smollm2-135m-instruct"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", default="1,4", help="comma-separated batch sizes")
    parser.add_argument("--prompt", type=int, default=64, help="prompt length in tokens")
    parser.add_argument("--new", type=int, default=32, help="tokens to generate")
    parser.add_argument("--pairs", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ours = harness.load(MODEL)
    hf = AutoModelForCausalLM.from_pretrained(zoo.resolve(MODEL), dtype=torch.float32, attn_implementation="sdpa").eval()
    # No end-of-sequence token on either side, so both decode every step and pick the same tokens
    # (min_new_tokens would instead ban EOS in transformers, and the two would part at the first EOS).
    hf.generation_config.eos_token_id = None
    print(f"{MODEL}: fp32, torch {torch.__version__}, {torch.get_num_threads()} threads, prompt {args.prompt} tokens, "
          f"{args.new} new tokens, greedy, {args.pairs} pairs per ratio, our CPU matmul: {cpu_matmul()}")
    print(f"{'batch':>5s} {'transformers tok/s':>19s} {'ours tok/s':>11s} {'ratio [95% CI]':>20s} {'with F.linear':>20s}")
    for batch in (int(b) for b in args.batch.split(",")):
        prompt = torch.randint(0, ours.cfg.d_vocab, (batch, args.prompt), generator=torch.Generator().manual_seed(batch))

        def theirs():
            return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new,
                               do_sample=False, pad_token_id=0)

        def mine():
            return ours.generate(prompt, max_new_tokens=args.new, stop_at_eos=False, do_sample=False)

        with torch.inference_mode():
            ours_tokens, their_tokens = mine(), theirs()
            assert ours_tokens.shape == their_tokens.shape == (batch, args.prompt + args.new)
            same = (ours_tokens == their_tokens).float().mean().item()
            timed = paired_ratio(mine, theirs, repeats=args.pairs)
            with using_cpu_matmul("aten"):
                plain = paired_ratio(mine, theirs, repeats=args.pairs)
        tokens = batch * args.new
        print(f"{batch:5d} {tokens / timed['reference_s']:19.1f} {tokens / timed['ours_s']:11.1f} "
              f"{interval(timed):>20s} {interval(plain):>20s}   (tokens identical: {same:.0%})")


def interval(r: dict) -> str:
    return f"{r['ratio']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"


if __name__ == "__main__":
    main()
