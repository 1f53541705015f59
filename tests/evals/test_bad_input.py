"""Bad input to evals: one clear HarnessError line naming the file (and line), no traceback, and
no run left behind when no work started."""

import json

import pytest

from apps.cli import main as cli_main
from evals.runner import run_eval
from evals.suites import resolve_suite
from harness.errors import HarnessError
from tests.evals import tiny
from tests.evals.test_runner import GOOD_ROWS, GOOD_YAML


def _suite(tmp_path, yaml_text=GOOD_YAML, data: bytes = GOOD_ROWS.encode()):
    folder = tmp_path / "mytasks"
    folder.mkdir()
    (folder / "data.jsonl").write_bytes(data)
    (folder / "mine.yaml").write_bytes(yaml_text.replace("DATA", str(folder / "data.jsonl")).encode("utf-8")
                                       if isinstance(yaml_text, str) else yaml_text)
    return folder


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


LATIN1_ROW = json.dumps({"q": "caf\u00e9", "choices": ["yes", "no"], "label": 0}).replace("\\u00e9", "\u00e9").encode("latin-1")

BAD_SUITES = {  # case: (yaml, data, expected message)
    "binary jsonl": (GOOD_YAML, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8", r"data\.jsonl:1: not UTF-8 text"),
    "latin-1 line 3": (GOOD_YAML, GOOD_ROWS.splitlines()[0].encode() + b"\n\n" + LATIN1_ROW + b"\n",
                       r"data\.jsonl:3: not UTF-8 text \(byte 0xe9"),
    "array line": (GOOD_YAML, GOOD_ROWS.encode() + b"[1, 2]\n", r"data\.jsonl:4: each line must be a JSON object, got list"),
    "string line": (GOOD_YAML, b'"just a string"\n' + GOOD_ROWS.encode(), r"data\.jsonl:1: each line must be a JSON object, got str"),
    "empty data": (GOOD_YAML, b"\n\n", r"data\.jsonl: no rows"),
    "bad yaml": (GOOD_YAML.replace("test_split: test", "test_split: [test"), GOOD_ROWS.encode(), r"mine\.yaml:\d+: malformed YAML"),
    "tab yaml": (GOOD_YAML.replace("  - metric: acc", "\t- metric: acc"), GOOD_ROWS.encode(), r"mine\.yaml:\d+: malformed YAML"),
    "binary yaml": (b"task: x\n\xff\xfe\x00garbage", GOOD_ROWS.encode(), r"mine\.yaml:2: task YAML is not UTF-8 text"),
    "nul yaml": (b"task: x\ndataset_path: json\n\x00\x00", GOOD_ROWS.encode(), r"mine\.yaml:3: task YAML holds a NUL byte"),
    "list yaml": ("- task: a\n- task: b\n", GOOD_ROWS.encode(), r"mine\.yaml:1: a task YAML must be a mapping"),
    "no task key": ("dataset_path: json\n", GOOD_ROWS.encode(), r"mine\.yaml:1: no `task:` key"),
    "missing data": (GOOD_YAML.replace("DATA", "/nonexistent/data.jsonl"), GOOD_ROWS.encode(), r"data file /nonexistent/data\.jsonl does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_SUITES))
def test_malformed_suite_files_are_one_line(case, tmp_path):
    yaml_text, data, expected = BAD_SUITES[case]
    folder = _suite(tmp_path, yaml_text, data)
    with pytest.raises(HarnessError, match=expected) as err:
        resolve_suite(folder)
    assert str(folder) in _one_line(err)


@pytest.mark.parametrize("limit", [0, -1, -100, 2.5, True])
def test_bad_limit_is_refused_before_any_run(limit, tmp_path):
    model = tiny.hooked(tiny.tokenizer(), seed=0)
    with pytest.raises(HarnessError, match=r"--limit must be a whole number of items of at least 1") as err:
        run_eval({"base": model}, "harness_knowledge", runs_dir=tmp_path / "runs", name="x", limit=limit, console=False)
    _one_line(err)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(HarnessError, match="--limit"):
        resolve_suite("harness_knowledge", limit=limit)


@pytest.mark.parametrize("args,expected", [
    (["--limit", "0"], "--limit must be a whole number of items of at least 1"),
    (["--limit", "-3"], "--limit must be a whole number of items of at least 1"),
    (["--batch-size", "0"], "--batch-size must be a whole number of at least 1"),
])
def test_cli_bad_numbers_exit_2_with_one_line(args, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["eval", "--base", str(tmp_path / "never-loaded"), "--suite", "harness_knowledge",
                  "--runs", str(tmp_path / "runs"), "--name", "x", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_cli_binary_suite_jsonl_exit_2(tmp_path, capsys):
    folder = _suite(tmp_path, GOOD_YAML, b"\x00\x01\x02\xff\xfe binary\n")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["eval", "--base", str(tmp_path / "never-loaded"), "--suite", str(folder),
                  "--runs", str(tmp_path / "runs"), "--name", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert f"{folder / 'data.jsonl'}:1: not UTF-8 text" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()
