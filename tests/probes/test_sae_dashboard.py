"""The dashboard's Features page shows an SAE run's explained variance next to its CE loss
recovered and KL, and warns when they disagree (headless, streamlit.testing.v1.AppTest)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from harness.runs import RunStore

PAGE = Path(__file__).resolve().parents[2] / "apps" / "dashboard" / "pages" / "features.py"


def _sae_run(root: Path, name: str, metrics: dict, warnings=None):
    from sae_lens import TrainingSAE

    from probes.sae import sae_config

    run = RunStore(root).create("sae", name=name, config={"hook": "blocks.0.hook_resid_post", "arch": "topk"})
    sae = TrainingSAE.from_dict(sae_config("topk", 32, 64, k=4).to_dict())
    sae.cfg.metadata.hook_name = "blocks.0.hook_resid_post"
    sae.save_inference_model(str(run.path / "sae"))
    run.manifest["metrics"] = {f"eval/{k}": v for k, v in metrics.items()}
    if warnings:
        run.manifest["warnings"] = warnings
    run.manifest["exclusion"] = {"why": {"position": "the first 1 position(s) of each context: attention sinks"}}
    run.finish("complete")


def _page(root, monkeypatch):
    monkeypatch.setenv("INTERP_HARNESS_RUNS", str(root))
    at = AppTest.from_file(str(PAGE), default_timeout=120).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


@pytest.mark.parametrize("ce, warned", [(-0.11, True), (0.83, False)])
def test_features_page_warns_when_ev_and_ce_recovered_disagree(ce, warned, tmp_path, monkeypatch):
    _sae_run(tmp_path, "sae-a", {"explained_variance": 0.996, "ce_loss_recovered": ce, "kl_div": 8.0, "l0": 32.0})
    at = _page(tmp_path, monkeypatch)
    labels = [m.label for m in at.metric]
    assert labels[:4] == ["explained variance", "CE loss recovered", "KL", "L0"]
    assert [m.value for m in at.metric][:2] == ["0.996", f"{ce:.3f}"]
    warnings = [w.value for w in at.warning]
    assert any("CE loss recovered is only" in w for w in warnings) == warned
    assert any("attention sinks" in c.value for c in at.caption)
