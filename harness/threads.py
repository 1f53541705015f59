"""Torch's thread count for a stretch of work.

    with torch_threads(1):        # many small matmuls (the tiny organisms): one thread is several
        build_organism(...)       # times faster than two on two busy cores (a build: 21 s vs 228 s)
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
