"""Steering both models of a crosscoder's pair with one latent, live and cached per choice.

The vector added is the latent's *aligned* decoder direction at one of the layers it reads: what
the latent writes into the aligned model. Added to the base model it asks "does this concept
alone turn the base model into the aligned one?"; added to the aligned model, "what does more of
it do?". The strength is in units of each model's mean activation norm at that hook (the
crosscoder's input scaling makes that norm sqrt(d_in) / input_scale), as `harness diff --method
adl` scales its steering, so one strength means the same push in both models."""

from __future__ import annotations

import streamlit as st
import torch

from apps.dashboard import crosscoderdata, data
from harness.errors import HarnessError


def steering_vector(cc, latent: int, layer: int, model_index: int) -> tuple[torch.Tensor, float]:
    """(unit aligned decoder direction of `latent` at layer index `layer`, the mean activation
    norm of model `model_index` at that hook), in the model's own units."""
    from probes.crosscoder.latents import ALIGNED

    if not 0 <= latent < cc.cfg.d_latent:
        raise HarnessError(f"latent {latent} is out of range: the crosscoder has {cc.cfg.d_latent} latents")
    # the decoder lives in the scaled space; the aligned stream's raw units divide by its scale
    raw = cc.W_dec.detach()[latent, ALIGNED, layer].float() / cc.input_scale[ALIGNED, layer].float()
    norm = float(raw.norm())
    if norm == 0:
        raise HarnessError(f"latent {latent} writes nothing to the aligned model at {cc.cfg.hooks[layer]}")
    mean_norm = cc.cfg.d_in ** 0.5 / float(cc.input_scale[model_index, layer])
    return raw / norm, mean_norm


@st.cache_data(show_spinner=False, max_entries=64)
def steer(folder: str, stamp: float, sources: tuple[str, str], latent: int, layer: int, prompt: str,
          strength: float, max_new_tokens: int) -> list[dict]:
    """One row per model (base, aligned): the plain reply and the reply with the latent added."""
    from probes.steering import generate, steering_hooks

    if not prompt.strip():
        raise HarnessError("type a prompt first")
    cc = crosscoderdata.load(folder)
    hook = cc.cfg.hooks[layer]
    rows = []
    for index, (role, source) in enumerate(zip(("base", "aligned"), sources)):
        model = data.load_model(source)
        if model.cfg.d_model != cc.cfg.d_in:
            raise HarnessError(f"{source} has d_model {model.cfg.d_model} but the crosscoder reads {cc.cfg.d_in}")
        model.check_hook_names([hook])
        direction, mean_norm = steering_vector(cc, latent, layer, index)
        hooks = steering_hooks(direction, [hook], scale=strength * mean_norm)
        plain = generate(model, [prompt], max_new_tokens=max_new_tokens)[0]
        steered = generate(model, [prompt], fwd_hooks=hooks, max_new_tokens=max_new_tokens)[0]
        rows.append({"model": role, "plain": plain, "steered": steered})
    return rows
