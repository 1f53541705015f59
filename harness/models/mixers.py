"""Token mixers: the registry that turns each layer's `cfg.mixers[i]` name into its module.

A mixer is the sublayer that moves information between positions. Whatever its kind it sits at
`blocks.{i}.attn`, and its output is `blocks.{i}.hook_attn_out` (TransformerLens's name for that
slot). A registered mixer is a module class built as `cls(cfg, layer)` with
- `forward(x, inputs: MixerInputs) -> [batch, pos, d_model]`, reading from `inputs` what it needs
  (rope and mask for attention, padding for a recurrent mixer) and updating `inputs.state`;
- `new_state(capacity) -> LayerState`, the generation state it keeps between calls
  (harness.models.kv_cache: KVState for attention, RecurrentState for a recurrent mixer).
`heads` says whether it has attention heads in TransformerLens's sense (hook_z [batch, pos, head,
d_head], hook_pattern, per-head W_Q..W_O); head-level tools look at it before touching a layer.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from harness.errors import UnknownMixerError

__all__ = ["MIXERS", "MixerSpec", "build_mixer", "check_mixer", "mixer_spec", "register_mixer"]


@dataclass(frozen=True)
class MixerSpec:
    name: str
    # The module class, built as module(cfg, layer), or "package.module:Class" for one imported
    # only when a layer is built: the registry imports no mixer, so the config (which checks
    # names against it) and the mixers (which read the config) never import each other.
    module: object
    heads: bool  # attention heads: hook_z, hook_pattern and per-head weights
    summary: str = ""

    def module_class(self):
        if isinstance(self.module, str):
            path, _, attr = self.module.partition(":")
            return getattr(importlib.import_module(path), attr)
        return self.module


MIXERS: dict[str, MixerSpec] = {}


def register_mixer(name: str, module, heads: bool, summary: str = "") -> MixerSpec:
    """Add a mixer kind (or replace one of that name) and return its spec."""
    spec = MixerSpec(name, module, heads, summary)
    MIXERS[name] = spec
    return spec


def mixer_spec(name: str) -> MixerSpec:
    if name not in MIXERS:
        raise UnknownMixerError(f"unknown token mixer {name!r}; registered mixers: {', '.join(sorted(MIXERS))}")
    return MIXERS[name]


def check_mixer(name: str, layer: int) -> None:
    """UnknownMixerError, in one line naming the layer, for a name that is not registered."""
    if name not in MIXERS:
        raise UnknownMixerError(
            f"layer {layer} names an unknown token mixer {name!r}; registered mixers: {', '.join(sorted(MIXERS))}"
        )


def build_mixer(cfg, layer: int):
    return mixer_spec(cfg.mixers[layer]).module_class()(cfg, layer)


register_mixer("attention", "harness.models.components:Attention", heads=True,
               summary="MHA/GQA/MQA; sliding window, soft-capping, sinks and QK-norm by config")
register_mixer("latent_attention", "harness.models.mla:LatentAttention", heads=True,
               summary="multi-head latent attention (DeepSeek-V2/V3)")
