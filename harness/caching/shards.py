"""Shard files: safetensors written atomically, read back as memory maps.

A shard holds, for a run of consecutive contexts, one tensor per hook ([contexts, ...]) and
`token_ids` ([contexts, context_length], int32). Writes go to a hidden temporary file that is
fsynced and renamed into place, so a killed or failing writer leaves the finished shard or none.
Reading parses the safetensors header and maps each tensor with numpy, so opening a cache costs
no reads and random access touches only the pages it needs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import struct
from pathlib import Path

import numpy as np
import torch

from harness.errors import RunError
from harness.runs import atomic_write_path

SHARD_GLOB = "shard_*.safetensors"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path))  # no metadata: identical inputs give identical bytes


@contextlib.contextmanager
def disk_full_is_an_error(folder: Path, what: str):
    """Turn ENOSPC into one clear RunError (the writers below have already removed their temporaries)."""
    try:
        yield
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        raise RunError(f"disk full while writing {what} in {folder}: free space or use another --out; "
                       "the finished shards are kept and running the same command again resumes") from None


def write_shard(folder: Path, index: int, tensors: dict[str, torch.Tensor]) -> Path:
    """Write one shard atomically: a failure at any point leaves no partial file behind."""
    target = folder / shard_name(index)
    with disk_full_is_an_error(folder, target.name):
        atomic_write_path(target, lambda tmp: _save({k: v.contiguous() for k, v in tensors.items()}, tmp))
    return target


def remove_partial(folder: Path) -> int:
    """Delete temporary files left by killed writers; returns how many."""
    n = 0
    # The run store's temporaries (.<name>.<hex>.tmp): shards and the manifest; and the older
    # writer's (.tmp-<pid>-<shard>), which a cache made before may still hold.
    for p in [*folder.glob(".*.tmp"), *folder.glob(".tmp-*")]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            n += 1
    return n


_NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
       "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def map_shard(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a shard as CPU tensors backed by copy-on-write memory maps."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error) as e:
        raise RunError(f"unreadable shard {path} ({type(e).__name__}: {e}); delete it and resume the job") from None
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end == start:
            out[name] = torch.empty(shape, dtype=torch.bfloat16 if info["dtype"] == "BF16" else None)
            continue
        # mode "c": writable private pages, so torch.from_numpy does not warn and the file is never changed
        arr = np.memmap(path, dtype=_NP[info["dtype"]], mode="c", offset=8 + n + start, shape=shape)
        t = torch.from_numpy(arr)
        out[name] = t.view(torch.bfloat16) if info["dtype"] == "BF16" else t
    return out
