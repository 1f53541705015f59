"""Check task YAML and local JSONL before lm-eval reads them, so a mistake is reported as
`file:line: what is wrong` instead of a warning buried in lm-eval's log or a skipped task."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.data.jsonl import jsonl_rows
from harness.errors import HarnessError


class _TaskLoader(yaml.SafeLoader):
    """SafeLoader that keeps lm-eval's `!function module.name` tags as plain strings."""


_TaskLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def read_text_lines(path: Path, what: str) -> str:
    """The file as text; HarnessError naming the file and line when it is not UTF-8 (binary)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise HarnessError(f"{path}: cannot read {what} ({err.strerror or err})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise HarnessError(f"{path}:{line}: {what} is not UTF-8 text (byte 0x{data[err.start]:02x}; a binary file?)") from None


def read_task_yaml(path: Path) -> dict:
    text = read_text_lines(path, "task YAML")
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise HarnessError(f"{path}:{line}: task YAML holds a NUL byte (a binary file?)")
    try:
        doc = yaml.load(text, Loader=_TaskLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise HarnessError(f"{path}{line}: malformed YAML ({err.problem or err.context})") from None
    except yaml.YAMLError as err:
        raise HarnessError(f"{path}: unreadable task YAML ({(str(err).splitlines() or [''])[0]})") from None
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
    for number, row in jsonl_rows(path, what="JSON Lines suite data"):
        if not isinstance(row, dict):
            raise HarnessError(f"{path}:{number}: each line must be a JSON object, got {type(row).__name__}")
        rows += 1
    if rows == 0:
        raise HarnessError(f"{path}: no rows")
    return rows
