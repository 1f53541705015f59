"""Shared timing helpers for the benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, timed in turn within every repeat, so drift in the
    machine's speed (other load, clocks) falls on all of them alike instead of on whichever ran last."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def paired_ratio(ours: Callable[[], object], reference: Callable[[], object], repeats: int = 20,
                 warmup: int = 2, seed: int = 0) -> dict[str, float]:
    """Time `ours` and `reference` back to back `repeats` times, alternating which goes first (the
    second of two runs inherits the first one's warm caches and allocator state), and summarise
    the per-pair ratios ours / reference: median and a 95% bootstrap interval of the median."""
    import random

    for _ in range(warmup):
        ours(), reference()
    ratios, mine, theirs = [], [], []
    for i in range(repeats):
        order = [("ours", ours), ("reference", reference)]
        if i % 2:
            order.reverse()
        took = {}
        for name, fn in order:
            start = time.perf_counter()
            fn()
            took[name] = time.perf_counter() - start
        mine.append(took["ours"])
        theirs.append(took["reference"])
        ratios.append(took["ours"] / took["reference"])
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    return {"ratio": statistics.median(ratios), "ci_low": medians[49], "ci_high": medians[1949],
            "ours_s": statistics.median(mine), "reference_s": statistics.median(theirs)}
