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


MAX_HEATMAP_ROWS = 40  # beyond this many prompts the heatmap shows the highest-KL ones, next to a summary


def prompt_groups(n: int, config: dict) -> list[str] | None:
    """The prompt set of each row, when the run recorded its sets' sizes in order
    (config["prompt_sets"] = {"topic": 28, "control": 84} for prompts = topic + control)."""
    sets = (config or {}).get("prompt_sets")
    if not isinstance(sets, dict) or not all(isinstance(v, int) for v in sets.values()) or sum(sets.values()) != n:
        return None
    return [name for name, size in sets.items() for _ in range(size)]


def mean_kl_per_prompt(kl, mask) -> list[float]:
    import numpy as np

    kl, mask = np.asarray(kl, dtype=float), np.asarray(mask) > 0
    counts = mask.sum(1)
    return [float(v) for v in np.where(counts > 0, (kl * mask).sum(1) / np.maximum(counts, 1), 0.0)]


def kl_figure(kl, mask, prompts: list[str], max_rows: int = MAX_HEATMAP_ROWS) -> go.Figure:
    """[prompts, positions] next-token KL(aligned || base); padding left blank. With more than
    max_rows prompts it shows the max_rows with the highest mean KL (kl_summary_figure has all)."""
    import numpy as np

    kl, mask = np.asarray(kl, dtype=float), np.asarray(mask)
    rows = list(range(len(prompts)))
    title = "Next-token KL(aligned || base) per prompt and position (left-padded)"
    if len(rows) > max_rows:
        means = mean_kl_per_prompt(kl, mask)
        rows = sorted(sorted(rows, key=lambda i: -means[i])[:max_rows])
        title = (f"Next-token KL(aligned || base): the {max_rows} of {len(prompts)} prompts with the highest mean KL "
                 "(all prompts: the summary below)")
    z = np.where(mask[rows] > 0, kl[rows], np.nan)
    fig = go.Figure(go.Heatmap(z=z.tolist(), y=[f"{i}: {prompts[i][:40]}" for i in rows], colorscale="Reds",
                               colorbar=dict(title="KL (nats)"),
                               hovertemplate="%{y}<br>position %{x}: %{z:.4g}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="position", template="plotly_white", yaxis=dict(autorange="reversed"),
                      height=160 + 22 * len(rows))
    return fig


def kl_summary_figure(kl, mask, prompts: list[str], groups: list[str] | None = None) -> go.Figure:
    """Every prompt's mean KL over its real positions, highest first, coloured by prompt set:
    a fixed-height view that stays readable at hundreds of prompts."""
    means = mean_kl_per_prompt(kl, mask)
    order = sorted(range(len(prompts)), key=lambda i: -means[i])
    groups = groups or ["prompts"] * len(prompts)
    fig = go.Figure()
    for j, name in enumerate(dict.fromkeys(groups)):
        idx = [i for i in order if groups[i] == name]
        fig.add_trace(go.Bar(x=[order.index(i) for i in idx], y=[means[i] for i in idx], name=f"{name} ({len(idx)})",
                             marker_color=COLOURS[j % len(COLOURS)], customdata=[prompts[i][:80] for i in idx],
                             hovertemplate="%{customdata}<br>mean KL %{y:.4g}<extra></extra>"))
    fig.update_layout(title=f"Mean next-token KL(aligned || base) per prompt, {len(prompts)} prompts, highest first",
                      xaxis_title="prompt rank", yaxis_title="mean KL (nats)", template="plotly_white", height=360,
                      bargap=0.05)
    return fig


COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]


# ---------------------------------------------------------------------------------- scoring

def scoring_rows(infos) -> list[dict]:
    """One row per scored diffing result: a run's scores.json table (the main job's), each
    run's own score.json, and findings.json not yet scored."""
    from apps.dashboard import data

    rows, seen = [], set()
    for info in infos:
        if data.has(info.path, "scores.json"):
            for r in data.read_json(info.path, "scores.json").get("methods", []):
                key = r.get("run") or f"{info.name}:{r.get('method')}"
                if key not in seen:
                    seen.add(key)
                    rows.append({"organism": r.get("organism"), "method": r.get("method"), "recovered": _verdict(r.get("recovered")),
                                 "evidence": r.get("evidence"), "run": r.get("run") or "-"})
    for info in infos:
        if info.name in seen:
            continue
        if data.has(info.path, "score.json"):
            s = data.read_json(info.path, "score.json")
            rows.append({"organism": (info.manifest.get("config") or {}).get("organism") or
                         (info.manifest.get("config") or {}).get("aligned"), "method": s.get("method"),
                         "recovered": _verdict(s.get("recovered")), "evidence": s.get("summary"), "run": info.name})
        elif data.has(info.path, "findings.json"):
            f = data.read_json(info.path, "findings.json")
            rows.append({"organism": (info.manifest.get("config") or {}).get("aligned"), "method": f.get("method"),
                         "recovered": "not scored", "evidence": f"run `harness diff-score {info.name}`", "run": info.name})
    return rows


def _verdict(value) -> str:
    return "-" if value is None else ("yes" if value else "NOT recovered")


# ---------------------------------------------------------------------------------- ADL

def adl_norm_figure(delta, hooks: list[str]) -> go.Figure:
    """The activation difference's norm per layer and position (first k positions of unrelated text)."""
    import numpy as np

    norms = np.linalg.norm(np.asarray(delta, dtype=float), axis=-1)  # [layers, k]
    fig = go.Figure(go.Heatmap(z=norms.tolist(), y=[f"{i}: {h}" for i, h in enumerate(hooks)],
                               x=[f"pos {j}" for j in range(norms.shape[1])], colorscale="Blues",
                               colorbar=dict(title="norm"),
                               hovertemplate="%{y}, %{x}: %{z:.4g}<extra></extra>"))
    fig.update_layout(title="Mean activation difference (aligned - base): norm per layer and position",
                      xaxis_title="position after BOS in unrelated text", template="plotly_white",
                      yaxis=dict(autorange="reversed"), height=200 + 30 * len(hooks))
    return fig


def show_adl_run(info) -> None:
    """An activation-difference-lens run: its norms, the lens read per layer, the steered generations."""
    import streamlit as st

    from apps.dashboard import data

    f = data.read_json(info.path, "findings.json")
    extra = f.get("extra") or {}
    st.markdown(f"**Activation-difference lens**: the mean difference at the first {extra.get('k_positions')} positions "
                f"of {extra.get('n_texts')} unrelated texts, read through each model's logit lens")
    if data.has(info.path, "adl.safetensors"):
        tensors, meta = data.read_tensors(info.path, "adl.safetensors")
        hooks = meta.get("hooks") if isinstance(meta, dict) else None
        if isinstance(hooks, str):
            import json

            hooks = json.loads(hooks)
        st.plotly_chart(adl_norm_figure(tensors["delta"], hooks or [str(i) for i in range(len(tensors["delta"]))]),
                        width="stretch", key="adl_norms")
    per_layer = extra.get("per_layer") or []
    if per_layer:
        st.markdown("**Top tokens per layer** (aligned and base lens of the difference)")
        st.dataframe([{"layer": r["layer"], "norm": round(r["norm"], 4), "aligned lens": " | ".join(map(repr, r["aligned"])),
                       "base lens": " | ".join(map(repr, r["base"]))} for r in per_layer], hide_index=True, width="stretch")
    st.markdown(f"**Findings: top tokens at layer {extra.get('layer')}**")
    st.dataframe([{"rank": i + 1, "token": repr(t["token"]), "log-prob": round(t["score"], 4)}
                  for i, t in enumerate(f.get("tokens", []))], hide_index=True, width="stretch")
    steered = extra.get("steered") or []
    if steered:
        st.markdown("**Steered generations** (the difference added at every position)")
        st.dataframe(steered, hide_index=True, width="stretch")


def show_findings(info) -> None:
    """Any other findings.json: its per-prompt-set KL as bars, and its ranked tokens / latents."""
    import streamlit as st

    from apps.dashboard import data

    f = data.read_json(info.path, "findings.json")
    st.markdown(f"**Findings of method `{f.get('method')}`**")
    if f.get("kl"):
        names = list(f["kl"])
        fig = go.Figure(go.Bar(x=names, y=[f["kl"][n] for n in names], text=[f"{f['kl'][n]:.3g}" for n in names],
                               marker_color=[COLOURS[i % len(COLOURS)] for i in range(len(names))]))
        fig.update_layout(title="Mean next-token KL(aligned || base) per prompt set", yaxis_title="KL (nats)",
                          template="plotly_white")
        st.plotly_chart(fig, width="stretch", key="findings_kl")
    if f.get("tokens"):
        st.dataframe([{"rank": i + 1, "token": repr(t["token"]), "score": round(t["score"], 4)}
                      for i, t in enumerate(f["tokens"])], hide_index=True, width="stretch")
    if f.get("latents"):
        st.dataframe(f["latents"], hide_index=True, width="stretch")


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
        if len(prompts) > MAX_HEATMAP_ROWS:
            groups = prompt_groups(len(prompts), info.manifest.get("config") or {})
            st.plotly_chart(kl_summary_figure(tensors["kl"], tensors["mask"], prompts, groups), width="stretch",
                            key="diffrun_kl_summary")
    if data.has(info.path, "features.jsonl"):
        st.markdown("**SAE features whose mean activation changed most**")
        st.dataframe(data.read_jsonl(info.path, "features.jsonl"), hide_index=True, width="stretch")
