"""The cache folder's manifest.json, in the run-store format (harness/runs.py) with kind "cache".

`config` holds the job: everything that decides the bytes of the shards (model identity and
weights hash, hooks, dtype, context length, batch size, shard size, corpus fingerprint, split,
BOS, seed, tokens). A folder whose job differs is refused - resuming into it would mix two
caches. The manifest is written before the first shard and again, complete, after the last.
"""

from __future__ import annotations

import json
from pathlib import Path


from harness.errors import RunError
from harness.runs import MANIFEST, MANIFEST_VERSION, atomic_write, compute_settings, dumps, now_iso, process_identity, versions

KIND = "cache"


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


def write_manifest(folder: Path, manifest: dict) -> None:
    text = dumps(manifest) + "\n"
    atomic_write(folder / MANIFEST, lambda f: f.write(text.encode("utf-8")))


def new_manifest(folder: Path, job: dict, command: str | None) -> dict:
    return {"manifest_version": MANIFEST_VERSION, "kind": KIND, "name": folder.name, "created": now_iso(),
            "finished": None, "command": command, "models": {job["model"]["name"]: job["model"]},
            "config": job, "seed": job["seed"], "versions": versions(), "compute": compute_settings(),
            "timings": {}, "status": "running", **process_identity(),
            "metrics": {}, "artifacts": []}


def claim_folder(folder: Path, job: dict, command: str | None) -> dict:
    """Create or reopen the cache folder for `job`; RunError if it holds something else."""
    job = json.loads(dumps(job))  # compare what would be saved
    if folder.exists() and not folder.is_dir():
        raise RunError(f"--out {folder} is a file, not a folder")
    manifest = read_manifest(folder) if folder.exists() else None
    if manifest is None:
        if folder.exists() and any(p for p in folder.iterdir() if not p.name.startswith(".")):
            raise RunError(f"{folder} is not empty and holds no cache manifest; choose an empty or new --out")
        folder.mkdir(parents=True, exist_ok=True)
        manifest = new_manifest(folder, job, command)
        write_manifest(folder, manifest)
        return manifest
    if manifest.get("kind") != KIND or manifest.get("config") != job:
        diff = (_diff(manifest.get("config") or {}, job) or ["?"]) if manifest.get("kind") == KIND else ["kind"]
        raise RunError(f"{folder} holds a different cache job (differs in: {', '.join(diff)}); "
                       "use another --out, or delete that folder to start over")
    if manifest.get("status") != "complete":  # resuming: the listing shows it running again
        manifest.update(status="running", error=None, resumed=int(manifest.get("resumed") or 0) + 1,
                        **process_identity())
        write_manifest(folder, manifest)
    return manifest


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out
