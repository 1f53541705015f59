"""Difference-of-means directions between two prompt sets (harmful vs harmless, say).

    dirs = mean_difference(model, harmful, harmless, kind="resid_pre", position=-1)
    dirs.separation          # per layer: how far apart the two sets sit along that layer's direction
    v = dirs.unit(layer=9)   # [d_model], unit length
    dirs.save(path); Directions.load(path)

A direction is mean(positive) - mean(negative) at one hook and position. Its raw length is kept
(steering by "one mean difference" is a natural scale); `unit()` gives the normalised vector.
`separation` (difference of the projected means over their pooled standard deviation) helps
choose a layer; the choice stays the caller's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from harness.errors import ConfigError, ShapeError
from probes.activations import collect, layer_hooks, layer_of


@dataclass
class Directions:
    hooks: list[str]
    vectors: torch.Tensor  # [n_hooks, d]: mean(positive) - mean(negative)
    separation: torch.Tensor  # [n_hooks]
    position: int | str = -1
    model: dict = field(default_factory=dict)  # name, family, d_model, n_layers of the source model

    def index(self, layer: int | None = None, hook: str | None = None) -> int:
        if hook is not None:
            if hook not in self.hooks:
                raise ConfigError(f"no direction at {hook!r}; have {', '.join(self.hooks)}")
            return self.hooks.index(hook)
        layers = [layer_of(h) for h in self.hooks]
        if layer is None:
            return int(self.separation.argmax())
        if layer not in layers:
            raise ConfigError(f"no direction at layer {layer}; have layers {layers}")
        return layers.index(layer)

    def vector(self, layer: int | None = None, hook: str | None = None) -> torch.Tensor:
        """The raw mean difference (layer=None: the most separating layer)."""
        return self.vectors[self.index(layer, hook)]

    def unit(self, layer: int | None = None, hook: str | None = None) -> torch.Tensor:
        v = self.vector(layer, hook)
        return v / v.norm().clamp(min=1e-12)

    @property
    def best_layer(self) -> int | None:
        return layer_of(self.hooks[int(self.separation.argmax())])

    def rows(self) -> list[dict]:
        return [dict(hook=h, layer=layer_of(h), norm=float(v.norm()), separation=float(s))
                for h, v, s in zip(self.hooks, self.vectors, self.separation)]

    def save(self, path) -> Path:
        from safetensors.torch import save_file

        meta = {"hooks": json.dumps(self.hooks), "position": json.dumps(self.position), "model": json.dumps(self.model)}
        save_file({"vectors": self.vectors.contiguous(), "separation": self.separation.contiguous()}, str(path), metadata=meta)
        return Path(path)

    def tensors(self) -> tuple[dict, dict]:
        """(tensors, metadata) for RunStore's write_tensors."""
        return ({"vectors": self.vectors, "separation": self.separation},
                {"hooks": self.hooks, "position": self.position, "model": self.model})

    @classmethod
    def load(cls, path) -> "Directions":
        from harness.runs import read_safetensors

        tensors, meta = read_safetensors(path)
        if "hooks" not in meta or "vectors" not in tensors:
            raise ConfigError(f"{path} is not a directions file (no 'hooks' metadata or 'vectors' tensor); "
                              "make one with `harness probe`")
        try:
            hooks, position, model = (json.loads(meta["hooks"]), json.loads(meta.get("position", "-1")),
                                      json.loads(meta.get("model", "{}")))
        except ValueError as e:
            raise ConfigError(f"{path}: damaged directions metadata ({e})") from None
        vectors = tensors["vectors"]
        separation = tensors.get("separation", torch.zeros(len(hooks)))
        if vectors.ndim != 2 or len(vectors) != len(hooks) or len(separation) != len(hooks):
            raise ConfigError(f"{path}: {len(hooks)} hooks but vectors of shape {tuple(vectors.shape)}; "
                              "the file is damaged, make it again with `harness probe`")
        return cls(hooks, vectors, separation, position, model)


def model_summary(model) -> dict:
    cfg = model.cfg
    return dict(name=model.identity.get("name") or cfg.name, family=cfg.family, d_model=cfg.d_model,
                n_layers=cfg.n_layers)


def separation(pos: torch.Tensor, neg: torch.Tensor, direction: torch.Tensor) -> float:
    """Gap between the sets' mean projections onto `direction`, in pooled standard deviations."""
    u = direction / direction.norm().clamp(min=1e-12)
    a, b = pos @ u, neg @ u
    pooled = ((a.var(unbiased=True) + b.var(unbiased=True)) / 2).sqrt().clamp(min=1e-6)
    return float((a.mean() - b.mean()) / pooled)


def from_activations(pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor], position: int | str = -1,
                     model: dict | None = None) -> Directions:
    hooks = list(pos)
    vectors, seps = [], []
    for h in hooks:
        if pos[h].shape[1:] != neg[h].shape[1:]:
            raise ShapeError(f"{h}: positive activations {tuple(pos[h].shape)} and negative {tuple(neg[h].shape)} differ")
        v = pos[h].mean(0) - neg[h].mean(0)
        vectors.append(v)
        seps.append(separation(pos[h], neg[h], v) if min(len(pos[h]), len(neg[h])) > 1 else float("nan"))
    return Directions(hooks, torch.stack(vectors), torch.tensor(seps), position, model or {})


def mean_difference(model, positive: Sequence[str], negative: Sequence[str], kind: str = "resid_pre",
                    layers: Sequence[int] | None = None, hooks: Sequence[str] | None = None,
                    position: int | str = -1, chat: bool | str = "auto", system: str | list[dict] | None = None,
                    batch_size: int = 16) -> Directions:
    """mean(positive) - mean(negative) at `hooks` (default `blocks.{i}.hook_{kind}` for `layers`)."""
    if not positive or not negative:
        raise ConfigError("both prompt sets need at least one prompt")
    hooks = list(hooks) if hooks else layer_hooks(model, kind, layers)
    pos = collect(model, list(positive), hooks, position, chat, system, batch_size)
    neg = collect(model, list(negative), hooks, position, chat, system, batch_size)
    return from_activations(pos, neg, position, model_summary(model))
