"""Activation caching at corpus scale: writer (resumable, data parallel), memory-mapped reader,
SAELens export, and the paired (base/aligned) cache. See writer.py and paired.py for the layouts."""

from harness.caching.hooks import resolve_hooks
from harness.caching.paired import cache_pair
from harness.caching.paired_reader import PairedActivations
from harness.caching.reader import CachedActivations
from harness.caching.saelens import to_saelens
from harness.caching.settings import CacheSettings
from harness.caching.writer import cache_activations

__all__ = ["CacheSettings", "CachedActivations", "PairedActivations", "cache_activations", "cache_pair", "resolve_hooks", "to_saelens"]
