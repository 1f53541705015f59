"""Activation caching at corpus scale: writer (resumable, data parallel), memory-mapped reader,
SAELens export. See writer.py for the folder layout."""

from harness.caching.hooks import resolve_hooks
from harness.caching.reader import CachedActivations
from harness.caching.saelens import to_saelens
from harness.caching.writer import cache_activations

__all__ = ["CachedActivations", "cache_activations", "resolve_hooks", "to_saelens"]
