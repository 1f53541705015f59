"""Training examples from JSONL files, checked line by line so an error names file and line.

    sft:         {"prompt": ..., "response": ...}
    preference:  {"prompt": ..., "chosen": ..., "rejected": ...}
    kto:         {"prompt": ..., "completion": ..., "label": true|false}

In-memory lists of dicts go through the same checks (reported as "<examples> item N").
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from harness.data.jsonl import jsonl_rows
from harness.errors import ConfigError, HarnessError

FIELDS = {
    "sft": ("prompt", "response"),
    "preference": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
}


class DataError(HarnessError):
    """A training example that is missing a field, has an empty one, or is not JSON."""


def check_example(row, kind: str, where: str) -> dict:
    if kind not in FIELDS:
        raise ConfigError(f"unknown example kind {kind!r}; expected one of {sorted(FIELDS)}")
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object with fields {list(FIELDS[kind])}, got {type(row).__name__}")
    missing = [f for f in FIELDS[kind] if f not in row]
    if missing:
        raise DataError(f"{where}: missing field(s) {missing}; a {kind} example needs {list(FIELDS[kind])}")
    for field in FIELDS[kind]:
        value = row[field]
        if field == "label":
            if not isinstance(value, bool):
                raise DataError(f"{where}: field 'label' must be true or false, got {value!r}")
        elif not isinstance(value, str):
            raise DataError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
        elif field != "prompt" and not value.strip():
            raise DataError(f"{where}: field {field!r} is empty; every response must have text")
    if kind == "preference" and row["chosen"] == row["rejected"]:
        raise DataError(f"{where}: 'chosen' and 'rejected' are identical; the pair carries no preference")
    return row


def read_jsonl(path, kind: str) -> list[dict]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows = [check_example(row, kind, f"{path}:{number}")
            for number, row in jsonl_rows(path, DataError, "training data files")]
    if not rows:
        raise DataError(f"{path}: holds no examples")
    return rows


def examples(source: str | Path | Iterable[dict], kind: str) -> list[dict]:
    """A JSONL path or an iterable of dicts -> checked list of dicts."""
    if isinstance(source, (str, Path)):
        return read_jsonl(source, kind)
    rows = [check_example(row, kind, f"<examples> item {i}") for i, row in enumerate(source)]
    if not rows:
        raise DataError("no training examples given")
    return rows
