"""SAE runs for the Features page: what an SAE run says about itself, and feature analysis on
demand through the producer's own probes.sae.features.analyze_features (same row format as the
features.json that `harness sae features` stores), cached per (SAE, model, feature, sample)."""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from apps.dashboard import data


def sae_info(run_path: str) -> dict:
    """hook, corpus, context length and model source of an SAE run, from its manifest and cfg.json."""
    manifest = data.open_run(run_path).manifest
    config = manifest.get("config") or {}
    cfg = data.read_json(run_path, "sae/cfg.json")
    meta = cfg.get("metadata") or {}
    corpus = ((config.get("source") or {}).get("corpus") or {}).get("name") or "stdlib-docs"
    sources = [v.get("source") or v.get("name") for v in (manifest.get("models") or {}).values() if isinstance(v, dict)]
    return {"hook": config.get("hook") or meta.get("hook_name"), "corpus": corpus, "d_sae": cfg.get("d_sae"),
            "d_in": cfg.get("d_in"), "arch": config.get("arch") or meta.get("training_architecture"),
            "context": int(config.get("context_length") or meta.get("context_size") or 64),
            "model": next((s for s in sources if s), None)}


@st.cache_data(show_spinner=False, max_entries=64)
def feature_row(run_path: str, source: str, corpus: str, hook: str, context: int, n_tokens: int, feature: int) -> dict:
    """One feature's analysis row (density, histogram, top contexts, logit effects), computed live."""
    from probes.sae.features import analyze_features

    from apps.dashboard.live import load_sae

    model = data.load_model(source)
    context = min(context, model.cfg.n_ctx)
    report = analyze_features(load_sae(run_path), model, hook, corpus=corpus, n_tokens=n_tokens,
                              context_length=context, features=[feature])
    return report.features[0]


@st.cache_data(show_spinner=False, max_entries=8)
def logit_effects(run_path: str, source: str) -> np.ndarray:
    """[d_sae, d_vocab]: every feature's decoder direction read through the unembedding."""
    from apps.dashboard.live import load_sae

    model = data.load_model(source)
    sae = load_sae(run_path)
    with torch.inference_mode():
        return (sae.W_dec.float().to(model.W_U.device) @ model.W_U.float()).cpu().numpy()
