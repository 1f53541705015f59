"""The cache folder's manifest.json, in the run-store format (harness/runs.py) with kind "cache"
(a paired cache: "paired-cache").

`config` holds the job: everything that decides the bytes of the shards (model identity and
weights hash, hooks, dtype, context length, batch size, shard size, corpus fingerprint, split,
BOS, seed, tokens). The run store creates and reopens the folder (runs.claim_run_folder), which
refuses a folder whose job differs - resuming into it would mix two caches. The manifest is
written before the first shard and again, complete, after the last.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import RunError
from harness.runs import MANIFEST

KIND = "cache"
PAIRED_KIND = "paired-cache"


def model_identity(model) -> dict:
    """The model's identity and weights hash, as every other run records it."""
    from harness.identity import model_identity as identity

    return identity(model)


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunError(f"{path}: unreadable manifest ({type(e).__name__}); it is not a cache this job can resume") from None
