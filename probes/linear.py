"""Linear probes: logistic regression per layer, scored on held-out prompts.

    sweep = probe_prompts(model, prompts, labels)            # every layer's resid_post, last token
    sweep = probe_layers({hook: X}, labels)                  # activations you already have
    sweep = probe_cached(CachedActivations(path), hooks, labels)   # one label per cached context
    sweep.best, sweep.rows(), sweep_figure(sweep)

The probe is a plain L2-regularised logistic regression on standardised features, fitted with
L-BFGS in torch (no extra dependency). The split is stratified and seeded, and the same split
is used at every layer so layers are compared on the same held-out prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from harness.errors import ConfigError, ShapeError
from probes.activations import collect, layer_hooks, layer_of, select_positions


@dataclass
class LinearProbe:
    weight: torch.Tensor  # [d] in standardised units
    bias: float
    mean: torch.Tensor  # [d] feature means of the training set
    std: torch.Tensor  # [d]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return (self.logits(x) > 0).long()

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(x) == y.long()).float().mean())

    @property
    def direction(self) -> torch.Tensor:
        """The probe's decision direction in the model's own (unstandardised) coordinates."""
        d = self.weight / self.std
        return d / d.norm().clamp(min=1e-12)


def fit_probe(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-2, max_iter: int = 100) -> LinearProbe:
    """Logistic regression of binary labels y [n] on features x [n, d]."""
    x, y = x.float(), y.float()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mean) / std
    w = torch.zeros(z.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def loss_fn():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w @ w) / 2
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(loss_fn)
    return LinearProbe(w.detach(), float(b.detach()), mean, std)


def split(labels: torch.Tensor, test_frac: float = 0.25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified (train indices, test indices): each class keeps its share in both halves."""
    if not 0 < test_frac < 1:
        raise ConfigError(f"test_frac must be between 0 and 1; got {test_frac}")
    gen = torch.Generator().manual_seed(seed)
    train, test = [], []
    for cls in labels.unique():
        idx = (labels == cls).nonzero()[:, 0]
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_test = max(1, round(len(idx) * test_frac))
        if n_test >= len(idx):
            raise ConfigError(f"class {int(cls)} has {len(idx)} examples; need at least 2 to hold some out")
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


@dataclass
class ProbeResult:
    hook: str
    layer: int | None
    train_accuracy: float
    test_accuracy: float
    probe: LinearProbe = field(repr=False)


@dataclass
class ProbeSweep:
    results: list[ProbeResult]
    chance: float  # accuracy of always answering the majority class of the test set
    n_train: int
    n_test: int

    @property
    def best(self) -> ProbeResult:
        return max(self.results, key=lambda r: r.test_accuracy)

    def rows(self) -> list[dict]:
        return [dict(hook=r.hook, layer=r.layer, train_accuracy=r.train_accuracy, test_accuracy=r.test_accuracy,
                     chance=self.chance, n_train=self.n_train, n_test=self.n_test) for r in self.results]

    def directions(self) -> dict[str, torch.Tensor]:
        return {r.hook: r.probe.direction for r in self.results}


def _labels(labels) -> torch.Tensor:
    y = torch.as_tensor(labels).long().flatten()
    if set(y.unique().tolist()) - {0, 1} or len(y.unique()) != 2:
        raise ConfigError(f"labels must be binary 0/1 with both classes present; got values {sorted(set(y.tolist()))[:5]}")
    return y


def probe_layers(acts: dict[str, torch.Tensor], labels, test_frac: float = 0.25, seed: int = 0,
                 l2: float = 1e-2) -> ProbeSweep:
    """Fit one probe per hook on the same stratified split and score it on the held-out part."""
    y = _labels(labels)
    train, test = split(y, test_frac, seed)
    results = []
    for hook, x in acts.items():
        if x.dim() != 2 or x.shape[0] != len(y):
            raise ShapeError(f"activations for {hook} have shape {tuple(x.shape)}; expected [{len(y)}, d]")
        probe = fit_probe(x[train], y[train], l2=l2)
        results.append(ProbeResult(hook, layer_of(hook), probe.accuracy(x[train], y[train]),
                                   probe.accuracy(x[test], y[test]), probe))
    majority = max(float(y[test].float().mean()), 1 - float(y[test].float().mean()))
    return ProbeSweep(results, majority, len(train), len(test))


def probe_prompts(model, prompts: Sequence[str], labels, hooks: Sequence[str] | None = None,
                  position: int | str = -1, chat: bool | str = "auto", test_frac: float = 0.25,
                  seed: int = 0, batch_size: int = 16) -> ProbeSweep:
    """Probe freshly computed activations (default: resid_post of every layer at the last token)."""
    if len(prompts) != len(labels):
        raise ShapeError(f"{len(prompts)} prompts but {len(labels)} labels")
    hooks = list(hooks) if hooks else layer_hooks(model, "resid_post")
    acts = collect(model, list(prompts), hooks, position=position, chat=chat, batch_size=batch_size)
    return probe_layers(acts, labels, test_frac, seed)


def probe_cached(cache, hooks: Sequence[str], labels, position: int | str = -1, test_frac: float = 0.25,
                 seed: int = 0) -> ProbeSweep:
    """Probe a `harness.caching.CachedActivations` folder with one label per cached context."""
    y = _labels(labels)
    if len(y) != cache.n_contexts:
        raise ShapeError(f"{len(y)} labels for a cache of {cache.n_contexts} contexts; give one label per context")
    acts = {}
    for hook in hooks:
        parts = []
        for s in range(cache.n_shards):
            x = cache.activations(hook, s)
            if x.dim() != 3:
                raise ShapeError(f"{hook} is cached as {tuple(x.shape)}; probes need [contexts, positions, d]")
            mask = torch.ones(x.shape[:2], dtype=torch.long)  # cached contexts are packed: no padding
            parts.append(select_positions(x.float(), mask, position))
        acts[hook] = torch.cat(parts)
    return probe_layers(acts, y, test_frac, seed)


def sweep_figure(sweep: ProbeSweep, title: str = "linear probe accuracy by layer"):
    """Plotly line chart: train and held-out accuracy per hook, with the chance level."""
    import plotly.graph_objects as go

    xs = [r.layer if r.layer is not None else r.hook for r in sweep.results]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=[r.test_accuracy for r in sweep.results], mode="lines+markers",
                             name=f"held-out ({sweep.n_test})", text=[r.hook for r in sweep.results]))
    fig.add_trace(go.Scatter(x=xs, y=[r.train_accuracy for r in sweep.results], mode="lines+markers",
                             name=f"train ({sweep.n_train})", line=dict(dash="dot")))
    fig.add_hline(y=sweep.chance, line_dash="dash", annotation_text="chance")
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="accuracy", yaxis_range=[0, 1.05])
    return fig
