"""An SAE saved by SAELens itself (not trained here) is adopted into a run by `sae eval` and
`sae features`: the results are kept, the same weights reopen the same run, `harness runs`
and the dashboard's Features page list it."""

import json
from pathlib import Path

import pytest

from harness.runs import RunStore
from probes.sae import sae_config
from tests.probes.sae_tiny import tiny_model

HOOK = "blocks.0.hook_resid_post"
PAGE = Path(__file__).resolve().parents[2] / "apps" / "dashboard" / "pages" / "features.py"


@pytest.fixture()
def saelens_folder(tmp_path):
    from sae_lens import TrainingSAE

    folder = tmp_path / "downloaded" / "my-sae"
    sae = TrainingSAE.from_dict(sae_config("topk", 32, 64, k=4).to_dict())
    sae.cfg.metadata.hook_name = HOOK
    sae.save_inference_model(str(folder))
    return folder


def test_sae_eval_and_features_adopt_a_saelens_folder(saelens_folder, tmp_path, monkeypatch, capsys):
    from apps.cli import main
    from harness.training.checkpoint import save_checkpoint

    model_dir = save_checkpoint(tiny_model(), tmp_path / "tiny-model")
    runs = tmp_path / "runs"
    assert main(["sae", "eval", "--sae", str(saelens_folder), "--model", str(model_dir), "--runs", str(runs),
                 "--tokens", "512", "--context-length", "32"]) == 0
    out = capsys.readouterr().out
    assert "adopted the SAE into run sae-my-sae" in out
    run = RunStore(runs).open("sae-my-sae")
    assert run.manifest["kind"] == "sae" and run.manifest["status"] == "complete"
    assert run.manifest["config"]["adopted_from"] == str(saelens_folder.resolve())
    assert (run.path / "sae" / "cfg.json").is_file() and (run.path / "sae" / "sae_weights.safetensors").is_file()
    assert json.loads((run.path / "eval.json").read_text())["l0"] > 0  # the evaluation is kept
    assert any(m.get("source") == str(model_dir) for m in run.manifest["models"].values())

    # the same weights again: the same run, now with the feature analysis too
    assert main(["sae", "features", "--sae", str(saelens_folder), "--model", str(model_dir), "--runs", str(runs),
                 "--tokens", "512", "--context-length", "32", "--features", "3"]) == 0
    assert [i.name for i in RunStore(runs).list()] == ["sae-my-sae"]
    assert (run.path / "features.jsonl").is_file() or any(p.name.startswith("features") for p in run.path.iterdir())

    # the run works as any SAE run: it loads from its own folder, and the Features page shows it
    from probes.sae import load_sae

    assert load_sae(run.path).cfg.d_sae == 64
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("INTERP_HARNESS_RUNS", str(runs))
    at = AppTest.from_file(str(PAGE), default_timeout=120).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("sae-my-sae" in str(s.value) or "sae-my-sae" in str(s.options) for s in at.selectbox)
    assert any("64" in c.value and HOOK in c.value for c in at.caption)
