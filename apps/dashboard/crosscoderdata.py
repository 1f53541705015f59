"""Crosscoder runs for the Crosscoder page: which crosscoder a run holds or names, the findings
`harness crosscoder latents` wrote about it, the models it was trained on, and its latents'
statistics read from the weights (cached per folder and file time).

A `crosscoder` run (`harness crosscoder train`) holds the crosscoder/ folder; a
`crosscoder-latents` run holds findings.json and names the crosscoder it read in its config.
Either opens the page: a train run shows the newest latents run made from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from apps.dashboard import data
from harness.errors import HarnessError
from harness.runs import RunInfo

KINDS = ("crosscoder-latents", "crosscoder")
MAKE = "harness crosscoder train --base B --aligned A --name CC && harness crosscoder latents CC --base B --aligned A"


class NotACrosscoderRun(HarnessError):
    """A run that neither holds a crosscoder nor names one, or whose crosscoder cannot be read."""


@dataclass
class CrosscoderRun:
    info: RunInfo  # the run that was picked
    folder: Path  # the crosscoder folder (config.json + crosscoder.safetensors)
    config: dict  # its CrosscoderConfig as a dict
    train: RunInfo | None  # the run that trained it, when it is in the runs folder
    latents: RunInfo | None  # the run whose findings are shown
    findings: dict | None
    models: dict[str, str]  # "base" / "aligned" -> model source, as the runs record them


def resolve(info: RunInfo) -> CrosscoderRun:
    """The crosscoder behind `info`; NotACrosscoderRun (one line) for any other run."""
    from probes.crosscoder.io import CONFIG_FILE, KIND, crosscoder_folder, read_config

    if info.kind not in KINDS:
        raise NotACrosscoderRun(f"run {info.name} is a {info.kind!r} run, not a crosscoder run; this page reads the "
                                f"runs of `{MAKE}`")
    findings, latents = None, None
    if info.kind == "crosscoder-latents":
        named = (info.manifest.get("config") or {}).get("crosscoder")
        if not named:
            raise NotACrosscoderRun(f"run {info.name} does not name the crosscoder it read (config.crosscoder)")
        folder = crosscoder_folder(named, runs_root=data.runs_root())
        findings, latents = _findings(info), info
    else:
        folder = info.path / KIND
        if not (folder / CONFIG_FILE).is_file():
            raise NotACrosscoderRun(f"run {info.name} holds no {KIND}/{CONFIG_FILE}: the crosscoder was not saved "
                                    f"(status {info.status})")
    try:
        cfg, _ = read_config(Path(folder))
    except HarnessError as e:
        raise NotACrosscoderRun(f"run {info.name}: {e}") from None
    train = next((i for i in data.runs_of_kind("crosscoder") if (i.path / KIND).resolve() == Path(folder).resolve()), None)
    if latents is None:
        latents = newest_latents_run(folder)
        findings = _findings(latents) if latents is not None else None
    models = _models(train, cfg.models)
    return CrosscoderRun(info, Path(folder), cfg.to_dict(), train, latents, findings, models)


def _findings(info: RunInfo) -> dict:
    if not data.has(info.path, "findings.json"):
        raise NotACrosscoderRun(f"run {info.name} has no findings.json (status {info.status})")
    f = data.read_json(info.path, "findings.json")
    if not isinstance(f, dict) or f.get("method") != "crosscoder":
        raise NotACrosscoderRun(f"run {info.name}'s findings.json is not a crosscoder's "
                                f"(method {f.get('method') if isinstance(f, dict) else None!r})")
    return f


def newest_latents_run(folder: Path) -> RunInfo | None:
    """The newest complete `crosscoder-latents` run that read this crosscoder folder."""
    from probes.crosscoder.io import crosscoder_folder

    for i in data.runs_of_kind("crosscoder-latents"):  # newest first
        named = (i.manifest.get("config") or {}).get("crosscoder")
        if named and i.status == "complete" and data.has(i.path, "findings.json") and \
                crosscoder_folder(named, runs_root=data.runs_root()).resolve() == Path(folder).resolve():
            return i
    return None


def _models(train: RunInfo | None, configured) -> dict[str, str]:
    """Where the pair came from: the train run's recorded model sources (what the dashboard's
    model guard knows), else the names the crosscoder's config records."""
    recorded = (train.manifest.get("models") or {}) if train is not None else {}
    out = {}
    for i, role in enumerate(("base", "aligned")):
        source = (recorded.get(role) or {}).get("source") if isinstance(recorded.get(role), dict) else None
        if (not source or source == "in-memory") and len(configured) > i and configured[i] != role:
            source = configured[i]
        if source and source != "in-memory":
            out[role] = source
    return out


# -- the crosscoder itself ----------------------------------------------------------------------

def stamp(folder: Path) -> float:
    try:
        return (Path(folder) / "crosscoder.safetensors").stat().st_mtime
    except OSError:
        return 0.0


@st.cache_resource(show_spinner=False, max_entries=4)
def _load(folder: str, stamp: float):
    from probes.crosscoder.io import load_crosscoder

    return load_crosscoder(folder)


def load(folder: str | Path):
    """The crosscoder, loaded once per server process (reloaded when its weights change)."""
    return _load(str(folder), stamp(Path(folder)))


@st.cache_data(show_spinner=False, max_entries=8)
def _stats(folder: str, stamp: float) -> dict:
    from probes.crosscoder.latents import ALIGNED, BASE, decoder_cosines, relative_norms

    cc = _load(folder, stamp)
    norms = cc.decoder_norms().detach()
    per_layer = cc.W_dec.detach()[:, ALIGNED].norm(dim=-1)  # [latents, layers]: where each latent writes
    return {"relative_norm": relative_norms(cc).numpy(), "cosine": decoder_cosines(cc).numpy(),
            "norm_base": norms[:, BASE].numpy(), "norm_aligned": norms[:, ALIGNED].numpy(),
            "aligned_layer_norms": per_layer.numpy()}


def latent_stats(folder: str | Path) -> dict[str, np.ndarray]:
    """Per latent, from the weights: relative decoder norm, decoder cosine, each model's decoder
    norm, and the aligned decoder's norm at each layer read."""
    return _stats(str(folder), stamp(Path(folder)))
