"""`sae train` resumes: a kill injected between any two writes of a checkpoint save (a write made
to raise, not a timed kill) leaves a run that the same call resumes to exactly the weights of an
uninterrupted run; a damaged checkpoint is refused; a failed run ends `failed` with the reason."""

import json

import pytest
import torch

from harness.caching import cache_activations
from harness.errors import RunError
from probes.sae import SAEError, train_sae
from probes.sae import checkpoint as ckpt
from tests.probes.sae_tiny import trained_tiny_model

HOOK = "blocks.0.hook_resid_post"
CTX = 64
ARGS = dict(arch="topk", d_sae=64, k=4, tokens=16 * 512, batch_tokens=512, lr=3e-3, progress=False,
            log_every=2, checkpoint_every=4)  # checkpoints after steps 4, 8 and 12


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return cache_activations(trained_tiny_model(), [HOOK], "stdlib-docs", 16 * 1024,
                             tmp_path_factory.mktemp("cache") / "cache", context_length=CTX, batch_size=16,
                             shard_contexts=64, progress=False)


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory):
    """An uninterrupted run's final weights and log."""
    result = train_sae(None, HOOK, cache=cache, out=tmp_path_factory.mktemp("ref") / "ref", **ARGS)
    return {k: v.clone() for k, v in result.sae.state_dict().items()}, result.history


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


class Kill(Exception):
    pass


def _inject(monkeypatch, at: int):
    """Make the at-th checkpoint write (file write, rename or removal) raise, as a kill would stop it."""
    calls = {"n": 0}

    def wrap(fn):
        def op(*args):
            calls["n"] += 1
            if calls["n"] == at:
                raise Kill(f"injected kill at checkpoint write {at}")
            return fn(*args)
        return op

    for name in ("_write", "_rename", "_remove"):
        monkeypatch.setattr(ckpt, name, wrap(getattr(ckpt, name)))
    return calls


# A save is 5 file writes, a rename and (from the second save on) the removal of the older one:
# calls 1-6 are the first save, 7-13 the second, 14-20 the third.
@pytest.mark.parametrize("at", [1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 20])
def test_a_kill_between_any_two_writes_resumes_to_the_uninterrupted_weights(at, cache, reference, tmp_path,
                                                                             monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        calls = _inject(m, at)
        with pytest.raises(Kill):
            train_sae(None, HOOK, cache=cache, out=out, **ARGS)
        assert calls["n"] == at
    manifest = _manifest(out)
    assert manifest["status"] == "failed" and "injected kill" in manifest["error"]  # never stuck running
    if at == 20:  # a kill the process did not survive leaves the run `running`: that resumes too
        manifest["status"] = "running"
        (out / "manifest.json").write_text(json.dumps(manifest))
    result = train_sae(None, HOOK, cache=cache, out=out, **ARGS)  # the same call again
    weights, history = reference
    for name, tensor in result.sae.state_dict().items():
        torch.testing.assert_close(tensor, weights[name], rtol=0, atol=1e-6, msg=f"{name} after kill at {at}")
    assert [r["step"] for r in result.history] == [r["step"] for r in history]
    assert [r["loss"] for r in result.history] == pytest.approx([r["loss"] for r in history], rel=1e-5)
    manifest = _manifest(out)
    assert manifest["status"] == "complete" and "error" not in manifest
    expected_step = {1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 4, 11: 4, 12: 4, 13: 8, 20: 12}[at]
    assert manifest["resumes"][-1]["from_step"] == expected_step
    # the finished run holds no training state or staging left over
    assert not (out / "checkpoints").exists() and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_damaged_checkpoint_is_refused(cache, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _inject(m, 7)  # dies at the second save: the first (step 4) is committed
        with pytest.raises(Kill):
            train_sae(None, HOOK, cache=cache, out=out, **ARGS)
    weights = out / "checkpoints" / "step-00000004" / ckpt.WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(SAEError) as err:
        train_sae(None, HOOK, cache=cache, out=out, **ARGS)
    text = str(err.value)
    assert "\n" not in text and "damaged" in text and "step-00000004" in text
    assert _manifest(out)["status"] == "failed" and "damaged" in _manifest(out)["error"]


def test_complete_or_different_runs_are_not_resumed(cache, tmp_path):
    out = tmp_path / "run"
    train_sae(None, HOOK, cache=cache, out=out, **{**ARGS, "tokens": 4 * 512})
    with pytest.raises(RunError, match="already complete"):
        train_sae(None, HOOK, cache=cache, out=out, **{**ARGS, "tokens": 4 * 512})
    other = tmp_path / "other"
    other.mkdir()
    manifest = _manifest(out)
    manifest["status"] = "failed"
    (other / "manifest.json").write_text(json.dumps({**manifest, "name": "other"}))
    with pytest.raises(RunError, match=r"other settings \(k"):
        train_sae(None, HOOK, cache=cache, out=other, **{**ARGS, "tokens": 4 * 512, "k": 8})


def test_on_the_fly_training_restarts_cleanly_after_a_failure(tmp_path, monkeypatch):
    import probes.sae.train as train_mod

    model = trained_tiny_model()
    args = dict(arch="topk", d_sae=32, k=4, tokens=4 * 512, batch_tokens=512, lr=3e-3, progress=False,
                corpus="stdlib-docs", context_length=CTX)
    out = tmp_path / "fly"
    original = train_mod._store

    def broken(run, folder):
        original(run, folder)
        raise OSError("disk full (injected)")

    with monkeypatch.context() as m:
        m.setattr(train_mod, "_store", broken)
        with pytest.raises(OSError):
            train_sae(model, HOOK, out=out, **args)
    assert _manifest(out)["status"] == "failed" and "disk full" in _manifest(out)["error"]
    result = train_sae(model, HOOK, out=out, **args)
    manifest = _manifest(out)
    assert manifest["status"] == "complete" and manifest["resumes"][0]["previous_status"] == "failed"
    assert result.path.joinpath("cfg.json").is_file() and len(result.history) >= 1
