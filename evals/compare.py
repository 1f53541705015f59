"""Paired comparison of two models on the same items: the difference of each task metric with a
paired bootstrap 95% CI, a paired significance test, and the KL divergence of next-token
distributions on the suite's prompts.

Every metric we compare is a ratio of sums over items, f(sum a / sum b):
  mean (acc, exact_match, ...)    a = value, b = 1, f = identity
  word/byte perplexity            a = log-likelihood, b = words/bytes, f = exp(-x)
  bits_per_byte                   a = log-likelihood, b = bytes, f = -x / ln 2
  flip_rate (paired items)        a = flipped, b = pair counted, f = identity
so resampling units (items, or item pairs sharing a pair_id) and recomputing the metric is cheap
and exact. Binary mean metrics get McNemar's exact test; everything else a paired permutation
test that swaps the two models' values within a unit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

LN2 = math.log(2)
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda x: x,
    "weighted_perplexity": lambda x: np.exp(-x),
    "bits_per_byte": lambda x: -x / LN2,
    "pair_ratio": lambda x: x,
}


@dataclass
class PairedResult:
    task: str
    metric: str
    base: str
    other: str
    base_value: float
    other_value: float
    diff: float  # other - base
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    n_units: int
    higher_is_better: bool | None = None
    filter: str = "none"  # lm-eval's filter the metric was computed after

    def to_dict(self) -> dict:
        return asdict(self)


def metric_label(metric: str, flt: str | None = None) -> str:
    """How a metric is shown: its name, with its lm-eval filter unless that is "none"."""
    return metric if not flt or flt == "none" else f"{metric} [{flt}]"


# -- turning lm-eval's per-item metric values into (a, b) per unit ------------------------------
def aggregation_of(metric: str, values: Sequence) -> str | None:
    """How a metric aggregates, judged from its name and per-item values; None if not a ratio of sums."""
    first = values[0] if len(values) else None
    if isinstance(first, (list, tuple)):
        if len(first) == 3:
            return "pair_ratio"  # (pair_id, variant, correct): see evals/suites/metrics.py
        if len(first) == 2 and "perplexity" in metric:
            return "weighted_perplexity"
        if len(first) == 2 and metric == "bits_per_byte":
            return "bits_per_byte"
        return None
    if isinstance(first, (bool, int, float, np.number)):
        return "mean"
    return None


def unit_table(items: list[dict], metric: str, aggregation: str) -> dict:
    """unit key -> (a, b). items: {"doc_id", "doc", "metrics": {...}} as written by the runner."""
    units: dict = {}
    if aggregation == "pair_ratio":
        pairs: dict = {}
        for it in items:
            pair_id, variant, correct = it["metrics"][metric]
            pairs.setdefault(pair_id, {})[variant] = bool(correct)
        for key, p in pairs.items():
            if "neutral" in p and "opinion" in p:
                # Only pairs answered right without the opinion can flip.
                units[key] = (float(p["neutral"] and not p["opinion"]), float(p["neutral"]))
        return units
    for it in items:
        value = it["metrics"][metric]
        key = _unit_key(it)
        a, b = (float(value), 1.0) if aggregation == "mean" else (float(value[0]), float(value[1]))
        old = units.get(key, (0.0, 0.0))
        units[key] = (old[0] + a, old[1] + b)
    return units


def _unit_key(item: dict):
    doc = item.get("doc") or {}
    return ("pair", doc["pair_id"]) if isinstance(doc, dict) and "pair_id" in doc else item["doc_id"]


# -- statistics ---------------------------------------------------------------------------------
def ratio_metric(a: np.ndarray, b: np.ndarray, aggregation: str) -> np.ndarray:
    """f(sum a / sum b) along the last axis."""
    total_b = b.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(total_b > 0, a.sum(-1) / np.where(total_b > 0, total_b, 1), 0.0)
    return TRANSFORMS[aggregation](x)


def paired_bootstrap(base: np.ndarray, other: np.ndarray, aggregation: str, n_boot: int = 2000,
                     seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """CI of metric(other) - metric(base), resampling units. base/other: [units, 2] of (a, b)."""
    n = len(base)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # chunks bound memory at 256 x units
        idx = rng.integers(0, n, size=(min(256, n_boot - start), n))
        diffs[start:start + len(idx)] = (ratio_metric(other[idx, 0], other[idx, 1], aggregation)
                                         - ratio_metric(base[idx, 0], base[idx, 1], aggregation))
    alpha = (1 - level) / 2
    return float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1 - alpha))


def mcnemar_exact(base: np.ndarray, other: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes."""
    b = int(np.sum((base == 1) & (other == 0)))
    c = int(np.sum((base == 0) & (other == 1)))
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))


def paired_permutation(base: np.ndarray, other: np.ndarray, aggregation: str, n_perm: int = 2000,
                       seed: int = 0) -> float:
    """Two-sided p-value: how often swapping the models within random units gives a difference at
    least as large as the observed one (with the +1 correction, so never exactly 0)."""
    n = len(base)
    if n == 0:
        return 1.0
    observed = abs(ratio_metric(other[:, 0], other[:, 1], aggregation) - ratio_metric(base[:, 0], base[:, 1], aggregation))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_perm, 256):
        swap = rng.integers(0, 2, size=(min(256, n_perm - start), n, 1)).astype(bool)
        x = np.where(swap, other[None], base[None])
        y = np.where(swap, base[None], other[None])
        d = np.abs(ratio_metric(y[..., 0], y[..., 1], aggregation) - ratio_metric(x[..., 0], x[..., 1], aggregation))
        hits += int(np.sum(d >= observed - 1e-12))
    return (hits + 1) / (n_perm + 1)


def compare_items(task: str, metric: str, base_name: str, other_name: str, base_items: list[dict],
                  other_items: list[dict], higher_is_better: bool | None = None, n_boot: int = 2000,
                  seed: int = 0, filter: str | None = None) -> PairedResult | None:
    """Paired statistics for one metric of one task; None when the metric is not decomposable.

    `filter`: the lm-eval filter whose rows to compare. Rows of a task with several filters carry
    a `filter` key; without this argument they must all share one filter, since pooling two filters'
    values of one doc would mix two different results."""
    filters = {it.get("filter") or "none" for it in [*base_items, *other_items]}
    if filter is None:
        if len(filters) > 1:
            raise ValueError(f"{task}: rows of several filters ({', '.join(sorted(filters))}); pass filter=")
        filter = next(iter(filters), "none")
    else:
        base_items = [it for it in base_items if (it.get("filter") or "none") == filter]
        other_items = [it for it in other_items if (it.get("filter") or "none") == filter]
    values = [it["metrics"].get(metric) for it in base_items if metric in it.get("metrics", {})]
    aggregation = aggregation_of(metric, values)
    if aggregation is None:
        return None
    ub = unit_table(base_items, metric, aggregation)
    uo = unit_table(other_items, metric, aggregation)
    keys = [k for k in ub if k in uo]  # only units both models answered
    base = np.array([ub[k] for k in keys], dtype=float).reshape(-1, 2)
    other = np.array([uo[k] for k in keys], dtype=float).reshape(-1, 2)
    base_value = float(ratio_metric(base[:, 0], base[:, 1], aggregation)) if len(keys) else float("nan")
    other_value = float(ratio_metric(other[:, 0], other[:, 1], aggregation)) if len(keys) else float("nan")
    low, high = paired_bootstrap(base, other, aggregation, n_boot=n_boot, seed=seed)
    binary = aggregation == "mean" and np.isin(base[:, 0], (0, 1)).all() and np.isin(other[:, 0], (0, 1)).all()
    if binary:
        p, test = mcnemar_exact(base[:, 0], other[:, 0]), "mcnemar_exact"
    else:
        p, test = paired_permutation(base, other, aggregation, n_perm=n_boot, seed=seed), "paired_permutation"
    return PairedResult(task, metric, base_name, other_name, base_value, other_value, other_value - base_value,
                        low, high, p, test, len(keys), higher_is_better, filter)


# -- next-token KL ------------------------------------------------------------------------------
def next_token_kl(model_p, model_q, prompts: list[str], batch_size: int = 8) -> list[float]:
    """KL(P || Q) of the next-token distributions after each prompt, in nats. Both models must
    share a tokenizer; prompts are encoded once with model_p's."""
    import torch
    import torch.nn.functional as F

    from evals.lm_adapter import HookedLMEval

    enc = HookedLMEval(model_p)
    out: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            ids = [enc.tok_encode(p)[-model_p.cfg.n_ctx:] or [enc.prefix_token_id] for p in prompts[start:start + batch_size]]
            width = max(map(len, ids))
            tokens = torch.full((len(ids), width), enc.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(tokens)
            for r, x in enumerate(ids):  # left padding: every prompt ends at the last column
                tokens[r, width - len(x):] = torch.tensor(x)
                mask[r, width - len(x):] = 1
            attention = None if bool(mask.all()) else mask
            lp = F.log_softmax(model_p(tokens.to(model_p.device), attention_mask=attention)[:, -1].float(), -1)
            lq = F.log_softmax(model_q(tokens.to(model_q.device), attention_mask=attention)[:, -1].float().to(lp.device), -1)
            out.extend((lp.exp() * (lp - lq)).sum(-1).clamp(min=0).tolist())
    return out


def same_tokenizer(tok_a, tok_b) -> bool:
    if tok_a is None or tok_b is None:
        return False
    return tok_a.get_vocab() == tok_b.get_vocab() and tok_a.all_special_ids == tok_b.all_special_ids
