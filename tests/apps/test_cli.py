"""The `harness` command line: fast help, the zoo table, runs listing, one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from apps.cli import main
from harness.runs import MANIFEST, RunStore

ROOT = Path(__file__).resolve().parents[2]


def harness(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "apps", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), proc.stderr
    for word in words:
        assert word in lines[0]


def test_help_lists_commands():
    proc = harness("--help")
    assert proc.returncode == 0 and proc.stderr == ""
    for command in ("models", "demo", "runs"):
        assert command in proc.stdout


def test_help_imports_nothing_heavy():
    # Building the parser (what --help does) must not import torch, transformers or the models.
    code = ("import sys, apps.cli; apps.cli.build_parser(); "
            "heavy = [m for m in ('torch', 'transformers', 'transformer_lens', 'harness.models', 'rich', 'plotly') "
            "if m in sys.modules]; print(heavy); assert not heavy")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out


def test_models_prints_the_zoo(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps headers at the default 80 columns of a pipe
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for word in ("name", "family", "installed", "converted", "smollm2-135m-instruct", "gemma-3-270m"):
        assert word in out


def test_unknown_subcommand_is_one_line():
    assert_one_line_error(harness("frobnicate"), "frobnicate")


def test_bad_option_is_one_line():
    assert_one_line_error(harness("demo", "--max-new-tokens", "many"), "many")


def test_unknown_model_is_one_line(tmp_path):
    proc = harness("demo", "--models", "no-such-model-xyz", "--runs", str(tmp_path))
    assert_one_line_error(proc, "no-such-model-xyz")
    assert list(tmp_path.iterdir()) == []  # the bad name failed before a run folder was made


def test_runs_lists_runs_and_flags_corrupt(tmp_path, capsys):
    store = RunStore(tmp_path)
    store.create("demo", name="good-run").finish()
    store.create("demo", name="broken-run")
    (tmp_path / "broken-run" / MANIFEST).write_text("{")
    assert main(["runs", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "good-run" in out and "complete" in out
    assert "broken-run" in out and "unreadable" in out


def test_runs_empty_folder(tmp_path, capsys):
    assert main(["runs", "--runs", str(tmp_path / "none")]) == 0
    assert "no runs" in capsys.readouterr().out


@pytest.mark.parametrize("name, words", [("taken", "already exists"), ("../escape", "invalid run name")])
def test_bad_run_name_is_one_line_before_loading(tmp_path, capsys, name, words):
    # A RunError raised inside the command becomes the one-line error, before any model loads.
    RunStore(tmp_path).create("demo", name="taken")
    with pytest.raises(SystemExit) as exit_info:
        main(["look", "--runs", str(tmp_path), "--name", name, "--models", "never-loaded"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness: error: ") and words in err[0]


def test_main_job_refuses_a_taken_prefix_before_any_work(tmp_path, capsys):
    RunStore(tmp_path).create("eval", name="taken-eval")
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--runs", str(tmp_path), "--name", "taken"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "taken-eval" in err[0] and "already exists" in err[0]


@pytest.mark.parametrize("exc, status, words", [
    (KeyboardInterrupt(), 130, "interrupted"),
    (FileNotFoundError(2, "No such file or directory", "/no/such/corpus.txt"), 2, "/no/such/corpus.txt"),
])
def test_interrupt_and_missing_file_are_one_line(monkeypatch, capsys, exc, status, words):
    import apps.cli.models
    import apps.cli.runs

    def boom(args):
        raise exc

    monkeypatch.setattr(apps.cli.runs, "cmd_runs", boom)
    with pytest.raises(SystemExit) as exit_info:
        main(["runs"])
    assert exit_info.value.code == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
