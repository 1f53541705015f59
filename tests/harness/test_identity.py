"""One model identity: every kind of run that records a model records the same weights hash."""

import json

import harness
from harness.identity import model_identity, weights_sha256
from harness.runs import RunStore
from tests.apps.fixtures import save_model


def test_a_cache_an_eval_and_a_probe_of_one_model_record_one_hash(tmp_path):
    from evals.runner import run_eval
    from harness.caching import cache_activations

    folder = save_model(tmp_path / "model", 0)
    model = harness.load(folder)
    expected = weights_sha256(model)

    cache = cache_activations(model, ["blocks.0.hook_resid_post"], "stdlib-docs", 64, tmp_path / "runs" / "cache",
                              context_length=32, batch_size=2, progress=False)
    cached = json.loads((cache / "manifest.json").read_text())["config"]["model"]["weights_sha256"]
    evaluated = run_eval({"m": str(folder)}, "harness_knowledge", runs_dir=tmp_path / "runs", name="ev", limit=2,
                         kl=False, console=False).manifest["models"]["m"]["weights_sha256"]
    run = RunStore(tmp_path / "runs").create("probe", name="p")
    run.add_model("model", model)
    probed = RunStore(tmp_path / "runs").open("p").manifest["models"]["model"]["weights_sha256"]
    assert cached == evaluated == probed == expected


def test_the_hash_follows_the_weights_not_the_source(tmp_path):
    model = harness.load(save_model(tmp_path / "a", 0))
    before = model_identity(model)
    assert before["weights_sha256"] and before["source"] == str(tmp_path / "a")
    with __import__("torch").no_grad():
        next(model.parameters()).add_(1.0)
    assert model_identity(model)["weights_sha256"] != before["weights_sha256"]
    other = harness.load(save_model(tmp_path / "b", 0))  # same seed, another folder: same weights
    assert model_identity(other)["weights_sha256"] == before["weights_sha256"]
