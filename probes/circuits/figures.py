"""Plotly figures for circuit results; the dashboard reuses them. Each returns a go.Figure."""

from __future__ import annotations

import torch


def _go():
    import plotly.graph_objects as go

    return go


def heatmap(values: torch.Tensor, title: str, x_title: str, y_title: str, x_labels=None, y_labels=None,
            diverging: bool = True, colorbar: str = ""):
    """A [rows, cols] heatmap; diverging colours centred on zero for signed effects."""
    go = _go()
    z = torch.as_tensor(values).detach().float().cpu()
    x = list(x_labels) if x_labels is not None else list(range(z.shape[1]))
    y = list(y_labels) if y_labels is not None else list(range(z.shape[0]))
    finite = z[torch.isfinite(z)]
    bound = float(finite.abs().max()) if finite.numel() else 1.0
    style = dict(colorscale="RdBu", zmid=0, zmin=-bound, zmax=bound) if diverging else dict(colorscale="Viridis")
    fig = go.Figure(go.Heatmap(z=z.tolist(), x=x, y=y, colorbar={"title": colorbar}, **style,
                               hovertemplate=f"{y_title} %{{y}}<br>{x_title} %{{x}}<br>%{{z:.3f}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, yaxis_autorange="reversed")
    return fig


def head_heatmap(values: torch.Tensor, title: str = "heads", colorbar: str = "", diverging: bool = True):
    """[n_layers, n_heads] per-head results (patching, attribution, DLA, detector scores)."""
    return heatmap(values, title, "head", "layer", diverging=diverging, colorbar=colorbar)


def layer_pos_heatmap(values: torch.Tensor, str_tokens: list[str] | None = None, title: str = "layer x position",
                      colorbar: str = ""):
    """[n_layers, pos] results, with the prompt's tokens along x when given."""
    labels = [f"{i} {t!r}" for i, t in enumerate(str_tokens)] if str_tokens else None
    return heatmap(values, title, "position", "layer", x_labels=labels, colorbar=colorbar)


def expert_heatmap(values: torch.Tensor, title: str = "experts", colorbar: str = ""):
    """[n_layers, n_experts] per-expert results (NaN rows are dense layers)."""
    return heatmap(values, title, "expert", "layer", colorbar=colorbar)


def line(values: torch.Tensor, title: str, x_title: str, y_title: str, x_labels=None):
    """A line over layers (logit lens, per-layer DLA)."""
    go = _go()
    y = torch.as_tensor(values).detach().float().cpu().tolist()
    x = list(x_labels) if x_labels is not None else list(range(len(y)))
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines+markers"))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title)
    return fig


def scatter_compare(a: torch.Tensor, b: torch.Tensor, a_title: str, b_title: str, labels=None, title: str = ""):
    """Scatter of two same-shaped results (attribution vs activation patching), one point per entry."""
    go = _go()
    a, b = torch.as_tensor(a).flatten().float(), torch.as_tensor(b).flatten().float()
    keep = torch.isfinite(a) & torch.isfinite(b)
    text = [labels[i] for i in keep.nonzero().flatten().tolist()] if labels is not None else None
    fig = go.Figure(go.Scatter(x=a[keep].tolist(), y=b[keep].tolist(), mode="markers", text=text))
    fig.update_layout(title=title, xaxis_title=a_title, yaxis_title=b_title)
    return fig


def head_labels(n_layers: int, n_heads: int) -> list[str]:
    """"L{layer}H{head}" for each head in [n_layers, n_heads] row-major order."""
    return [f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)]


def attention_pattern(pattern: torch.Tensor, str_tokens: list[str], title: str = "attention"):
    """One head's pattern [q, k] as a heatmap with the prompt's tokens on both axes."""
    go = _go()
    p = torch.as_tensor(pattern).detach().float().cpu()
    labels = [f"{i} {t!r}" for i, t in enumerate(str_tokens)]
    fig = go.Figure(go.Heatmap(z=p.tolist(), x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1,
                               hovertemplate="query %{y}<br>key %{x}<br>%{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="key (source)", yaxis_title="query (destination)",
                      yaxis_autorange="reversed")
    return fig


def attention_patterns_grid(patterns: torch.Tensor, heads: list[tuple[int, int]], str_tokens: list[str]):
    """Several heads' patterns side by side; patterns [n_layers, n_heads, q, k] for one prompt."""
    from plotly.subplots import make_subplots

    go = _go()
    fig = make_subplots(rows=1, cols=len(heads), subplot_titles=[f"L{l}H{h}" for l, h in heads])
    labels = [f"{i} {t!r}" for i, t in enumerate(str_tokens)]
    for col, (l, h) in enumerate(heads, start=1):
        fig.add_trace(go.Heatmap(z=patterns[l, h].float().tolist(), x=labels, y=labels, colorscale="Blues",
                                 zmin=0, zmax=1, showscale=col == len(heads)), row=1, col=col)
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    fig.update_layout(title="attention patterns (rows: queries, columns: keys)")
    return fig
