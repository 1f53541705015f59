"""`harness circuits` writes a run with the results, a summary and figures."""

import json

import pytest

from apps.cli import main
from tests.harness.hf_tiny import build


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    build("llama-gqa3-llama3rope").save_pretrained(folder)
    return folder


def test_heads_and_patch_runs(model_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["circuits", "heads", "--model", str(model_dir), "--runs", str(runs), "--name", "h", "--n", "2"]) == 0
    manifest = json.loads((runs / "h" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["kind"] == "circuits"
    paths = {a["path"] for a in manifest["artifacts"]}
    assert {"results.safetensors", "summary.json", "figures/induction.json"} <= paths
    assert main(["circuits", "patch", "--model", str(model_dir), "--task", "induction", "--attribution",
                 "--runs", str(runs), "--name", "p", "--n", "2"]) == 0
    summary = json.loads((runs / "p" / "summary.json").read_text())
    assert -1 <= summary["attribution_correlation"] <= 1
    assert main(["circuits", "ablate", "--model", str(model_dir), "--task", "induction", "--method", "zero",
                 "--runs", str(runs), "--name", "a", "--n", "2"]) == 0


def test_bad_input_is_one_line(model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["circuits", "patch", "--model", str(model_dir), "--task", "ioi", "--runs", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error:") and "tokenizer" in err and "\n" not in err
    with pytest.raises(SystemExit):
        main(["circuits", "patch", "--model", str(model_dir), "--task", "nope", "--runs", str(tmp_path)])
    assert "unknown task" in capsys.readouterr().err
