"""lm-eval drop-in: `--model harness` through lm-eval's own CLI (harness-lm-eval) and registry
scores exactly as `harness eval` does; HookedLMEval.create_from_arg_string loads by name."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from apps.cli import main as cli_main
from evals.lm_adapter import HookedLMEval
from evals.suites import materialize
from harness.errors import HarnessError
from harness.runs import RunStore
from tests.evals import tiny

TASKS = ["harness_knowledge", "harness_arithmetic", "harness_perplexity"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lmcli") / "tiny-llama"
    tok = tiny.tokenizer()
    tiny.hf_llama(tok, seed=4).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _scores(results: dict) -> dict:
    return {task: {k: v for k, v in values.items() if "stderr" not in k and k != "alias"}
            for task, values in results.items()}


def test_lm_eval_cli_scores_as_harness_eval(model_folder, tmp_path, capsys):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    materialize(tasks)
    script = Path(sys.executable).with_name("harness-lm-eval")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "evals.lm_eval_cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [*command, "--model", "harness", "--model_args", f"pretrained={model_folder},dtype=float32,batch_size=8",
         "--tasks", ",".join(TASKS), "--include_path", str(tasks), "--limit", "5", "--device", "cpu",
         "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "|harness_knowledge" in proc.stdout
    [results_file] = (tmp_path / "out").rglob("results_*.json")
    theirs = json.loads(results_file.read_text())
    assert theirs["config"]["model"] == "harness"

    assert cli_main(["eval", "--base", str(model_folder), "--suite", ",".join(TASKS), "--limit", "5",
                     "--batch-size", "8", "--runs", str(tmp_path / "runs"), "--name", "same"]) == 0
    capsys.readouterr()
    ours = RunStore(tmp_path / "runs").open("same").read_json("results/base.json")
    a, b = _scores(theirs["results"]), _scores(ours["results"])
    assert a == b
    assert 0 < a["harness_knowledge"]["acc,none"] < 1 and a["harness_perplexity"]["word_perplexity,none"] > 1
    print({t: {k: round(v, 6) for k, v in m.items() if isinstance(v, float)} for t, m in a.items()})


def test_create_from_arg_string_and_registry(model_folder, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.api.registry import get_model

    assert get_model("harness") is HookedLMEval
    assert get_model("hf").__name__ == "HFLM"  # lm-eval's own models are still there
    lm = HookedLMEval.create_from_arg_string(f"pretrained={model_folder},dtype=float32,batch_size=3,max_length=64",
                                             {"batch_size": 1, "device": "cuda", "max_batch_size": None})
    assert (lm.batch_size, lm.max_length, str(lm.device)) == (3, 64, "cpu")
    assert lm.model.cfg.d_model == 32

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    materialize(tasks)
    from lm_eval.tasks import TaskManager

    out = simple_evaluate(model="harness", model_args=f"pretrained={model_folder},batch_size=4", tasks=["harness_knowledge"],
                          task_manager=TaskManager(include_path=[str(tasks)], include_defaults=False), limit=4,
                          bootstrap_iters=0, device="cpu")
    direct = simple_evaluate(model=HookedLMEval(lm.model, batch_size=4), tasks=["harness_knowledge"],
                             task_manager=TaskManager(include_path=[str(tasks)], include_defaults=False), limit=4,
                             bootstrap_iters=0)
    assert _scores(out["results"]) == _scores(direct["results"])

    with pytest.raises(HarnessError, match="unknown model_args for the harness model: colour"):
        HookedLMEval.create_from_arg_string(f"pretrained={model_folder},colour=red")
    with pytest.raises(HarnessError, match="model_args needs pretrained="):
        HookedLMEval.create_from_arg_string("dtype=float32")
    with pytest.raises(HarnessError, match="unknown dtype 'float8'"):
        HookedLMEval.create_from_arg_string(f"pretrained={model_folder},dtype=float8")
    with pytest.raises(HarnessError, match="batch_size must be"):
        HookedLMEval.create_from_arg_string(f"pretrained={model_folder},batch_size=0")


def test_entry_point_is_declared():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["lm_eval.models"]["harness"] == "evals.lm_adapter:HookedLMEval"
    assert project["scripts"]["harness-lm-eval"] == "evals.lm_eval_cli:main"
    from evals.lm_eval_cli import register_entry_points

    import importlib.metadata as md

    if any(ep.name == "harness" for ep in md.entry_points(group="lm_eval.models")):  # pip install -e . done
        assert "harness" in register_entry_points()
