"""Figures for the Model diff page's live comparison."""

from __future__ import annotations

import plotly.graph_objects as go


def layer_divergence_figure(result: dict, a: str, b: str) -> go.Figure:
    layers = list(range(len(result["cosine_distance"])))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=layers, y=result["cosine_distance"], mode="lines+markers", name="cosine distance"))
    fig.add_trace(go.Scatter(x=layers, y=result["relative_l2"], mode="lines+markers", name="relative L2 difference"))
    fig.update_layout(title=f"Residual stream divergence per layer: {b} vs {a} (mean over positions)",
                      xaxis_title="layer (hook_resid_post)", yaxis_title="divergence", template="plotly_white")
    return fig


def token_shift_figure(result: dict, str_tokens: list[str], a: str, b: str) -> go.Figure:
    x = [f"{i}:{t}" for i, t in enumerate(str_tokens)]
    changed = [ta != tb for ta, tb in zip(result["top_a"], result["top_b"])]
    fig = go.Figure(go.Bar(
        x=x, y=result["kl"], marker_color=["#d62728" if c else "#1f77b4" for c in changed],
        customdata=list(zip(result["top_a"], result["top_b"])),
        hovertemplate="%{x}<br>KL=%{y:.4g}<br>" + f"{a}: " + "%{customdata[0]}<br>" + f"{b}: " + "%{customdata[1]}<extra></extra>"))
    fig.update_layout(title=f"Next-token KL({b} || {a}) at each position (red: top token changed)",
                      xaxis_title="position", yaxis_title="KL (nats)", template="plotly_white")
    return fig


def kl_figure(kl, mask, prompts: list[str]) -> go.Figure:
    """[prompts, positions] next-token KL(aligned || base); padding left blank."""
    import numpy as np

    z = np.where(mask > 0, kl, np.nan)
    fig = go.Figure(go.Heatmap(z=z.tolist(), y=[p[:40] for p in prompts], colorscale="Reds",
                               colorbar=dict(title="KL (nats)"),
                               hovertemplate="%{y}<br>position %{x}: %{z:.4g}<extra></extra>"))
    fig.update_layout(title="Next-token KL(aligned || base) per prompt and position (left-padded)",
                      xaxis_title="position", template="plotly_white", yaxis=dict(autorange="reversed"),
                      height=160 + 40 * len(prompts))
    return fig


def show_diff_run(info) -> None:
    """A probes.diff run: per-layer divergence (the producer's layer_figure), the diff lens's token
    shifts at a chosen layer, the KL heatmap and, when an SAE was given, the most changed features."""
    from types import SimpleNamespace

    import streamlit as st

    from apps.dashboard import data
    from probes.diff import layer_figure

    layers = data.read_jsonl(info.path, "layers.jsonl")
    summary = data.read_json(info.path, "summary.json") if data.has(info.path, "summary.json") else {}
    cols = st.columns(4)
    for col, key in zip(cols, ("n_prompts", "mean_kl", "max_kl", "final_cosine")):
        if isinstance(summary.get(key), (int, float)):
            col.metric(key.replace("_", " "), f"{summary[key]:.4g}")
    if summary.get("diverging_layers"):
        st.caption(f"layers where the models come apart most: {summary['diverging_layers']}")
    # layer_figure only reads .layers, so the stored rows stand in for the ModelDiff object
    st.plotly_chart(layer_figure(SimpleNamespace(layers=layers)), width="stretch", key="diffrun_layers")
    if data.has(info.path, "lens.jsonl"):
        lens = data.read_jsonl(info.path, "lens.jsonl")
        layer = st.select_slider("Diff-lens layer", [r["layer"] for r in lens], value=lens[-1]["layer"],
                                 key="diffrun_layer")
        row = next(r for r in lens if r["layer"] == layer)
        left, right = st.columns(2)
        left.markdown("**Promoted by the aligned model**")
        left.dataframe([{"token": repr(t["token"]), "log-prob change": round(t["change"], 4)} for t in row["promoted"]],
                       hide_index=True, width="stretch")
        right.markdown("**Suppressed**")
        right.dataframe([{"token": repr(t["token"]), "log-prob change": round(t["change"], 4)} for t in row["suppressed"]],
                        hide_index=True, width="stretch")
    if data.has(info.path, "kl.safetensors"):
        tensors, _ = data.read_tensors(info.path, "kl.safetensors")
        prompts = [r["prompt"] for r in data.read_jsonl(info.path, "prompts.jsonl")] if data.has(info.path, "prompts.jsonl") \
            else [str(i) for i in range(len(tensors["kl"]))]
        st.plotly_chart(kl_figure(tensors["kl"], tensors["mask"], prompts), width="stretch", key="diffrun_kl")
    if data.has(info.path, "features.jsonl"):
        st.markdown("**SAE features whose mean activation changed most**")
        st.dataframe(data.read_jsonl(info.path, "features.jsonl"), hide_index=True, width="stretch")
