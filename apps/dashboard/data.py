"""Cached loaders for the dashboard: the run listing and artifacts (st.cache_data, keyed by the
run's folder and manifest time so a rewritten run is re-read) and models (st.cache_resource:
each model loads once per server process and is shared by every session and page).

The runs folder is $INTERP_HARNESS_RUNS or ./runs (`harness app --runs DIR` sets the variable).

A page loads only the models the zoo or the runs folder names: a URL such as `?model=/any/folder`
must not make the server read (and run) whatever it points at. `harness app --any-model` sets
$INTERP_HARNESS_APP_ANY_MODEL to lift that for a trusted user.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import streamlit as st

from harness.errors import HarnessError
from harness.runs import RunInfo, RunStore, default_root

ANY_MODEL_ENV = "INTERP_HARNESS_APP_ANY_MODEL"


def runs_root() -> Path:
    return default_root()


@st.cache_data(ttl=30, show_spinner=False)
def list_runs(root: str) -> list[RunInfo]:
    """Every run under `root`, newest first; a run with an unreadable manifest carries `error`."""
    return RunStore(root).list()


def refresh() -> None:
    """Forget cached listings and artifacts (after new runs were written)."""
    list_runs.clear()
    model_choices.clear()
    _read.clear()
    _read_tensors.clear()


def runs_of_kind(kind: str | tuple[str, ...]) -> list[RunInfo]:
    kinds = (kind,) if isinstance(kind, str) else kind
    return [i for i in list_runs(str(runs_root())) if i.kind in kinds and not i.error]


def _stamp(path: Path) -> float:
    """Modification time of the run's manifest: part of the cache key of its artifacts."""
    try:
        return (Path(path) / "manifest.json").stat().st_mtime
    except OSError:
        return 0.0


def open_run(path: str | Path):
    return RunStore(Path(path).parent).open(Path(path))


@st.cache_data(show_spinner=False, max_entries=256)
def _read(path: str, rel: str, how: str, stamp: float) -> Any:
    run = open_run(path)
    return getattr(run, f"read_{how}")(rel)


def read_json(path: str | Path, rel: str) -> Any:
    return _read(str(path), rel, "json", _stamp(path))


def read_jsonl(path: str | Path, rel: str) -> list:
    return _read(str(path), rel, "jsonl", _stamp(path))


@st.cache_data(show_spinner=False, max_entries=32)
def _read_tensors(path: str, rel: str, stamp: float):
    """{name: numpy array}, metadata; numpy so cached values can be copied between reruns."""
    tensors, meta = open_run(path).read_tensors(rel, with_metadata=True)
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in tensors.items()}, meta


def read_tensors(path: str | Path, rel: str):
    return _read_tensors(str(path), rel, _stamp(path))


def has(path: str | Path, rel: str) -> bool:
    return (Path(path) / rel).is_file()


# -- models --------------------------------------------------------------------------------------

def check_model_allowed(source: str) -> None:
    """HarnessError unless the zoo or a run in the runs folder names `source` (or --any-model)."""
    if os.environ.get(ANY_MODEL_ENV) == "1":
        return
    from harness import zoo

    if source in zoo.known_names() or source in model_choices(str(runs_root())):
        return
    raise HarnessError(f"{source!r} is neither a zoo model nor a model that a run in {runs_root()} was made from; "
                       "the dashboard loads only those (start it with `harness app --any-model` to load any folder)")


def load_model(source: str, device: str = "cpu"):
    """A HookedLM, loaded once per server process (zoo name, or a model folder a run names)."""
    check_model_allowed(source)
    return _load_model(source, device)


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_model(source: str, device: str = "cpu"):
    import harness

    return harness.load(source, device=device).eval()


@st.cache_data(ttl=60, show_spinner=False)
def model_choices(root: str) -> list[str]:
    """Models to offer: model folders that runs were made from, then the installed zoo models."""
    choices: list[str] = []
    for info in list_runs(root):
        for value in model_sources(info.manifest):
            if Path(value).is_dir() and value not in choices:
                choices.append(value)
    try:
        from harness import zoo

        choices += [m["name"] for m in zoo.list_models() if m.get("installed") and m["name"] not in choices]
    except Exception:  # a broken zoo must not break the page; the text box still works
        pass
    return choices


def model_sources(manifest: dict) -> list[str]:
    """Strings naming where a run's models came from (manifest models' source, config models)."""
    out = []
    models = manifest.get("models")
    if isinstance(models, dict):
        out += [v.get("source") for v in models.values() if isinstance(v, dict)]
    configured = (manifest.get("config") or {}).get("models")
    if isinstance(configured, dict):
        out += list(configured.values())
    elif isinstance(configured, list):
        out += configured
    return [v for v in out if isinstance(v, str) and v]
