"""One JSON Lines reader for every file the harness reads line by line (corpora, suite data):
each error names the file and the line, so a binary, non-UTF-8 or hand-damaged file is one
clear message, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from harness.errors import HarnessError


def jsonl_rows(path: Path, error: type[HarnessError] = HarnessError, what: str = "JSON Lines files"
               ) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for every non-empty line of `path`; raises `error`."""
    try:
        f = open(path, "rb")
    except OSError as err:
        raise error(f"{path}: cannot read it ({err.strerror or err})") from None
    with f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise error(f"{path}:{number}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                            f"{err.start + 1}; a binary file?); {what} must be UTF-8") from None
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{path}:{number}: not JSON Lines: invalid JSON ({err.msg} at column {err.colno}); "
                            "one JSON object per line") from None
