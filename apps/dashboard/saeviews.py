"""Figures and tables for the Features page."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


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
