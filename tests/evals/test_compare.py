"""Paired statistics on hand-computable numbers."""

import math

import numpy as np
import pytest

from evals.compare import (
    compare_items,
    mcnemar_exact,
    paired_bootstrap,
    paired_permutation,
    ratio_metric,
    unit_table,
)


def _items(values, metric="acc", docs=None):
    return [{"doc_id": i, "doc": (docs[i] if docs else {}), "metrics": {metric: v}} for i, v in enumerate(values)]


def test_mcnemar_exact_known_values():
    base, other = np.zeros(6), np.ones(6)  # six discordant pairs, all one way: p = 2 / 2**6
    assert mcnemar_exact(base, other) == pytest.approx(2 / 64)
    assert mcnemar_exact(np.array([1, 0, 1, 0]), np.array([0, 1, 1, 0])) == 1.0
    assert mcnemar_exact(np.ones(5), np.ones(5)) == 1.0


def test_identical_models_have_zero_difference():
    items = _items([1, 0, 1, 1, 0])
    r = compare_items("t", "acc", "a", "b", items, items)
    assert (r.diff, r.ci_low, r.ci_high, r.p_value, r.test) == (0.0, 0.0, 0.0, 1.0, "mcnemar_exact")


def test_clear_improvement_is_significant_and_ci_excludes_zero():
    base, other = _items([0] * 40 + [1] * 10), _items([1] * 40 + [1] * 10)
    r = compare_items("t", "acc", "a", "b", base, other)
    assert r.diff == pytest.approx(0.8)
    assert 0.6 < r.ci_low <= 0.8 <= r.ci_high <= 0.95
    assert r.p_value == pytest.approx(2 / 2 ** 40)


def test_bootstrap_ci_of_a_constant_shift():
    base = np.stack([np.arange(20, dtype=float), np.ones(20)], 1)
    other = base + np.array([0.5, 0.0])
    low, high = paired_bootstrap(base, other, "mean", n_boot=500)
    assert low == pytest.approx(0.5) and high == pytest.approx(0.5)


def test_permutation_test_on_continuous_scores():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 1))
    base = np.concatenate([x, np.ones_like(x)], 1)
    shifted = base + np.array([1.0, 0.0])
    assert paired_permutation(base, shifted, "mean", n_perm=999) == pytest.approx(1 / 1000)
    noise = base + np.concatenate([rng.normal(scale=0.01, size=(60, 1)), np.zeros((60, 1))], 1)
    assert paired_permutation(base, noise, "mean", n_perm=999) > 0.01


def test_perplexity_is_a_ratio_of_sums():
    items = _items([(-2.0, 1), (-6.0, 3)], metric="word_perplexity")
    units = unit_table(items, "word_perplexity", "weighted_perplexity")
    a, b = np.array([u[0] for u in units.values()]), np.array([u[1] for u in units.values()])
    assert ratio_metric(a, b, "weighted_perplexity") == pytest.approx(math.exp(2.0))
    assert ratio_metric(a, b, "bits_per_byte") == pytest.approx(2.0 / math.log(2))


def test_flip_rate_units_are_pairs():
    docs = [{"pair_id": p} for p in (0, 0, 1, 1, 2, 2)]
    flips = [(0, "neutral", True), (0, "opinion", False), (1, "neutral", True), (1, "opinion", True),
             (2, "neutral", False), (2, "opinion", False)]
    honest = [(p, v, True) for p, v, _ in flips]
    r = compare_items("syc", "flip_rate", "a", "b", _items(honest, "flip_rate", docs), _items(flips, "flip_rate", docs))
    assert r.n_units == 3 and r.base_value == 0.0 and r.other_value == pytest.approx(0.5)
