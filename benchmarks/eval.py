"""Loglikelihood throughput: our lm-eval adapter (HookedLMEval) vs lm-eval's own HF model (HFLM)
on the same weights, for a multiple-choice workload with long shared contexts.

    python benchmarks/eval.py                       # smollm2-135m-instruct from the zoo
    python benchmarks/eval.py --model tiny          # a small random Llama, no zoo needed
    python benchmarks/eval.py --questions 16 --context-tokens 400 --threads 2

Each question is one long context (a held-out stdlib docstring passage plus a question) with
four short answer continuations, the shape of MMLU/ARC-style tasks with passages. Both sides get
the same Instances in one process; the script prints threads, sizes, requests/s and the ratio,
and checks that the log-likelihoods agree.
"""

from __future__ import annotations

import argparse
import os
import time

for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)

import torch  # noqa: E402


def load_pair(name: str):
    """(HF model, HookedLM, tokenizer, description) with identical weights."""
    import harness

    if name == "tiny":
        from tests.evals import tiny

        tok = tiny.tokenizer()
        hf = tiny.hf_llama(tok, n_layers=4)
        return hf, harness.load(hf, tokenizer=tok), tok, "random Llama (4 layers, d_model 32) with a 400-token BPE"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness import zoo

    folder = zoo.resolve(name)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    return hf, harness.load(folder), tok, f"{name} ({sum(p.numel() for p in hf.parameters()) / 1e6:.0f}M params, fp32)"


def build_requests(tok, questions: int, context_tokens: int):
    from lm_eval.api.instance import Instance

    from harness.data.stdlib_docs import documents

    docs = iter(d for d in documents() if len(d) > 400)
    requests = []
    for q in range(questions):
        passage = ""
        while len(tok.encode(passage)) < context_tokens:
            passage += next(docs) + "\n\n"
        passage = tok.decode(tok.encode(passage)[:context_tokens])
        context = f"{passage}\nQuestion {q}: Which word best describes the passage above?\nAnswer:"
        for i, choice in enumerate([" documentation", " a recipe", " poetry", " a legal contract"]):
            requests.append(Instance("loglikelihood", {}, (context, choice), i))
    return requests


def timed(fn, requests, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(requests, disable_tqdm=True)
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="zoo name, or 'tiny'")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--context-tokens", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=8, help="HFLM: requests per batch; ours: contexts per batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from lm_eval.models.huggingface import HFLM

    from evals.lm_adapter import HookedLMEval

    hf, hooked, tok, description = load_pair(args.model)
    requests = build_requests(tok, args.questions, args.context_tokens)
    ours = HookedLMEval(hooked, batch_size=args.batch_size)
    ref = HFLM(pretrained=hf, tokenizer=tok, batch_size=args.batch_size)
    ours.loglikelihood(requests[:4], disable_tqdm=True)  # warm-up
    ref.loglikelihood(requests[:4], disable_tqdm=True)

    t_ref, out_ref = timed(ref.loglikelihood, requests, args.repeats)
    t_ours, out_ours = timed(ours.loglikelihood, requests, args.repeats)
    err = max(abs(a[0] - b[0]) for a, b in zip(out_ours, out_ref))
    same_greedy = all(a[1] == b[1] for a, b in zip(out_ours, out_ref))

    print(f"model: {description}")
    print(f"torch threads: {torch.get_num_threads()}, device: cpu, dtype: float32")
    print(f"workload: {args.questions} questions x 4 choices = {len(requests)} loglikelihood requests, "
          f"context ~{args.context_tokens + 15} tokens, batch size {args.batch_size}, best of {args.repeats}")
    print(f"lm-eval HFLM:      {t_ref:8.2f} s  {len(requests) / t_ref:8.2f} requests/s")
    print(f"HookedLMEval:      {t_ours:8.2f} s  {len(requests) / t_ours:8.2f} requests/s")
    print(f"ratio (ours / HFLM throughput): {t_ref / t_ours:.2f}x  (target >= 1.5)")
    print(f"max |loglikelihood difference|: {err:.2e}; greedy flags identical: {same_greedy}")


if __name__ == "__main__":
    main()
