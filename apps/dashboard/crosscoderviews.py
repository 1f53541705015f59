"""Figures and tables for the Crosscoder page."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

SHARED, ALIGNED_ONLY, ARTEFACT = "#7f7f7f", "#d62728", "#ff7f0e"


def relative_norm_figure(relative_norm, aligned_only: float = 0.9) -> go.Figure:
    """Histogram of every latent's relative decoder norm: 0 base-only, 0.5 shared, 1 aligned-only."""
    r = np.asarray(relative_norm, dtype=float)
    low, high = 1 - aligned_only, aligned_only
    counts = (int((r <= low).sum()), int(((r > low) & (r < high)).sum()), int((r >= high).sum()))
    fig = go.Figure(go.Histogram(x=r.tolist(), xbins=dict(start=0, end=1.0001, size=0.02), marker_color="#1f77b4",
                                 hovertemplate="relative norm %{x}<br>%{y} latents<extra></extra>"))
    for x in (low, high):
        fig.add_vline(x=x, line_dash="dot", line_color="#555")
    fig.update_layout(title=f"Relative decoder norm of {len(r)} latents: {counts[0]} base-only (<= {low:.2g}), "
                            f"{counts[1]} shared, {counts[2]} aligned-only (>= {high:.2g})",
                      xaxis_title="||d aligned|| / (||d base|| + ||d aligned||)", yaxis_title="latents",
                      xaxis=dict(range=[0, 1]), template="plotly_white", bargap=0.05)
    return fig


def scaling_figure(rows: list[dict], artefact_nu: float = 0.3) -> go.Figure:
    """Latent Scaling of the aligned-only candidates: nu_eps (does the base *error* hold the
    latent's direction?) against nu_r (does the base *reconstruction*?). True aligned-only
    latents sit near the origin; a latent past `artefact_nu` on either axis is an artefact."""
    fig = go.Figure()
    groups = (("aligned-only", lambda r: r.get("fired") and not r.get("artefact"), ALIGNED_ONLY),
              ("artefact (Latent Scaling)", lambda r: bool(r.get("artefact")), ARTEFACT),
              ("never fired on the texts", lambda r: not r.get("fired"), SHARED))
    for name, keep, colour in groups:
        part = [r for r in rows if keep(r)]
        if not part:
            continue
        fig.add_trace(go.Scatter(
            x=[_clip(r["nu_eps"]) for r in part], y=[_clip(r["nu_r"]) for r in part], mode="markers",
            name=f"{name} ({len(part)})", marker=dict(color=colour, size=9, opacity=0.8),
            customdata=[[r["id"], r["nu_eps"], r["nu_r"], r.get("relative_norm", float("nan"))] for r in part],
            hovertemplate="latent %{customdata[0]}<br>ν_ε %{customdata[1]:.3g}, ν_r %{customdata[2]:.3g}<br>"
                          "relative norm %{customdata[3]:.3f}<extra></extra>"))
    fig.add_shape(type="rect", x0=-artefact_nu, y0=-artefact_nu, x1=artefact_nu, y1=artefact_nu,
                  line=dict(dash="dot", color="#555"))
    fig.update_layout(title=f"Latent Scaling of {len(rows)} aligned-only candidates (box: |ν| <= {artefact_nu:g})",
                      xaxis_title="ν_ε = β_ε(base) / β_ε(aligned)", yaxis_title="ν_r = β_r(base) / β_r(aligned)",
                      template="plotly_white", height=480)
    return fig


CLIP = 3.0  # a nearly silent aligned beta makes nu huge; such points sit on the edge (hover has the value)


def _clip(v: float) -> float:
    return float(np.clip(v, -CLIP, CLIP))


def aligned_only_rows(latents: list[dict]) -> list[dict]:
    """The findings' aligned-only latents as table rows, in their ranked order."""
    return [{"latent": x["id"], "fires on (texts)": round(float(x["score"]), 4),
             "relative norm": round(float(x.get("relative_norm", float("nan"))), 4),
             "nu_eps": round(float(x.get("nu_eps", float("nan"))), 4), "nu_r": round(float(x.get("nu_r", float("nan"))), 4),
             "top context": line(x["contexts"][0]) if x.get("contexts") else ""} for x in latents]


def line(text: str, width: int = 120) -> str:
    """A text on one line, cut to `width` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
