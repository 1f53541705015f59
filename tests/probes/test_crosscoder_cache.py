"""Crosscoder training from a paired activation cache: the source's contract (the same rows for
the same step, sinks and outliers left out and accounted for), training that learns, resume after
a real kill -9 to the weights of an uninterrupted run, and bad input in one line."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.caching import PairedActivations, cache_pair
from probes.crosscoder import Crosscoder, CrosscoderConfig, CrosscoderError, TrainConfig
from probes.crosscoder.cached import CachedPairSource
from probes.crosscoder.evaluate import evaluate
from probes.crosscoder.train import train_crosscoder
from tests.probes.tiny_pair import PROMPTS, pair

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]
CFG = dict(d_in=32, d_latent=64, n_layers=2, loss="batchtopk", k=8, dead_after=20, hooks=tuple(HOOKS))
TRAIN = dict(steps=60, batch_size=64, lr=3e-3, save_every=10, log_every=10, show_progress=False)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls, and the subprocess runs on one thread: the same floating point
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("cc-cache") / "pair"
    cache_pair(*pair(), HOOKS, "stdlib-docs", 4096, out, prompts=PROMPTS, context_length=32, batch_size=8,
               shard_contexts=16, progress=False)
    return out


def test_the_same_rows_for_the_same_step_without_sinks_or_outliers(cache):
    source = CachedPairSource(cache, batch_size=64)
    assert (source.n_models, source.n_layers, source.d_in) == (2, 2, 32) and source.steps_per_block == 8
    x = source.batch(3, 64)
    assert x.shape == (64, 2, 2, 32) and torch.equal(x, CachedPairSource(cache, batch_size=64).batch(3, 64))
    assert not torch.equal(x, source.batch(4, 64))
    # every row comes from the kept positions of its block: none is a first position or special token
    p = PairedActivations(cache)
    shards = source._shards_of(0)
    kept = torch.cat([p.pair_rows(s, HOOKS, source.exclusion.masks(p, s)["kept"]) for s in shards])
    dropped = torch.cat([p.pair_rows(s, HOOKS, ~source.exclusion.masks(p, s)["kept"]) for s in shards])
    keys = {tuple(r.flatten()[:4].tolist()) for r in kept}
    assert all(tuple(r.flatten()[:4].tolist()) in keys for r in x)
    assert not any(tuple(r.flatten()[:4].tolist()) in keys for r in dropped[:50])
    report = source.report()
    assert report["left_out"]["position"] == p.n_contexts and report["left_out"]["special"] > 0
    assert report["kept"] + sum(report["left_out"].values()) == p.n_contexts * 32
    assert set(report["why"]) == {"position", "special", "norm"} and set(report["max_norm"]) == {
        f"{r}/{h}" for r in ("base", "aligned") for h in HOOKS}
    d = source.describe()
    assert d["source"] == "paired_cache" and d["exclusion"]["norm_ratio"] == 10.0 and d["models"][1] == "tiny-aligned"
    everything = CachedPairSource(cache, position=False, special=False, norm_ratio=None)
    assert everything.report()["kept"] == p.n_contexts * 32


def test_training_from_the_cache_learns(cache):
    source = CachedPairSource(cache, batch_size=128)
    cc = Crosscoder(CrosscoderConfig(**{**CFG, "d_latent": 128, "k": 16}))
    train_crosscoder(cc, source, TrainConfig(steps=200, batch_size=128, lr=3e-3, show_progress=False))
    ev = evaluate(cc, [source.batch(10**6 + i, 512) for i in range(2)])
    assert ev["explained_variance"]["base"] > 0.9 and ev["explained_variance"]["aligned"] > 0.9, ev  # untrained: ~0


KILL_SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)
from probes.crosscoder import Crosscoder, CrosscoderConfig, TrainConfig
from probes.crosscoder.cached import CachedPairSource
from probes.crosscoder.train import train_crosscoder
source = CachedPairSource(sys.argv[1], batch_size={bs})
batch = source.batch
def slow(step, size):  # slow training down so that the kill lands in the middle of it
    time.sleep(0.05)
    return batch(step, size)
source.batch = slow
train_crosscoder(Crosscoder(CrosscoderConfig(**{cfg!r})), source, TrainConfig(**{train!r}), folder=sys.argv[2])
"""


def test_resume_after_kill_9_gives_the_weights_of_an_uninterrupted_run(cache, tmp_path):
    whole = Crosscoder(CrosscoderConfig(**CFG))
    train_crosscoder(whole, CachedPairSource(cache, batch_size=64), TrainConfig(**TRAIN))

    folder = tmp_path / "training"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    script = KILL_SCRIPT.format(bs=TRAIN["batch_size"], cfg=CFG, train=TRAIN)
    proc = subprocess.Popen([sys.executable, "-c", script, str(cache), str(folder)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(folder.glob("state-*")):
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.time() < deadline, "training never saved a state"
        time.sleep(0.02)
    time.sleep(0.3)  # land between two saves
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (folder / "crosscoder").exists()  # killed mid-run

    resumed = Crosscoder(CrosscoderConfig(**CFG))
    result = train_crosscoder(resumed, CachedPairSource(cache, batch_size=64), TrainConfig(**TRAIN), folder=folder)
    assert result["resumed_from"] and 10 <= result["resumed_from"] < TRAIN["steps"], result["resumed_from"]
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    # the folder's saved state names the cache and the exclusion rule it trained with
    import json

    state = json.loads(next(folder.glob("state-*/state.json")).read_text())
    assert state["source"]["source"] == "paired_cache" and "why" in state["source"]["exclusion"]


def test_bad_input_is_one_line(cache, tmp_path):
    with pytest.raises(CrosscoderError, match="'blocks.0.hook_resid_post' is not in the paired cache"):
        CachedPairSource(cache, hooks=["blocks.0.hook_resid_post"])
    source = CachedPairSource(cache, hooks=HOOKS[:1])
    with pytest.raises(CrosscoderError, match=r"gives \(models, layers, d_in\) \(2, 1, 32\) but the crosscoder expects \(2, 2, 32\)"):
        train_crosscoder(Crosscoder(CrosscoderConfig(**CFG)), source, TrainConfig(**TRAIN))
    from harness.errors import RunError

    with pytest.raises(RunError, match="not a paired activation cache"):
        CachedPairSource(tmp_path)
