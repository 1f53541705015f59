"""Activation caching: correctness against a direct forward, resume after a real kill -9,
2-rank torchrun equality, SAELens training from the cache, and bad input.

The model is a tiny random Llama saved as an HF folder and loaded with harness.load (HookedLM),
with a small BPE tokenizer (adds BOS) trained on the stdlib-docs corpus.
"""

import errno
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import harness
from harness.caching import CachedActivations, cache_activations, resolve_hooks, to_saelens
from harness.caching import shards as shards_mod
from harness.caching.hooks import stop_layer
from harness.data import CorpusError, stdlib_docs
from harness.errors import HookNameError, RunError

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
HOOKS = ["blocks.*.hook_resid_post", "blocks.0.mlp.hook_post"]
JOB = dict(context_length=32, batch_size=4, shard_contexts=8, seed=7)  # 2048 tokens -> 64 contexts, 8 shards
TOKENS = 2048


def _env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false", **extra}


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<bos>", "<eos>"], show_progress=False)
    tok.train_from_iterator(itertools.islice(stdlib_docs.documents(), 200), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                            unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(llama_dir):
    return harness.load(llama_dir)


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    """An uninterrupted single-process run that the other runs must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("ref") / "cache"
    cache_activations(model, HOOKS, "stdlib-docs", TOKENS, out, progress=False, **JOB)
    return out


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard_*.safetensors"))}


def assert_same_cache(a: Path, b: Path):
    sa, sb = shard_bytes(a), shard_bytes(b)
    assert list(sa) == list(sb) and len(sa) == 8
    assert all(sa[k] == sb[k] for k in sa), [k for k in sa if sa[k] != sb[k]]
    assert CachedActivations(a).job == CachedActivations(b).job
    assert not [p for p in b.iterdir() if p.name.startswith(".")]  # no temporaries left


# -- hooks --------------------------------------------------------------------------------------

def test_hook_patterns(model):
    assert resolve_hooks(model, "blocks.1.hook_resid_post") == ["blocks.1.hook_resid_post"]
    assert resolve_hooks(model, ["blocks.*.hook_resid_post", "blocks.1.hook_resid_post"]) == [
        "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    with pytest.raises(HookNameError, match="nearest: blocks.0.hook_resid_post"):
        resolve_hooks(model, ["blocks.0.hook_resid_pots"])
    with pytest.raises(HookNameError, match="matches no hook"):
        resolve_hooks(model, ["blocks.*.hook_nothing"])
    assert stop_layer(["blocks.0.hook_resid_post", "hook_embed"], 2) == 1
    assert stop_layer(["blocks.1.hook_resid_post"], 2) is None
    assert stop_layer(["ln_final.hook_normalized"], 2) is None


# -- the cache ----------------------------------------------------------------------------------

def test_cache_is_the_models_activations(model, reference):
    cache = CachedActivations(reference)
    m = cache.manifest
    assert m["status"] == "complete" and m["kind"] == "cache" and len(m["artifacts"]) == 8
    job = cache.job
    assert job["hooks"] == ["blocks.0.mlp.hook_post", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert job["model"]["weights_sha256"] and job["dtype"] == "float32" and job["context_length"] == 32
    assert job["corpus"]["name"] == "stdlib-docs" and job["seed"] == 7 and job["prepend_bos"] is True
    assert cache.n_contexts == 64 and cache.n_shards == 8
    ids = cache.token_ids()
    assert ids.shape == (64, 32) and ids.dtype == torch.int32 and (ids[:, 0] == model.tokenizer.bos_token_id).all()
    # Shard 3 holds exactly what a direct forward of its tokens gives (same batches: bitwise).
    tokens = cache.token_ids(3).long()
    with torch.inference_mode():
        _, direct = model.run_with_cache(tokens[:4], names_filter=job["hooks"])
    for hook in job["hooks"]:
        assert torch.equal(cache.activations(hook, 3)[:4], direct[hook])
    assert cache.activations("blocks.0.mlp.hook_post", 0).shape == (8, 32, 64)
    # Random batches and one shuffled epoch over every token row exactly once.
    g = torch.Generator().manual_seed(0)
    assert cache.random_batch("blocks.1.hook_resid_post", 100, generator=g).shape == (100, 32)
    epoch = torch.cat(list(cache.batches("blocks.1.hook_resid_post", 256, seed=1)))
    every = torch.cat([cache.activations("blocks.1.hook_resid_post", s).reshape(-1, 32) for s in range(8)])
    assert epoch.shape == every.shape == (2048, 32)
    assert torch.equal(epoch.sum(0), every.sum(0)) or torch.allclose(epoch.sum(0), every.sum(0), atol=1e-4)
    assert not torch.equal(epoch, every)  # shuffled
    stream = list(itertools.islice(cache.stream("blocks.1.hook_resid_post", 256, seed=1), 12))  # 1.5 epochs
    assert torch.equal(torch.cat(stream[:8]), epoch) and not torch.equal(stream[8], stream[0])
    with pytest.raises(HookNameError, match="not in this cache"):
        cache.activations("blocks.0.hook_resid_pre", 0)


def test_bfloat16_cache_and_resume_is_a_noop(model, reference, tmp_path):
    out = tmp_path / "bf16"
    cache_activations(model, HOOKS, "stdlib-docs", 512, out, dtype="bfloat16", progress=False, **JOB)
    bf = CachedActivations(out)
    assert bf.activations("blocks.1.hook_resid_post", 0).dtype == torch.bfloat16
    with torch.inference_mode():
        _, direct = model.run_with_cache(bf.token_ids(1)[:4].long(), names_filter=["blocks.1.hook_resid_post"])
    assert torch.equal(bf.activations("blocks.1.hook_resid_post", 1)[:4],
                       direct["blocks.1.hook_resid_post"].to(torch.bfloat16))
    before = shard_bytes(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*")}
    cache_activations(model, HOOKS, "stdlib-docs", 512, out, dtype="bfloat16", progress=False, **JOB)
    assert shard_bytes(out) == before and mtimes == {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*")}


KILL_SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)
import harness
from harness.caching import cache_activations
model = harness.load(sys.argv[1])
forward = model.run_with_cache
def slow(*a, **k):  # slow the job down so that the kill lands in the middle of it
    time.sleep(0.15)
    return forward(*a, **k)
model.run_with_cache = slow
cache_activations(model, {hooks!r}, "stdlib-docs", {tokens}, sys.argv[2], progress=False, **{job!r})
"""


def test_resume_after_kill_9_is_bit_identical(model, llama_dir, reference, tmp_path):
    out = tmp_path / "killed"
    script = KILL_SCRIPT.format(hooks=HOOKS, tokens=TOKENS, job=JOB)
    proc = subprocess.Popen([sys.executable, "-c", script, str(llama_dir), str(out)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while not (out / shards_mod.shard_name(2)).exists():
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.time() < deadline, "the job never wrote its third shard"
        time.sleep(0.02)
    time.sleep(0.1)  # land somewhere inside the next shard
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = sorted(p.name for p in out.glob("shard_*.safetensors"))
    assert 3 <= len(done) < 8, done  # killed mid-run
    assert CachedActivations(out, allow_incomplete=True).manifest["status"] == "running"
    with pytest.raises(RunError, match="unfinished"):
        CachedActivations(out)
    for name in done:  # whatever is there is whole
        assert shards_mod.map_shard(out / name)["token_ids"].shape == (8, 32)
    cache_activations(model, HOOKS, "stdlib-docs", TOKENS, out, progress=False, **JOB)  # the same job again
    assert_same_cache(reference, out)


def test_two_ranks_write_the_single_process_cache(llama_dir, reference, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "apps", "cache", "--model", str(llama_dir), "--hooks", *HOOKS, "--corpus", "stdlib-docs",
           "--tokens", str(TOKENS), "--out", str(out), "--context-length", "32", "--batch-size", "4",
           "--shard-contexts", "8", "--seed", "7", "--no-progress"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_cache(reference, out)
    assert CachedActivations(out).manifest["metrics"]["world_size"] == 2


def test_saelens_trains_from_the_cache(model, reference, tmp_path):
    from datasets import Dataset
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, StandardTrainingSAEConfig
    from sae_lens.config import LoggingConfig

    hook = "blocks.0.hook_resid_post"
    cache = CachedActivations(reference)
    exported = to_saelens(cache, hook, tmp_path / "saelens")
    cfg = LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(d_in=32, d_sae=64, l1_coefficient=1.0), model_name="tiny-llama",
        hook_name=hook, dataset_path="unused", is_dataset_tokenized=True, context_size=32,
        use_cached_activations=True, cached_activations_path=str(exported), n_batches_in_buffer=8,
        store_batch_size_prompts=8, training_tokens=5 * 64, train_batch_size_tokens=64, device="cpu",
        prepend_bos=False, logger=LoggingConfig(log_to_wandb=False), n_checkpoints=0, save_final_checkpoint=False,
        n_eval_batches=1, eval_batch_size_prompts=2, dtype="float32", verbose=False, n_batches_for_norm_estimate=1,
        output_path=str(tmp_path / "sae"), checkpoint_path=str(tmp_path / "checkpoints"))  # never ./output
    # The token dataset only feeds SAELens's evaluator; the training activations come from the cache.
    tokens = Dataset.from_dict({"input_ids": cache.token_ids().long().numpy()})
    runner = LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=tokens)
    acts, ids = runner.activations_store.get_raw_llm_batch()
    assert torch.equal(acts, torch.cat([cache.activations(hook, 0)]).reshape(-1, 32))
    assert torch.equal(ids, cache.token_ids(0).reshape(-1).to(ids.dtype))
    runner.activations_store.current_row_idx = 0
    before = runner.sae.W_enc.detach().clone()
    sae = runner.run()
    assert not torch.equal(before, sae.W_enc.detach())  # it trained


# -- bad input ----------------------------------------------------------------------------------

def test_bad_input(model, reference, tmp_path):
    with pytest.raises(HookNameError, match="nearest: blocks.1.hook_resid_post"):
        cache_activations(model, ["blocks.1.hook_resid_psot"], "stdlib-docs", 64, tmp_path / "a", progress=False)
    with pytest.raises(CorpusError, match="not found"):
        cache_activations(model, HOOKS, tmp_path / "missing.jsonl", 64, tmp_path / "b", progress=False)
    with pytest.raises(CorpusError, match=r"gives only 10 contexts of 16 tokens; ask for at most 160"):
        cache_activations(model, HOOKS, ["a few words " * 20], 1000, tmp_path / "c", context_length=16,
                          batch_size=1, shard_contexts=1, prepend_bos=False, heldout_fraction=0, progress=False)
    # A folder holding another job's cache is refused and left untouched.
    before = shard_bytes(reference)
    with pytest.raises(RunError, match=r"different cache job \(differs in: seed\)"):
        cache_activations(model, HOOKS, "stdlib-docs", TOKENS, reference, progress=False, **{**JOB, "seed": 8})
    with pytest.raises(RunError, match="differs in: hooks"):
        cache_activations(model, ["blocks.0.hook_resid_post"], "stdlib-docs", TOKENS, reference, progress=False, **JOB)
    assert shard_bytes(reference) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not empty"):
        cache_activations(model, HOOKS, "stdlib-docs", 64, tmp_path / "other", progress=False)


def test_cli_reports_bad_input_in_one_line(llama_dir, tmp_path, capsys):
    from apps.cli import main

    base = ["cache", "--model", str(llama_dir), "--corpus", "stdlib-docs", "--tokens", "1k", "--no-progress"]
    for args, message in [(["--hooks", "blocks.0.hook_resid_pots", "--out", str(tmp_path / "x")],
                           "nearest: blocks.0.hook_resid_post"),
                          (["--hooks", "blocks.0.hook_resid_post", "--corpus", str(tmp_path / "nope"), "--out",
                            str(tmp_path / "y")], "not found")]:
        with pytest.raises(SystemExit) as exit_:
            main(base + args)
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and err.startswith("harness: error:") and "\n" not in err and message in err


def test_disk_full_leaves_nothing_partial_then_resumes(model, reference, tmp_path, monkeypatch):
    out = tmp_path / "full"
    real_save = shards_mod._save
    calls = []

    def full_disk(tensors, path):
        calls.append(path)
        if len(calls) == 2:  # the second shard runs out of space half way through
            Path(path).write_bytes(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(tensors, path)

    monkeypatch.setattr(shards_mod, "_save", full_disk)
    with pytest.raises(RunError, match="disk full while writing shard_00001"):
        cache_activations(model, HOOKS, "stdlib-docs", TOKENS, out, progress=False, **JOB)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard_00000.safetensors"]
    monkeypatch.setattr(shards_mod, "_save", real_save)
    cache_activations(model, HOOKS, "stdlib-docs", TOKENS, out, progress=False, **JOB)
    assert_same_cache(reference, out)
