"""An SAE made elsewhere (any folder SAE.load_from_disk reads) becomes a harness SAE run, so what
`sae eval` / `sae features` find is kept and the dashboard's Features page lists it.

    run = adopt_sae("downloads/my-saelens-sae", RunStore("runs"))   # run kind "sae", files in sae/
    run = adopt_sae(same_folder, store)                              # the same run again

The SAELens files are copied into the run's `sae/` (the run stands on its own if the source
moves). The run's config names the source folder and the weights' sha256: adopting the same
weights again reopens that run instead of making another.
"""

from __future__ import annotations

import shutil

from harness.identity import file_sha256
from probes.sae.io import CFG_FILE, SAE_SUBDIR, WEIGHTS_FILE, read_cfg, sae_folder

KIND = "sae"
SAELENS_FILES = (CFG_FILE, WEIGHTS_FILE, "sparsity.safetensors", "runner_cfg.json")


def adopt_sae(path, store, name: str | None = None, command: str | None = None, model=None):
    """The SAE run for the SAELens folder `path` (made, or found again); `model`, when given, is
    recorded as the model the SAE reads (the Features page analyses features live with it)."""
    folder = sae_folder(path)
    cfg = read_cfg(folder)
    meta = cfg.get("metadata") or {}
    digest = file_sha256(folder / WEIGHTS_FILE) if (folder / WEIGHTS_FILE).is_file() else None
    for info in store.list():  # the same weights adopted before: that run
        config = (info.manifest or {}).get("config") or {}
        if info.kind == KIND and config.get("adopted_from") and config.get("weights_sha256") == digest:
            run = store.open(info.path)
            if model is not None:
                run.add_model(model.identity.get("name") or "model", model)
            return run
    config = {"adopted_from": str(folder.resolve()), "weights_sha256": digest,
              "hook": meta.get("hook_name"), "arch": cfg.get("architecture", "standard"),
              "d_in": cfg.get("d_in"), "d_sae": cfg.get("d_sae"), "context_length": meta.get("context_size")}
    run = store.create(KIND, name=name or f"sae-{folder.name if folder.name != SAE_SUBDIR else folder.parent.name}",
                       command=command, config=config)
    target = run.path / SAE_SUBDIR
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for file in SAELENS_FILES:
        if (folder / file).is_file():
            shutil.copy2(folder / file, target / file)
            copied.append(f"{SAE_SUBDIR}/{file}")
    run.add_artifacts(copied, "saelens")
    if model is not None:
        run.add_model(model.identity.get("name") or "model", model)
    elif meta.get("model_name"):
        run.add_model(str(meta["model_name"]), {"name": meta["model_name"], "source": meta["model_name"]})
    run.add_note(f"adopted from {folder}: an SAE saved by SAELens (or another tool), not trained here")
    run.finish("complete")
    return run
