"""A resumable request cache that cannot run code: JSON Lines, one finished request per line.

lm-eval's own cache (`simple_evaluate(use_cache=...)`) is a sqlitedict, which unpickles its
values: a run folder that someone else wrote (a shared or downloaded run) could run code when an
eval resumes from it. The runner turns that cache off and uses this one instead.

Each line is `{"key": sha256, "method": ..., "value": ...}`, where the key is the SHA-256 of the
request (method and lm-eval's arguments, as canonical JSON) and the value is plain JSON checked
against the method's result type on read (loglikelihood: [float, bool]; loglikelihood_rolling:
float; generate_until: str). Reading never does anything but `json.loads`; a line that is not a
well-formed row (a torn last line after a crash, a planted foreign file) is ignored and its
request recomputed. Rows are appended as the model finishes them (lm-eval's cache hook fires per
request, inside a batch), each as one `write` of a whole line to a file opened for appending, and
fsynced when a call ends, so a task killed half-way resumes from its finished requests.

    cache = RequestCache(run.path / "cache" / "base.requests.jsonl")
    lm = HookedLMEval(model, request_cache=cache)   # or cache.attach(any lm-eval LM)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

from harness.errors import HarnessError

FORMAT = "harness-request-cache"
VERSION = 1
METHODS = ("loglikelihood", "loglikelihood_rolling", "generate_until")


class RunFolderError(HarnessError):
    """The run folder cannot be written (permissions, a full disk, a file where a folder belongs)."""


def request_key(method: str, args) -> str:
    """SHA-256 of a request: the method and lm-eval's argument tuple, as canonical JSON."""
    text = json.dumps([method, *list(args)], sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _checked(method: str, value: Any):
    """The value as the LM method returns it, or None when it is not of that method's type."""
    if method == "loglikelihood":
        if (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (int, float))
                and not isinstance(value[0], bool) and isinstance(value[1], bool) and not math.isnan(value[0])):
            return float(value[0]), value[1]
        return None
    if method == "loglikelihood_rolling":
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
            return float(value)
        return None
    if method == "generate_until":
        return value if isinstance(value, str) else None
    return None


def _uncacheable(method: str, args) -> bool:
    # As lm-eval's CachingLM: sampled generations are not cached (repeats must differ).
    return method == "generate_until" and len(args) > 1 and isinstance(args[1], dict) and bool(args[1].get("do_sample"))


class RequestCache:
    """Finished requests of one model, in one JSONL file (created on the first write)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._rows: dict[str, Any] = {}
        self._fd: int | None = None
        self.hits = 0
        self.misses = 0
        self.ignored_lines = 0
        self._load()

    # -- reading ---------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as err:
            raise RunFolderError(f"cannot read the request cache {self.path}: {err.strerror or err}") from None
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                self.ignored_lines += 1
                continue
            if not isinstance(row, dict) or row.get("format") == FORMAT:
                continue  # the header line
            method, key = row.get("method"), row.get("key")
            value = _checked(method, row.get("value")) if method in METHODS else None
            if value is None or not isinstance(key, str):
                self.ignored_lines += 1
                continue
            self._rows[key] = value

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, method: str, args):
        return self._rows.get(request_key(method, args))

    # -- writing ---------------------------------------------------------------------------------
    def _open(self) -> int:
        if self._fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                size = os.fstat(fd).st_size
                if size == 0:
                    os.write(fd, (json.dumps({"format": FORMAT, "version": VERSION}) + "\n").encode())
                else:  # a torn last line (a crash mid-write) must not swallow the next row
                    with open(self.path, "rb") as f:
                        f.seek(size - 1)
                        if f.read(1) != b"\n":
                            os.write(fd, b"\n")
            except OSError as err:
                raise RunFolderError(f"cannot write the request cache {self.path}: {err.strerror or err}") from None
            self._fd = fd
        return self._fd

    def add(self, method: str, args, value) -> None:
        if method not in METHODS or _uncacheable(method, args):
            return
        key = request_key(method, args)
        if key in self._rows:
            return
        stored = list(value) if isinstance(value, tuple) else value
        if _checked(method, stored) is None:
            return  # nothing JSON cannot round-trip exactly
        line = json.dumps({"key": key, "method": method, "value": stored}, ensure_ascii=False) + "\n"
        try:
            os.write(self._open(), line.encode("utf-8"))
        except OSError as err:
            raise RunFolderError(f"cannot write the request cache {self.path}: {err.strerror or err}") from None
        self._rows[key] = _checked(method, stored)

    def sync(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as err:
                raise RunFolderError(f"cannot write the request cache {self.path}: {err.strerror or err}") from None

    def close(self) -> None:
        if self._fd is not None:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = None

    # -- use -------------------------------------------------------------------------------------
    def hook(self) -> "CacheHook":
        return CacheHook(self)

    def run(self, method: str, requests: list, compute: Callable[[list], list]) -> list:
        """Answers for `requests` (lm-eval Instances): cached ones read back, the rest computed by
        `compute` (which may record rows itself through the hook as it goes) and stored."""
        answers: list = [None] * len(requests)
        todo: list[int] = []
        for i, req in enumerate(requests):
            if not _uncacheable(method, req.args):
                hit = self.get(method, req.args)
                if hit is not None:
                    answers[i] = hit
                    continue
            todo.append(i)
        self.hits += len(requests) - len(todo)
        self.misses += len(todo)
        try:
            if todo:
                fresh = compute([requests[i] for i in todo])
                if len(fresh) != len(todo):
                    raise HarnessError(f"{method} returned {len(fresh)} answers for {len(todo)} requests")
                for i, value in zip(todo, fresh):
                    answers[i] = value
                    self.add(method, requests[i].args, value)
        finally:
            self.sync()  # what finished survives an exception (a kill, a full disk) in compute
        return answers


class CacheHook:
    """lm-eval's `cache_hook` interface (`add_partial`), writing to a RequestCache."""

    def __init__(self, cache: RequestCache):
        self.cache = cache

    def add_partial(self, attr: str, req, res) -> None:
        if req is not None:
            self.cache.add(attr, req, res)
