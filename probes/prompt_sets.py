"""Read a prompt set named on the command line.

    load_prompts("builtin:harmful")        # the packaged refusal pairs (also builtin:harmless)
    load_prompts("my_prompts.txt")         # one prompt per non-empty line
    load_prompts("items.jsonl")            # the "prompt" field of each line
    load_prompts("items.jsonl:question")   # another field
"""

from __future__ import annotations

from pathlib import Path

from harness.data.jsonl import jsonl_rows
from harness.errors import ConfigError
from probes.refusal import refusal_pairs

BUILTINS = ("harmful", "harmless")


def load_prompts(spec: str, limit: int | None = None) -> list[str]:
    prompts = _read(spec)
    if not prompts:
        raise ConfigError(f"prompt set {spec!r} is empty")
    return prompts[:limit] if limit else prompts


def _read(spec: str) -> list[str]:
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name not in BUILTINS:
            raise ConfigError(f"unknown builtin prompt set {name!r}; have {', '.join('builtin:' + b for b in BUILTINS)}")
        return [p[name] for p in refusal_pairs()]
    path, field = Path(spec), "prompt"
    if not path.exists() and ":" in spec:
        head, field = spec.rsplit(":", 1)
        path = Path(head)
    if not path.is_file():
        raise FileNotFoundError(2, "no such prompt file", str(path))
    if path.suffix != ".jsonl":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}; a binary file?); prompt files must be "
                              "UTF-8") from None
        return [line.strip() for line in text.splitlines() if line.strip()]
    out = []
    for n, row in jsonl_rows(path, ConfigError, "prompt files"):
        if not isinstance(row, dict) or not isinstance(row.get(field), str):
            raise ConfigError(f"{path}:{n} has no string field {field!r}; name the field as {path}:FIELD")
        out.append(row[field])
    return out
