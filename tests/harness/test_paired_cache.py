"""The paired (base/aligned) activation cache: both models' activations on the same tokens, a
fixed mix of chat-formatted prompts and corpus text, flags and norms for the sink/outlier rules,
resume after a real kill -9 to the bytes of an uninterrupted run, and bad input in one line."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.caching import PairedActivations, cache_pair
from harness.caching import shards as shards_mod
from harness.caching.outliers import FLAG_CHAT, FLAG_POSITION, FLAG_SPECIAL
from harness.caching.paired import is_chat
from harness.compat import PairMismatchError
from harness.errors import HarnessError, HookNameError, RunError
from tests.probes import tiny
from tests.probes.tiny_pair import PROMPTS, pair

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]
JOB = dict(context_length=32, batch_size=4, shard_contexts=8, seed=3, chat_fraction=0.25)
TOKENS = 2048  # 64 contexts, 8 shards, 16 of them chat


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the subprocesses run on one thread too: the same floating point
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models():
    return pair()


@pytest.fixture(scope="module")
def reference(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("paired") / "ref"
    cache_pair(*models, HOOKS, "stdlib-docs", TOKENS, out, prompts=PROMPTS, progress=False, **JOB)
    return out


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard_*.safetensors"))}


def test_both_models_on_the_same_tokens_with_flags_and_norms(models, reference):
    base, aligned = models
    p = PairedActivations(reference)
    m = p.manifest
    assert m["kind"] == "paired-cache" and m["status"] == "complete" and len(m["artifacts"]) == 8
    assert set(m["models"]) == {"base", "aligned"} and m["models"]["aligned"]["name"] == "tiny-aligned"
    assert p.n_contexts == 64 and p.hooks == HOOKS and p.job["chat"]["contexts"] == 16
    tokens = p.token_ids(2).long()
    for role, model in (("base", base), ("aligned", aligned)):
        with torch.inference_mode():
            _, direct = model.run_with_cache(tokens[:4], names_filter=HOOKS)
        for h in HOOKS:
            assert torch.equal(p.activations(f"{role}/{h}", 2)[:4], direct[h])  # same batches: bitwise
            assert torch.allclose(p.norms(role, h, 2)[:4], direct[h].norm(dim=-1))
    assert not torch.equal(p.activations(f"base/{HOOKS[0]}", 2), p.activations(f"aligned/{HOOKS[0]}", 2))
    # chat contexts where the interleaving puts them, rendered with the chat template; text elsewhere
    ids, flags = p.token_ids(), torch.cat([p.flags(s) for s in range(p.n_shards)])
    chat = [is_chat(i, 0.25) for i in range(64)]
    assert [bool(f) for f in (flags[:, 1] & FLAG_CHAT)] == chat and sum(chat) == 16
    chat_text = base.tokenizer.decode(ids[chat.index(True)].tolist())
    assert "<|user|>" in chat_text and "<|assistant|>" in chat_text
    text = base.tokenizer.decode(ids[chat.index(False)].tolist())
    assert "<|user|>" not in text
    # the first position is flagged (an attention sink), and so is every special token
    assert bool((flags[:, 0] & FLAG_POSITION).all()) and not bool((flags[:, 1:] & FLAG_POSITION).any())
    special = torch.isin(ids, torch.tensor(p.job["flags"]["special_tokens"], dtype=ids.dtype))
    assert torch.equal((flags & FLAG_SPECIAL).bool(), special) and special.any()
    # one model's rows read like any cache
    assert next(p.batches(f"aligned/{HOOKS[1]}", 100)).shape == (100, 32)


def test_exclusion_leaves_out_sinks_specials_and_planted_outliers(models, tmp_path):
    base, aligned = models
    loud = tiny.tokenizer().convert_tokens_to_ids("Ġis")

    def plant(act, hook):  # massive activations on one token in the aligned model only
        act[tokens_now[0] == loud] *= 50
        return act

    tokens_now = []
    forward = aligned.forward

    def remember(tokens, *a, **kw):
        tokens_now[:] = [tokens.cpu()]
        return forward(tokens, *a, **kw)

    aligned.forward = remember
    aligned.add_hook("blocks.0.hook_resid_post", plant, is_permanent=True)
    try:
        out = cache_pair(base, aligned, HOOKS, "stdlib-docs", 1024, tmp_path / "loud", prompts=PROMPTS,
                         progress=False, **JOB)
    finally:
        del aligned.forward
        aligned.reset_hooks(including_permanent=True)
    p = PairedActivations(out)
    ex = p.exclusion()
    ids = p.token_ids()
    masks = {k: torch.cat([ex.masks(p, s)[k] for s in range(p.n_shards)]) for k in ("position", "special", "norm", "kept")}
    planted = (ids == loud)
    planted[:, 0] = False
    planted &= ~torch.isin(ids, torch.tensor(ex.special_tokens, dtype=ids.dtype))
    assert planted.any() and torch.equal(masks["norm"], planted)
    assert masks["position"][:, 0].all() and not masks["position"][:, 1:].any()
    counts = p.exclusion_counts(ex)
    assert counts == {k: int(m.sum()) for k, m in masks.items()} and sum(counts.values()) == ids.numel()
    assert set(ex.describe()["why"]) == {"position", "special", "norm"}
    kept = p.pair_rows(0, keep=ex.masks(p, 0)["kept"])
    assert kept.shape == (int(ex.masks(p, 0)["kept"].sum()), 2, 2, 32)
    bare = p.exclusion(position=False, special=False, norm_ratio=None)
    assert p.exclusion_counts(bare)["kept"] == ids.numel()


KILL_SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)
from harness.caching import cache_pair
from tests.probes.tiny_pair import PROMPTS, pair
base, aligned = pair()
forward = base.forward
def slow(*a, **k):  # slow the job down so that the kill lands in the middle of it
    time.sleep(0.1)
    return forward(*a, **k)
base.forward = slow
cache_pair(base, aligned, {hooks!r}, "stdlib-docs", {tokens}, sys.argv[1], prompts=PROMPTS, progress=False, **{job!r})
"""


def test_resume_after_kill_9_gives_the_bytes_of_an_uninterrupted_run(models, reference, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT.format(hooks=HOOKS, tokens=TOKENS, job=JOB), str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / shards_mod.shard_name(1)).exists():
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.time() < deadline, "the job never wrote its second shard"
        time.sleep(0.02)
    time.sleep(0.1)  # land inside the next shard
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in out.glob("shard_*.safetensors"))
    assert proc.returncode == -signal.SIGKILL and 2 <= len(done) < 8, done
    assert PairedActivations(out, allow_incomplete=True).manifest["status"] == "running"
    with pytest.raises(RunError, match="unfinished"):
        PairedActivations(out)
    cache_pair(*models, HOOKS, "stdlib-docs", TOKENS, out, prompts=PROMPTS, progress=False, **JOB)
    assert shard_bytes(out) == shard_bytes(reference)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert PairedActivations(out).manifest["resumed"] == 1


def test_bad_input_is_one_line(models, reference, tmp_path):
    base, aligned = models
    go = dict(progress=False, prompts=PROMPTS, **JOB)
    with pytest.raises(PairMismatchError, match="d_model 32 vs 48"):
        cache_pair(base, tiny.model(d_model=48), HOOKS, "stdlib-docs", 256, tmp_path / "a", **go)
    other_tok = tiny.model(tok=tiny.tokenizer(extra=" zebra giraffe"))
    with pytest.raises(PairMismatchError, match="same tokenizer"):
        cache_pair(base, other_tok, HOOKS, "stdlib-docs", 256, tmp_path / "b", **go)
    with pytest.raises(HookNameError, match=r"layer 7 is out of range: the model has 3 layers \(0..2\)"):
        cache_pair(base, aligned, ["blocks.7.hook_resid_post"], "stdlib-docs", 256, tmp_path / "c", **go)
    with pytest.raises(HookNameError, match="per-position"):
        cache_pair(base, aligned, ["blocks.0.attn.hook_pattern"], "stdlib-docs", 256, tmp_path / "d", **go)
    with pytest.raises(HarnessError, match="needs prompts"):
        cache_pair(base, aligned, HOOKS, "stdlib-docs", 256, tmp_path / "e", **{**go, "prompts": []})
    before = shard_bytes(reference)
    with pytest.raises(RunError, match=r"different paired-cache job \(differs in: chat.contexts, chat.fraction"):
        cache_pair(base, aligned, HOOKS, "stdlib-docs", TOKENS, reference, **{**go, "chat_fraction": 0.5})
    assert shard_bytes(reference) == before
    with pytest.raises(RunError, match="is not a paired activation cache"):
        PairedActivations(tmp_path)
    for folder in tmp_path.iterdir():  # bad input leaves no half-made cache behind
        assert not list(folder.glob("shard_*")), folder
