"""Figures and tables for the Features page."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

QUALITY = (("explained_variance", "explained variance"), ("ce_loss_recovered", "CE loss recovered"),
           ("kl_div", "KL"), ("l0", "L0"))


def quality_lines(manifest: dict) -> tuple[list[tuple[str, float]], list[str]]:
    """(the eval figures to show side by side, the warnings) of an SAE run's manifest: explained
    variance never without CE loss recovered and KL, and the EV/CE disagreement warning whenever
    the run recorded one or its eval metrics show one."""
    from probes.sae.evaluate import disagreement

    metrics = manifest.get("metrics") or {}
    shown = [(label, metrics[f"eval/{key}"]) for key, label in QUALITY
             if isinstance(metrics.get(f"eval/{key}"), (int, float))]
    warnings = [w for w in manifest.get("warnings") or [] if isinstance(w, str)]
    computed = disagreement({k: metrics.get(f"eval/{k}") for k, _ in QUALITY})
    if computed and not any("CE loss recovered" in w for w in warnings):
        warnings.append(computed)
    return shown, warnings


def quality_summary(manifest: dict) -> None:
    """The SAE run's eval figures in one row, its warnings, and what training left out."""
    import streamlit as st

    shown, warnings = quality_lines(manifest)
    if shown:
        for col, (label, value) in zip(st.columns(len(shown)), shown):
            col.metric(label, f"{value:.3f}" if label != "L0" else f"{value:.1f}")
    else:
        st.caption("No evaluation yet: `harness sae eval --sae RUN --model MODEL` adds explained variance, "
                   "CE loss recovered and KL.")
    for w in warnings:
        st.warning(w)
    why = (manifest.get("exclusion") or {}).get("why") or {}
    if why:
        st.caption("Left out of training: " + "; ".join(str(v) for v in why.values()))


def density_figure(log10_density: np.ndarray, title: str) -> go.Figure:
    fig = go.Figure(go.Histogram(x=log10_density, nbinsx=50, marker_color="#1f77b4"))
    fig.update_layout(title=title, xaxis_title="log10 firing frequency", yaxis_title="features",
                      template="plotly_white", bargap=0.05)
    return fig


def feature_histogram(row: dict) -> go.Figure:
    """An analysed feature row's activation histogram (fixed log10-spaced bins)."""
    edges, counts = row["histogram"]["log10_edges"], row["histogram"]["counts"]
    centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    fig = go.Figure(go.Bar(x=centres, y=counts, width=[b - a for a, b in zip(edges, edges[1:])], marker_color="#d62728"))
    fig.update_layout(title=f"Feature {row['feature']}: activation histogram (nonzero activations)",
                      xaxis_title="log10 activation", yaxis_title="tokens", template="plotly_white")
    return fig


def feature_logits(row: dict) -> go.Figure:
    """An analysed feature row's logit effects: promoted tokens (red) and suppressed ones (blue)."""
    up, down = row["logits"]["promoted"], row["logits"]["suppressed"]  # suppressed values are negative
    # ranked labels: two token ids can decode to the same text, and plotly merges equal categories
    pairs = sorted([(f"-{i + 1} {t!r}", v) for i, (t, v) in enumerate(down)] +
                   [(f"+{i + 1} {t!r}", v) for i, (t, v) in enumerate(up)], key=lambda p: p[1])
    fig = go.Figure(go.Bar(x=[v for _, v in pairs], y=[label for label, _ in pairs], orientation="h",
                           marker_color=["#1f77b4" if v < 0 else "#d62728" for _, v in pairs]))
    fig.update_layout(title=f"Feature {row['feature']}: logit effects (W_dec @ W_U)", template="plotly_white",
                      xaxis_title="logit change per unit activation", height=max(360, 22 * len(pairs) + 120))
    return fig
