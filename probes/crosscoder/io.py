"""Save and load a crosscoder: `config.json` (the CrosscoderConfig) + `crosscoder.safetensors`.

Both files are written atomically (temporary sibling, fsync, rename); the weights go first, so a
folder with a config always has its weights. Loading checks every tensor's shape against the
config and raises a one-line CrosscoderError for a folder of another shape or kind.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.runs import atomic_write, dumps
from probes.crosscoder.config import CrosscoderConfig, CrosscoderError
from probes.crosscoder.model import Crosscoder

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "crosscoder.safetensors"
KIND = "crosscoder"


def tensors_of(cc: Crosscoder) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in cc.state_dict().items()}


def save_crosscoder(cc: Crosscoder, folder, extra: dict | None = None) -> Path:
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = save(tensors_of(cc), metadata={"kind": KIND})
    atomic_write(folder / WEIGHTS_FILE, lambda f: f.write(data))
    text = dumps({"kind": KIND, "config": cc.cfg.to_dict(), **(extra or {})}) + "\n"
    atomic_write(folder / CONFIG_FILE, lambda f: f.write(text.encode()))
    return folder


def crosscoder_folder(path, runs_root=None) -> Path:
    """`path` itself, or the `crosscoder/` folder inside a crosscoder run (a path or a run name
    in `runs_root`, default the run store's root)."""
    p = Path(path).expanduser()
    if not p.exists() and "/" not in str(path):
        from harness.runs import default_root

        p = Path(runs_root or default_root()) / str(path)
    if p.is_dir() and not (p / CONFIG_FILE).exists() and (p / KIND / CONFIG_FILE).exists():
        p = p / KIND
    return p


def read_config(folder: Path) -> tuple[CrosscoderConfig, dict]:
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise CrosscoderError(f"crosscoder folder {str(folder)!r} does not exist; train one with `harness crosscoder train`")
    if not path.is_file():
        raise CrosscoderError(f"{folder} is not a crosscoder folder: no {CONFIG_FILE} "
                              f"(a crosscoder folder holds {CONFIG_FILE} + {WEIGHTS_FILE})")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CrosscoderError(f"corrupt crosscoder config {path} ({type(e).__name__}); retrain or re-save it") from None
    if not isinstance(meta, dict) or meta.get("kind") != KIND or not isinstance(meta.get("config"), dict):
        raise CrosscoderError(f"{path} is not a crosscoder config (kind {meta.get('kind') if isinstance(meta, dict) else None!r}); "
                              "is this an SAE folder? use `harness sae` for SAEs")
    try:
        return CrosscoderConfig.from_dict(meta["config"]), meta
    except TypeError as e:
        raise CrosscoderError(f"crosscoder config {path} is incomplete ({e}); retrain or re-save it") from None


def load_crosscoder(path, device: str = "cpu", runs_root=None) -> Crosscoder:
    from safetensors import SafetensorError, safe_open

    folder = crosscoder_folder(path, runs_root)
    cfg, _ = read_config(folder)
    cc = Crosscoder(cfg)
    want = {k: tuple(v.shape) for k, v in cc.state_dict().items()}
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CrosscoderError(f"{folder} has {CONFIG_FILE} but no {WEIGHTS_FILE}; retrain or re-save the crosscoder")
    try:
        with safe_open(str(weights), framework="pt") as f:
            got = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CrosscoderError(f"unreadable crosscoder weights {weights} ({e}); retrain or re-save it") from None
    if set(got) != set(want):
        raise CrosscoderError(f"{weights} holds tensors {sorted(got)}, not a crosscoder's {sorted(want)}")
    bad = [f"{k} {tuple(got[k].shape)} vs {want[k]}" for k in want if tuple(got[k].shape) != want[k]]
    if bad:
        raise CrosscoderError(f"{weights} does not match its config: {'; '.join(bad[:3])} "
                              f"(config: d_in {cfg.d_in}, d_latent {cfg.d_latent}, layers {cfg.n_layers})")
    cc.load_state_dict(got)
    return cc.to(device).eval()
