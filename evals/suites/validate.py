"""Check task YAML and local JSONL before lm-eval reads them, so a mistake is reported as
`file:line: what is wrong` instead of a warning buried in lm-eval's log or a skipped task."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from harness.errors import HarnessError


class _TaskLoader(yaml.SafeLoader):
    """SafeLoader that keeps lm-eval's `!function module.name` tags as plain strings."""


_TaskLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def read_task_yaml(path: Path) -> dict:
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise HarnessError(f"{path}{line}: malformed YAML ({err.problem or err.context})") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise HarnessError(f"{path}: unreadable task YAML ({err})") from None
    if not isinstance(doc, dict):
        raise HarnessError(f"{path}:1: a task YAML must be a mapping with a `task:` key")
    return doc


def validate_task_file(path: Path, data_root: Path) -> dict:
    """Parse one task YAML and check its local JSONL data; returns the parsed mapping."""
    doc = read_task_yaml(path)
    if not any(k in doc for k in ("task", "group", "include")):
        raise HarnessError(f"{path}:1: no `task:` key; every lm-eval task YAML names its task")
    if doc.get("dataset_path") == "json":
        files = (doc.get("dataset_kwargs") or {}).get("data_files")
        for file in _data_files(files):
            local = Path(file) if Path(file).is_absolute() else data_root / file
            if not local.is_file():
                raise HarnessError(f"{path}: data file {file} does not exist (looked for {local})")
            if local.suffix in (".jsonl", ".json") and local.suffix == ".jsonl":
                check_jsonl(local)
    return doc


def _data_files(files) -> list[str]:
    if isinstance(files, str):
        return [files]
    if isinstance(files, list):
        return [f for f in files if isinstance(f, str)]
    if isinstance(files, dict):
        return [f for v in files.values() for f in _data_files(v)]
    return []


def check_jsonl(path: Path) -> int:
    """Every non-empty line must be a JSON object; returns the number of rows."""
    rows = 0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise HarnessError(f"{path}:{number}: invalid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(row, dict):
                raise HarnessError(f"{path}:{number}: each line must be a JSON object, got {type(row).__name__}")
            rows += 1
    if rows == 0:
        raise HarnessError(f"{path}: no rows")
    return rows
