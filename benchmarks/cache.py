"""Caching throughput vs a plain forward over the same batches, and peak RSS for N and 4N tokens.

    python -m benchmarks.cache [--threads 1] [--tokens 65536] [--model DIR]
Runs each measurement in a fresh subprocess (peak RSS is per process). Prints a table.
"""
import argparse, itertools, json, os, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path

import torch

HOOK = "blocks.2.hook_resid_post"


def build_model(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from harness.data import stdlib_docs
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(itertools.islice(stdlib_docs.documents(), 2000),
                            trainer=trainers.BpeTrainer(vocab_size=4096, special_tokens=["<unk>", "<bos>", "<eos>"], show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=4, max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(folder)


def child(mode, model_dir, tokens, out, ctx, bs):
    import harness
    from harness.caching import cache_activations
    from harness.caching.hooks import stop_layer
    from harness.data import pack
    model = harness.load(model_dir)
    if mode == "cache":
        t = time.perf_counter()
        cache_activations(model, [HOOK], "stdlib-docs", tokens, out, context_length=ctx, batch_size=bs, shard_mb=16, progress=False)
        dt = time.perf_counter() - t
    else:  # the same batches, pre-tokenised, through a plain forward that stops where caching stops
        n = -(-tokens // ctx)
        ctxs = torch.from_numpy(__import__("numpy").stack(list(itertools.islice(pack("stdlib-docs", model.tokenizer, ctx, seed=0), n)))).long()
        stop = stop_layer([HOOK], model.cfg.n_layers)
        t = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, n, bs):
                model(ctxs[i:i + bs], stop_at_layer=stop)
        dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "tokens": tokens, "seconds": dt, "tok_s": tokens / dt, "peak_rss_mb": rss}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--bs", type=int, default=8)
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        return child(args.child[0], args.child[1], args.tokens, args.child[2], args.ctx, args.bs)
    work = Path(tempfile.mkdtemp())
    if Path("/tmp/cw/benchmodel").is_dir():
        shutil.copytree("/tmp/cw/benchmodel", work / "model")
    else:
        build_model(work / "model")
    rows = []
    for mode, n in [("forward", args.tokens), ("cache", args.tokens), ("cache", 4 * args.tokens)]:
        out = work / f"cache-{n}"
        shutil.rmtree(out, ignore_errors=True)
        res = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--tokens", str(n), "--ctx", str(args.ctx),
                              "--bs", str(args.bs), "--child", mode, str(work / "model"), str(out)], capture_output=True, text=True)
        if res.returncode:
            sys.exit(res.stderr[-3000:])
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    for r in rows:
        print(f"{r['mode']:8s} tokens={r['tokens']:8d}  {r['tok_s']:10.0f} tok/s  peak RSS {r['peak_rss_mb']:7.0f} MB")
    print(f"threads={args.threads} model=llama d256 L4 vocab4096 ctx={args.ctx} batch={args.bs} hook={HOOK}")
    print(f"cache/forward throughput ratio: {rows[1]['tok_s'] / rows[0]['tok_s']:.3f} (target >= 0.85)")
    print(f"peak RSS 4N / N: {rows[2]['peak_rss_mb'] / rows[1]['peak_rss_mb']:.3f} (target <= 1.10)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
