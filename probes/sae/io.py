"""Load SAEs saved in SAELens's on-disk format (cfg.json + sae_weights.safetensors), from a
folder, a harness SAE run (its `sae/` folder) or a run name, and check that one fits a model's hook.

    sae = load_sae("runs/my-sae")            # or the sae/ folder inside, or any SAELens folder
    check_fits(sae, model, "blocks.3.hook_resid_post")   # HookNameError / ShapeError otherwise

Every failure is a one-line SAEError (a HarnessError) saying what is wrong with which file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.devices import device_of
from harness.errors import HarnessError, ShapeError

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SAE_SUBDIR = "sae"  # where a harness SAE run keeps the SAELens folder


class SAEError(HarnessError):
    """An SAE folder that is missing, corrupt, or does not fit the model it is used with."""


def sae_folder(path) -> Path:
    """The SAELens folder for `path`: itself, its `sae/` subfolder (a run), or a run name."""
    p = Path(path).expanduser()
    if not p.exists() and "/" not in str(path):
        from harness.runs import default_root

        p = default_root() / str(path)
    if not p.is_dir():
        raise SAEError(f"SAE folder {str(path)!r} does not exist; give a folder holding {CFG_FILE} and "
                       f"{WEIGHTS_FILE}, or an SAE run")
    if not (p / CFG_FILE).exists() and (p / SAE_SUBDIR / CFG_FILE).exists():
        p = p / SAE_SUBDIR
    return p


def read_cfg(folder: Path) -> dict:
    cfg_path = folder / CFG_FILE
    if not cfg_path.is_file():
        raise SAEError(f"{folder} is not an SAE folder: no {CFG_FILE} (SAELens format: {CFG_FILE} + {WEIGHTS_FILE})")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SAEError(f"corrupt SAE config {cfg_path}: {type(e).__name__}; re-save or retrain the SAE") from None
    if not isinstance(cfg, dict) or not {"d_in", "d_sae"} <= set(cfg):
        raise SAEError(f"SAE config {cfg_path} lacks d_in/d_sae; it was not written by SAELens")
    return cfg


def load_sae(path, device: str = "cpu", dtype: str | None = None):
    """A SAELens `SAE` (inference class) from disk, with friendly errors for bad folders."""
    from safetensors import safe_open
    from sae_lens import SAE
    from sae_lens.registry import SAE_CLASS_REGISTRY

    folder = sae_folder(path)
    cfg = read_cfg(folder)
    arch = cfg.get("architecture", "standard")
    if arch not in SAE_CLASS_REGISTRY:
        known = ", ".join(sorted(SAE_CLASS_REGISTRY))
        raise SAEError(f"{folder / CFG_FILE}: unknown SAE architecture {arch!r}; known: {known}")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise SAEError(f"{folder} has {CFG_FILE} but no {WEIGHTS_FILE}; the SAE was not saved completely")
    try:
        with safe_open(str(weights), framework="pt") as f:
            keys = list(f.keys())
    except Exception as e:  # safetensors raises its own error type for truncated/garbled files
        raise SAEError(f"corrupt SAE weights {weights}: {str(e).splitlines()[0]}; re-save or retrain the SAE") from None
    try:
        sae = SAE.load_from_disk(str(folder), device=device, dtype=dtype)
    except Exception as e:  # shape/key mismatches between cfg.json and the weights
        raise SAEError(f"SAE in {folder} does not load ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                       f"weights hold {', '.join(keys)}") from None
    return sae


def hook_width(model, hook: str) -> int:
    """The last-axis size of `hook`'s activations (what an SAE's d_in must be), from one short forward."""
    from harness.caching.hooks import stop_layer

    model.check_hook_names([hook])
    tokens = torch.zeros((1, 2), dtype=torch.long, device=device_of(model))
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=[hook],
                                        stop_at_layer=stop_layer([hook], model.cfg.n_layers))
    act = cache[hook]
    if act.dim() > 3:  # per-head hooks [batch, pos, head, d_head]: SAELens flattens the heads
        return int(act.shape[2] * act.shape[3])
    return int(act.shape[-1])


def check_fits(sae, model, hook: str | None = None) -> str:
    """The hook the SAE reads (given, or from its metadata), checked to exist and to have d_in features."""
    hook = hook or getattr(sae.cfg.metadata, "hook_name", None)
    if not hook:
        raise SAEError("the SAE records no hook_name; pass the hook it was trained on (--hook)")
    width = hook_width(model, hook)
    if width != sae.cfg.d_in:
        raise ShapeError(f"SAE d_in is {sae.cfg.d_in} but hook {hook!r} of this model has width {width}; "
                         "use the SAE with the model and hook it was trained on")
    return hook
