"""Where the harness keeps what it makes outside the runs folder: the harness cache.

    cache_root()          $INTERP_HARNESS_CACHE, else ~/.cache/interp-harness
    checkpoints_dir()     <cache>/checkpoints: organisms, recipe checkpoints (zoo names resolve here)
    logs_dir()            <cache>/logs: the CLI's tracebacks of internal errors

Runs have their own root (harness.runs.default_root); everything here can be rebuilt.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir=None) -> Path:
    """The harness cache: the argument, else $INTERP_HARNESS_CACHE, else ~/.cache/interp-harness."""
    if cache_dir is None:
        cache_dir = os.environ.get("INTERP_HARNESS_CACHE") or Path.home() / ".cache" / "interp-harness"
    return Path(cache_dir).expanduser()


def checkpoints_dir(cache_dir=None) -> Path:
    return cache_root(cache_dir) / "checkpoints"


def logs_dir(cache_dir=None) -> Path:
    return cache_root(cache_dir) / "logs"
