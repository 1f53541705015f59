"""Settings objects that jobs take whole, with keyword overrides: the one rule for turning
`job(..., settings, batch_size=16)` into a settings object, so a misspelt keyword is one
ConfigError naming the real settings, never a silently ignored option.

    s = with_overrides(CacheSettings, settings, overrides, "cache")
"""

from __future__ import annotations

import dataclasses

from harness.errors import ConfigError


def with_overrides(cls, settings=None, overrides: dict | None = None, what: str = "job"):
    """`settings` (default `cls()`), with the fields in `overrides` replaced."""
    settings = settings if settings is not None else cls()
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides or {}) - names)
    if unknown:
        raise ConfigError(f"unknown {what} setting(s) {', '.join(unknown)}; settings: {', '.join(sorted(names))}")
    return dataclasses.replace(settings, **(overrides or {}))
