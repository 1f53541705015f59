"""One model identity: where a model's weights came from (its `identity`: name, family, source)
plus one hash of the weights themselves. Every run that records a model records this, so a
cache, an eval and a diff of the same weights carry the same hash and can be matched."""

from __future__ import annotations

import hashlib

import torch


def file_sha256(path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (a weights file can be gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the model's state (names, dtypes, shapes, bytes), independent of its source."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().contiguous().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        if tensor.numel():  # the buffer itself, not a bytes copy of it: a third faster on SmolLM2
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def model_identity(model: torch.nn.Module, source=None) -> dict:
    """The model's identity with its weights hash computed now (weights may have been trained
    since loading) and a name and source always set."""
    identity = dict(getattr(model, "identity", None) or {})
    identity["weights_sha256"] = weights_sha256(model)
    cfg = getattr(model, "cfg", None)
    identity.setdefault("family", getattr(cfg, "family", None))
    if not identity.get("name"):
        identity["name"] = getattr(cfg, "name", None) or type(model).__name__
    if source is not None or "source" not in identity:
        identity["source"] = str(source) if source is not None else "in-memory"
    return identity
