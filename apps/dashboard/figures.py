"""Plotly figures the producers do not provide: eval scores and paired differences with CIs, the
top-token logit lens, and the demo run's residual norms."""

from __future__ import annotations

import plotly.graph_objects as go

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


PERPLEXITY_LIKE = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")


def is_perplexity_like(metric: str) -> bool:
    """Metrics on an open-ended scale (lower is better), which flatten accuracies on a shared axis."""
    return metric in PERPLEXITY_LIKE or metric.endswith("perplexity")


def scores_figure(per_model: dict[str, list[dict]]) -> go.Figure:
    """Grouped bars: every task/metric, one bar per model, 95% CI whiskers where lm-eval gave a
    stderr. Accuracy-like scores share a linear 0-1 axis; perplexity-like metrics get their own
    panel with a log axis (a perplexity of 1e25 would otherwise flatten every accuracy)."""
    from plotly.subplots import make_subplots

    has_ppl = any(is_perplexity_like(r["metric"]) for rows in per_model.values() for r in rows)
    has_acc = any(not is_perplexity_like(r["metric"]) for rows in per_model.values() for r in rows)
    panels = [p for p, present in (("scores", has_acc), ("perplexity", has_ppl)) if present] or ["scores"]
    fig = make_subplots(rows=1, cols=len(panels), column_widths=[0.7, 0.3] if len(panels) == 2 else None,
                        subplot_titles=["accuracy-like scores (linear)", "perplexity-like, lower is better (log)"]
                        if len(panels) == 2 else None)
    for i, (label, rows) in enumerate(per_model.items()):
        for col, panel in enumerate(panels, start=1):
            part = [r for r in rows if is_perplexity_like(r["metric"]) == (panel == "perplexity")]
            x = [f"{r['task'].removeprefix('harness_')} · {r['metric']}" for r in part]
            y = [r["value"] for r in part]
            err = dict(type="data", symmetric=False, visible=True,
                       array=[(r["ci_high"] - r["value"]) if r["ci_high"] is not None else 0 for r in part],
                       arrayminus=[max(0.0, r["value"] - r["ci_low"]) if r["ci_low"] is not None else 0 for r in part])
            fig.add_trace(go.Bar(name=label, x=x, y=y, error_y=err, marker_color=COLOURS[i % len(COLOURS)],
                                 legendgroup=label, showlegend=col == 1), row=1, col=col)
    for col, panel in enumerate(panels, start=1):
        if panel == "perplexity":
            fig.update_yaxes(type="log", title_text="perplexity / bits (log)", row=1, col=col)
        else:
            fig.update_yaxes(title_text="score", row=1, col=col)
    fig.update_layout(title="Scores per task (95% CI from lm-eval's standard error)", barmode="group",
                      template="plotly_white", legend_title="model")
    return fig


def diff_figure(rows: list[dict]) -> go.Figure:
    """Paired differences (other - base) with their bootstrap 95% CIs, one row per task/metric."""
    labels = [f"{r['task'].removeprefix('harness_')} · {r['metric']}" for r in rows]
    colours = ["#2ca02c" if (r["ci_low"] > 0 or r["ci_high"] < 0) else "#555" for r in rows]
    fig = go.Figure(go.Scatter(
        x=[r["diff"] for r in rows], y=labels, mode="markers", marker=dict(size=10, color=colours),
        error_x=dict(type="data", symmetric=False, array=[r["ci_high"] - r["diff"] for r in rows],
                     arrayminus=[r["diff"] - r["ci_low"] for r in rows]),
        customdata=[[r["p_value"], r["test"], r["n_units"]] for r in rows],
        hovertemplate="%{y}: %{x:.3g}<br>p=%{customdata[0]:.3g} (%{customdata[1]}), n=%{customdata[2]}<extra></extra>"))
    fig.add_vline(x=0, line_dash="dot")
    other, base = (rows[0]["other"], rows[0]["base"]) if rows else ("other", "base")
    fig.update_layout(title=f"{other} - {base}: paired difference, bootstrap 95% CI (green: CI excludes 0)",
                      height=160 + 32 * len(rows), yaxis=dict(autorange="reversed"), template="plotly_white",
                      xaxis_title="difference")
    return fig


def lens_figure(probs, top_tokens, str_tokens, row_labels, title: str) -> go.Figure:
    """Heatmap over (layer, position): probability of each layer's top token, token text on the cells."""
    x = [f"{i}:{t}" for i, t in enumerate(str_tokens)]
    fig = go.Figure(go.Heatmap(z=probs, x=x, y=row_labels, text=top_tokens, texttemplate="%{text}",
                               colorscale="Blues", zmin=0, zmax=1, colorbar=dict(title="p(top)"),
                               hovertemplate="%{y}, %{x}<br>top: %{text} (p=%{z:.3f})<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="position", yaxis_title="layer", template="plotly_white",
                      height=max(320, 26 * len(row_labels) + 140), yaxis=dict(autorange="reversed"))
    return fig


def demo_norms_figure(metrics: dict) -> go.Figure:
    """A demo run's residual-stream norm by layer, one line per model (from its metrics.json)."""
    fig = go.Figure()
    for name, m in metrics.items():
        norms = m.get("resid_norm_by_layer") or []
        fig.add_trace(go.Scatter(x=list(range(len(norms))), y=norms, mode="lines+markers", name=name))
    fig.update_layout(title="Residual-stream norm by layer (mean over positions after BOS)",
                      xaxis_title="layer (blocks.{i}.hook_resid_post)", yaxis_title="mean L2 norm",
                      template="plotly_white")
    return fig


def probe_figure(probe_rows: list[dict], direction_rows: list[dict]) -> go.Figure:
    """Per layer: the probe's train and held-out accuracy (left axis, with chance) and the
    difference-of-means direction's separation (right axis), from a `harness probe` run's rows."""
    fig = go.Figure()
    layers = [r.get("layer") for r in probe_rows]
    fig.add_trace(go.Scatter(x=layers, y=[r["test_accuracy"] for r in probe_rows], mode="lines+markers",
                             name="probe, held-out", text=[r["hook"] for r in probe_rows]))
    fig.add_trace(go.Scatter(x=layers, y=[r["train_accuracy"] for r in probe_rows], mode="lines+markers",
                             name="probe, train", line=dict(dash="dot")))
    if probe_rows:
        fig.add_hline(y=probe_rows[0]["chance"], line_dash="dash", annotation_text="chance")
    if direction_rows:
        fig.add_trace(go.Scatter(x=[r.get("layer") for r in direction_rows], y=[r["separation"] for r in direction_rows],
                                 mode="lines+markers", name="direction separation", yaxis="y2"))
    fig.update_layout(xaxis=dict(title="layer", tickmode="linear", dtick=1 if len(layers) <= 32 else 4),
                      yaxis=dict(title="accuracy", range=[0, 1.05]),
                      yaxis2=dict(title="separation", overlaying="y", side="right", showgrid=False),
                      legend=dict(orientation="h", y=1.12), margin=dict(t=40))
    return fig


def steer_figure(metrics: dict) -> go.Figure:
    """Refusal rate without and with the steering hook, from a `harness steer` run's metrics."""
    names = ["plain", f"{metrics.get('mode', 'steered')} (layer {metrics.get('layer')})"]
    values = [metrics.get("refusal_rate_plain"), metrics.get("refusal_rate_steered")]
    fig = go.Figure(go.Bar(x=names, y=values, text=[f"{v:.2f}" if v is not None else "" for v in values]))
    fig.update_layout(yaxis=dict(title="refusal rate", range=[0, 1.05]), margin=dict(t=30))
    return fig
