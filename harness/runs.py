"""The run store: every command that produces results writes one run folder.

A run folder holds `manifest.json` (what ran: kind, command, models with their hashes, config,
seed, versions, timings, status, metrics, the artifact list) and the artifacts themselves
(safetensors for tensors, JSONL/parquet for tables, JSON for metrics, HTML for figures) - nothing
else. Every write goes to a temporary file in the same folder, is fsynced and then renamed over
the target, so a killed job leaves either a finished artifact or none. The manifest is rewritten
the same way after each artifact, so it always lists exactly what is on disk.

    store = RunStore()                      # $INTERP_HARNESS_RUNS or ./runs
    with store.create("demo", config={...}) as run:
        run.write_tensors("acts.safetensors", {"x": x})
        run.write_json("metrics.json", {...})
    # leaving the block marks the run complete (or failed / interrupted on an exception)
    for info in store.list(): print(info.name, info.status, info.error)

This module imports only the standard library at import time (torch, safetensors and pandas are
imported where they are used) so that the CLI and the dashboard start fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import platform
import re
import shutil
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from harness.errors import HarnessError, RunError

RUNS_ENV = "INTERP_HARNESS_RUNS"
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
STATUSES = ("running", "complete", "failed", "interrupted")
# Manifest fields the store keeps itself (through create, finish, add_model, add_note, ...).
RESERVED_FIELDS = frozenset({"manifest_version", "kind", "name", "created", "finished", "status", "error", "command",
                             "models", "config", "seed", "versions", "compute", "timings", "metrics", "artifacts",
                             "notes", "warnings", "pid", "host", "resumed"})
# Packages whose versions every manifest records (distribution names for importlib.metadata).
VERSIONED = {"torch": "torch", "transformers": "transformers", "transformer_lens": "transformer-lens",
             "sae_lens": "sae-lens", "lm_eval": "lm-eval", "harness": "interp-harness"}


def default_root() -> Path:
    return Path(os.environ.get(RUNS_ENV) or "runs")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str | None]:
    """Versions of python and the stack, read from package metadata (no heavy imports)."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for key, dist in VERSIONED.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    if out["harness"] is None:  # running from a source checkout that is not pip-installed
        out["harness"] = _source_version()
    return out


def compute_settings() -> dict[str, Any]:
    """Settings besides versions that decide a run's floating-point results: torch's thread count
    and the CPU matmul float32 inference uses (harness.models.linear). Read without importing torch."""
    torch = sys.modules.get("torch")
    linear = sys.modules.get("harness.models.linear")
    return {"torch_threads": torch.get_num_threads() if torch else None,
            "cpu_matmul": linear.cpu_matmul() if linear else os.environ.get("INTERP_HARNESS_CPU_MATMUL", "onednn")}


def _source_version() -> str | None:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        import tomllib

        return tomllib.loads(pyproject.read_text())["project"]["version"]
    except Exception:  # no pyproject next to the package: version unknown, not an error
        return None


def _json_default(obj: Any) -> Any:
    """Make configs holding paths, dataclasses, numpy/torch scalars etc. serialisable."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):  # numpy arrays / scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def dumps(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, default=_json_default, ensure_ascii=False)


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write `path` through a temporary sibling, fsync it, then rename it into place.

    The temporary file sits in the same folder so os.replace is a same-filesystem rename
    (atomic on POSIX and Windows). On any failure the temporary file is removed, so the
    folder holds the old file or the new one, never a partial one.
    """
    def to_file(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    atomic_write_path(path, to_file)


def atomic_write_path(path: Path, write_to: Callable[[Path], None]) -> None:
    """atomic_write for writers that want a path (safetensors' save_file streams to one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write_to(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every OS, so best effort.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_safetensors(path: str | os.PathLike) -> tuple[dict, dict]:
    """Every tensor of a safetensors file and its metadata; RunError naming the file when it is
    truncated, not safetensors at all, or missing (safetensors' own errors name no file)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RunError(f"{path}: not a readable safetensors file ({first}); it is damaged or of another kind") from None


def check_writable(folder: Path, instead: str = "another folder") -> None:
    """RunError unless `folder` could be created and written. It probes the nearest folder that
    exists (creating nothing that stays) by writing and removing a file, because permission bits
    say nothing for root or on a read-only filesystem."""
    folder = Path(folder).expanduser()
    existing = next((p for p in [folder, *folder.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        raise RunError(f"cannot write to {folder}: {existing} is a file, not a folder; choose {instead}")
    try:
        probe = existing / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunError(f"cannot write to {folder}: {e.strerror or type(e).__name__}; choose {instead}") from None


def check_name(name: str, what: str = "run name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RunError(f"invalid {what} {name!r}: use letters, digits, '.', '_' and '-' "
                       "(starting with a letter or digit), no path separators")
    return name


@dataclasses.dataclass
class RunInfo:
    """One line of `RunStore.list()`; `error` is set (and the rest may be empty) when the
    manifest is missing or unreadable, so a listing never fails on one bad folder."""

    name: str
    path: Path
    kind: str | None = None
    created: str | None = None
    status: str | None = None
    models: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None  # the manifest could not be read
    failure: str | None = None  # the run's own error message when its status is failed
    manifest: dict = dataclasses.field(default_factory=dict, repr=False)


class Run:
    """An open run folder. Writers take paths relative to the folder."""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self._started = time.perf_counter()

    def __repr__(self) -> str:
        return f"Run({self.name!r}, status={self.status!r}, path='{self.path}')"

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.path.name)

    @property
    def status(self) -> str | None:
        return self.manifest.get("status")

    @property
    def artifacts(self) -> list[str]:
        return [a["path"] for a in self.manifest.get("artifacts", [])]

    # -- paths ---------------------------------------------------------------------------

    def resolve(self, rel: str | os.PathLike) -> Path:
        """The absolute path of artifact `rel`; RunError if it would leave the run folder."""
        rel_path = Path(rel)
        root = self.path.resolve()
        target = (root / rel_path).resolve()
        if rel_path.is_absolute() or str(rel) == "" or root not in target.parents:
            raise RunError(f"artifact path {str(rel)!r} must be a relative path inside the run folder {self.path}")
        if target.relative_to(root).as_posix() == MANIFEST:
            raise RunError(f"{MANIFEST!r} is the run's manifest, not an artifact; pick another name")
        return target

    # -- writers -------------------------------------------------------------------------

    def write_bytes(self, rel: str, data: bytes, format: str = "bytes") -> Path:
        target = self.resolve(rel)
        atomic_write(target, lambda f: f.write(data))
        self._add_artifact(target, format)
        return target

    def write_text(self, rel: str, text: str, format: str = "text") -> Path:
        return self.write_bytes(rel, text.encode("utf-8"), format)

    def write_json(self, rel: str, obj: Any) -> Path:
        return self.write_text(rel, dumps(obj) + "\n", "json")

    def write_jsonl(self, rel: str, rows: Iterable[Any]) -> Path:
        text = "".join(dumps(row, indent=None) + "\n" for row in rows)
        return self.write_text(rel, text, "jsonl")

    def write_tensors(self, rel: str, tensors: dict, metadata: dict | None = None) -> Path:
        """Save a dict of torch tensors as safetensors; metadata values are stored as strings."""
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        meta = {str(k): v if isinstance(v, str) else dumps(v, indent=None) for k, v in (metadata or {}).items()}
        return self.write_bytes(rel, save(tensors, metadata=meta or None), "safetensors")

    def write_parquet(self, rel: str, frame: Any) -> Path:
        """Save a pandas DataFrame as parquet (needs pyarrow)."""
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return self.write_bytes(rel, buf.getvalue(), "parquet")

    # -- readers -------------------------------------------------------------------------

    def read_bytes(self, rel: str) -> bytes:
        target = self.resolve(rel)
        if not target.is_file():
            raise RunError(f"run {self.name!r} has no artifact {str(rel)!r} (it has: {', '.join(self.artifacts) or 'none'})")
        return target.read_bytes()

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_text(rel))

    def read_jsonl(self, rel: str) -> list[Any]:
        return [json.loads(line) for line in self.read_text(rel).splitlines() if line.strip()]

    def read_tensors(self, rel: str, with_metadata: bool = False):
        """The dict of tensors (and, if asked, the metadata dict of strings)."""
        target = self.resolve(rel)
        if not target.is_file():
            self.read_bytes(rel)  # raises the friendly "no artifact" error
        tensors, meta = read_safetensors(target)
        return (tensors, meta) if with_metadata else tensors

    def read_parquet(self, rel: str):
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.read_bytes(rel)))

    # -- manifest ------------------------------------------------------------------------

    def add_model(self, name: str, model_or_identity: Any = None) -> None:
        """Record a model the run used: give the model itself, and its identity is recorded with
        the one weights hash (harness.identity), or give an identity dict already made."""
        if hasattr(model_or_identity, "state_dict"):
            from harness.identity import model_identity

            model_or_identity = model_identity(model_or_identity)
        self.manifest.setdefault("models", {})[name] = dict(model_or_identity or {})
        self.save_manifest()

    def record_timing(self, key: str, seconds: float) -> None:
        self.manifest.setdefault("timings", {})[key] = round(float(seconds), 4)
        self.save_manifest()

    @contextlib.contextmanager
    def timer(self, key: str) -> Iterator[None]:
        """`with run.timer("load/gpt2"): ...` records the block's wall time under `key`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.record_timing(key, time.perf_counter() - start)

    def finish(self, status: str = "complete", metrics: dict | None = None, error: str | None = None) -> None:
        if status not in STATUSES:
            raise RunError(f"unknown run status {status!r}; use one of {', '.join(STATUSES)}")
        self.manifest["status"] = status
        self.manifest["finished"] = now_iso()
        self.manifest.setdefault("timings", {})["total"] = round(time.perf_counter() - self._started, 4)
        if metrics:
            self.manifest.setdefault("metrics", {}).update(metrics)
        if error:
            self.manifest["error"] = error
        self.save_manifest()

    def save_manifest(self) -> None:
        text = dumps(self.manifest) + "\n"
        atomic_write(self.path / MANIFEST, lambda f: f.write(text.encode("utf-8")))

    def add_artifacts(self, rels: Iterable[str], format: str, save: bool = True) -> None:
        """Record files a job wrote into the folder itself (atomically, e.g. shards written by a
        pool of writers), in one manifest write (none with save=False: the caller's next manifest
        write, e.g. finish, records them); each must exist."""
        entries = {}
        for rel in rels:
            target = self.resolve(rel)
            entries[target.relative_to(self.path.resolve()).as_posix()] = target.stat().st_size
        arts = [a for a in self.manifest.setdefault("artifacts", []) if a["path"] not in entries]
        self.manifest["artifacts"] = arts + [{"path": k, "format": format, "bytes": n} for k, n in entries.items()]
        if save:
            self.save_manifest()

    def _add_artifact(self, target: Path, format: str) -> None:
        rel = target.relative_to(self.path.resolve()).as_posix()
        entry = {"path": rel, "format": format, "bytes": target.stat().st_size}
        arts = [a for a in self.manifest.setdefault("artifacts", []) if a["path"] != rel]
        self.manifest["artifacts"] = arts + [entry]
        self.save_manifest()

    # -- context manager: the run ends complete, failed or interrupted -----------------------

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.status != "running":
            return  # finished explicitly inside the block
        if exc_type is None:
            self.finish("complete")
        elif issubclass(exc_type, HarnessError) and self._never_started():
            shutil.rmtree(self.path, ignore_errors=True)  # bad input found before any work: no run at all
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end_quietly("interrupted", "interrupted")
        else:
            self.end_quietly("failed", f"{exc_type.__name__}: {exc}")

    def _never_started(self) -> bool:
        """Nothing written yet and not a resumed run: the folder holds only its manifest."""
        return (not self.manifest.get("artifacts") and not self.manifest.get("resumed")
                and all(p.name == MANIFEST or p.name.startswith(".") for p in self.path.iterdir()))

    def end_quietly(self, status: str, error: str) -> None:
        """Mark the run ended while another error is on its way out: if the folder can no longer be
        written (made read-only, disk full), that error, not this one, is the one to report.

        A folder that refuses new files refuses the atomic manifest write (it makes a temporary
        file); the manifest is then rewritten in place, the one write still possible there."""
        error = (str(error).splitlines() or [""])[0]
        try:
            self.finish(status, error=error)
            return
        except OSError:
            pass
        try:
            with open(self.path / MANIFEST, "r+", encoding="utf-8") as f:
                f.write(dumps(self.manifest) + "\n")
                f.truncate()
        except OSError:
            pass

    # -- notes, warnings, metrics, resuming -------------------------------------------------

    def add_note(self, text: str, key: str = "notes") -> bool:
        """Record a note in the manifest once (a resumed run that says it again adds nothing)."""
        notes = self.manifest.get(key)
        notes = notes if isinstance(notes, list) else []
        if text in notes:
            return False
        self.manifest[key] = [*notes, text]
        self.save_manifest()
        return True

    def add_warning(self, text: str) -> bool:
        return self.add_note(text, key="warnings")

    def add_metrics(self, metrics: dict) -> None:
        self.manifest.setdefault("metrics", {}).update(metrics)
        self.save_manifest()

    def record(self, key: str, value: Any, save: bool = True) -> None:
        """A field of this run kind's own in the manifest (an SAE's exclusion rules and counts,
        ...); the fields every run has are set through the methods above, never here."""
        if key in RESERVED_FIELDS:
            raise RunError(f"manifest field {key!r} is the run store's own; use its method instead")
        self.manifest[key] = value
        if save:
            self.save_manifest()

    def resume(self) -> "Run":
        """Mark an unfinished run as running again, counting the resumes."""
        self.manifest.pop("error", None)
        self.manifest.update(status="running", finished=None,
                             resumed=int(self.manifest.get("resumed") or 0) + 1, **process_identity())
        self._started = time.perf_counter()
        self.save_manifest()
        return self


class RunStore:
    """The folder that holds run folders (default $INTERP_HARNESS_RUNS or ./runs)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()

    def __repr__(self) -> str:
        return f"RunStore('{self.root}')"

    def _path(self, name: str) -> Path:
        check_name(name)
        root = self.root.resolve()
        path = (root / name).resolve()
        if path.parent != root:  # e.g. a symlink that leads out of the store
            raise RunError(f"run name {name!r} resolves outside the runs folder {self.root}")
        return path

    def path_of(self, name: str) -> Path:
        """Where the run called `name` lives (or would): always inside the runs folder, after
        resolving symlinks; a path, '..' or an absolute name is refused."""
        return self._path(name)

    def resolve(self, name_or_path: str | os.PathLike) -> Path:
        """The folder of a run named in this store, or of an explicit path to a run folder (for
        reading: a path names a folder the user chose, a name can never leave the store)."""
        text = str(name_or_path)
        if isinstance(name_or_path, os.PathLike) or os.sep in text or "/" in text:
            return Path(text).expanduser()
        return self._path(text)

    def check_writable(self) -> None:
        """RunError unless runs can be written here; called before any work starts."""
        check_writable(self.root, f"a writable --runs folder (or set ${RUNS_ENV})")

    def resume(self, name: str, kind: str) -> Run | None:
        """The unfinished run called `name` of this kind, marked running again; None when there is
        no such run. RunError when the name is taken by a finished run or another kind."""
        path = self._path(name)
        if not path.exists():
            return None
        run = self.open(name)
        if run.manifest.get("kind") != kind:
            raise RunError(f"run {name!r} is a {run.manifest.get('kind')} run, not a {kind} run; pick another --name")
        if run.status == "complete":
            raise RunError(f"{kind} run {name!r} is already complete in {self.root}; pick another --name")
        return run.resume()

    def check_available(self, name: str) -> None:
        """RunError unless `name` is a valid name not yet taken; lets a command that does slow
        work before `create` fail on a bad --name first."""
        if self._path(name).exists():
            raise RunError(f"a run named {name!r} already exists in {self.root}; pick another --name")

    def create(self, kind: str, name: str | None = None, command: str | list | None = None,
               config: dict | None = None, seed: int | None = None) -> Run:
        check_name(kind, "run kind")
        self.check_writable()
        self.root.mkdir(parents=True, exist_ok=True)
        if name is None:
            path = self._fresh(f"{kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
        else:
            path = self._path(name)
            try:
                path.mkdir()
            except FileExistsError:
                raise RunError(f"a run named {name!r} already exists in {self.root}; pick another --name") from None
        return _start(path, kind, command, config, seed)

    def _fresh(self, base: str) -> Path:
        # Default names carry a timestamp; two runs in the same second get -2, -3, ...
        for i in range(1, 1000):
            path = self._path(base if i == 1 else f"{base}-{i}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
        raise RunError(f"could not find a free run name starting with {base!r} in {self.root}")

    def open(self, name_or_path: str | os.PathLike) -> Run:
        """Open a run by its name in this store, or by a path to any run folder (see resolve)."""
        text = str(name_or_path)
        path = self.resolve(name_or_path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            where = f"folder {path}" if path.name != text else f"{self.root}"
            raise RunError(f"no run {text!r} in {where} (no {MANIFEST}); `harness runs` lists the runs")
        return Run(path, _read_manifest(manifest_path))

    def list(self) -> list[RunInfo]:
        """Every run folder under root, newest first; unreadable ones carry `error`."""
        if not self.root.is_dir():
            return []
        infos = []
        for path in self.root.iterdir():
            if not path.is_dir() or path.name.startswith("."):
                continue
            try:
                m = _read_manifest(path / MANIFEST)
                _check_fields(m, path)
            except RunError as e:
                infos.append(RunInfo(name=path.name, path=path, error=str(e)))
                continue
            models = m.get("models") or {}
            status = m.get("status")
            if status == "running" and _process_gone(m):
                status = "stale"  # its process is no longer alive: killed, or the machine restarted
            infos.append(RunInfo(name=m.get("name") or path.name, path=path, kind=m.get("kind"),
                                 created=m.get("created"), status=status,
                                 models=[str(k) for k in models] if isinstance(models, (dict, list)) else [],
                                 failure=m.get("error"), manifest=m))
        infos.sort(key=lambda i: (i.created or "", i.name), reverse=True)
        return infos


def _start(path: Path, kind: str, command, config: dict | None, seed: int | None, models: dict | None = None) -> Run:
    """Write the first manifest of a new run in the (existing, empty) folder `path`."""
    if isinstance(command, (list, tuple)):
        command = " ".join(str(c) for c in command)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "kind": kind, "name": path.name, "created": now_iso(), "finished": None,
        "command": command, "models": dict(models or {}), "config": config or {}, "seed": seed,
        "versions": versions(), "compute": compute_settings(), "timings": {}, "status": "running", **process_identity(),
        "metrics": {},
        "artifacts": [],
    }
    run = Run(path, json.loads(dumps(manifest)))  # round trip: what is kept is what is saved
    run.save_manifest()
    return run


def claim_run_folder(folder: str | os.PathLike, kind: str, config: dict, command: str | list | None = None,
                     models: dict | None = None, seed: int | None = None) -> Run:
    """The run folder of a resumable job: created (with its manifest) when new or empty, reopened
    when it holds the same job (`kind` and `config` equal, as saved) - marked running again unless
    it is complete. A folder holding a different job, another kind of run, or other files is
    refused with a RunError naming what differs: resuming into it would mix two jobs' results."""
    check_name(kind, "run kind")
    folder = Path(folder)
    config = json.loads(dumps(config))  # compare what would be saved
    if folder.exists() and not folder.is_dir():
        raise RunError(f"--out {folder} is a file, not a folder")
    path = folder / MANIFEST
    if not path.is_file():
        if folder.exists() and any(not p.name.startswith(".") for p in folder.iterdir()):
            raise RunError(f"{folder} is not empty and holds no {kind} manifest; choose an empty or new --out")
        folder.mkdir(parents=True, exist_ok=True)
        return _start(folder, kind, command, config, seed, models)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunError(f"{path}: unreadable manifest ({type(e).__name__}); it is not a {kind} run this job can resume") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != kind or manifest.get("config") != config:
        same_kind = isinstance(manifest, dict) and manifest.get("kind") == kind
        diff = (config_differences(manifest.get("config") or {}, config) or ["?"]) if same_kind else ["kind"]
        raise RunError(f"{folder} holds a different {kind} job (differs in: {', '.join(diff)}); "
                       "use another --out, or delete that folder to start over")
    run = Run(folder, manifest)
    return run if run.status == "complete" else run.resume()


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two (nested) configs."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


# Fields a listing reads, with the types a valid manifest gives them (None is allowed for each).
FIELD_TYPES = {"name": str, "kind": str, "created": str, "finished": str, "status": str, "error": str,
               "command": str, "models": (dict, list), "config": dict, "metrics": dict, "timings": dict,
               "artifacts": list, "notes": list, "warnings": list}


def _check_fields(manifest: dict, path: Path) -> None:
    """RunError naming the first field of the wrong type: such a run is listed as corrupt, so one
    damaged folder never breaks a listing or the dashboard."""
    for key, types in FIELD_TYPES.items():
        value = manifest.get(key)
        if value is not None and not isinstance(value, types):
            raise RunError(f"{path.name}: corrupt {MANIFEST}: field {key!r} is a {type(value).__name__}")


def process_identity() -> dict:
    """Which process is writing the run, so a listing can tell a live run from a killed one."""
    return {"pid": os.getpid(), "host": platform.node()}


def _process_gone(manifest: dict) -> bool:
    pid, host = manifest.get("pid"), manifest.get("host")
    if not isinstance(pid, int) or host != platform.node():
        return False  # written elsewhere (or by an older harness): cannot tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path.parent.name}: missing {MANIFEST} (not a run folder, or its job died before starting)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path.parent.name}: unreadable {MANIFEST} ({type(e).__name__}: {e})") from None
    if not isinstance(manifest, dict):
        raise RunError(f"{path.parent.name}: {MANIFEST} is not a JSON object")
    return manifest
