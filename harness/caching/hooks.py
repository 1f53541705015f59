"""Hook selection: exact names or fnmatch globs over model.hook_dict, in the model's order."""

from __future__ import annotations

import difflib
import fnmatch
import re
from typing import Iterable

from harness.errors import HookNameError

GLOB_CHARS = set("*?[")
BLOCK = re.compile(r"^blocks\.(\d+)\.")


def resolve_hooks(model, patterns: "str | Iterable[str]") -> list[str]:
    """The hook names matched by `patterns`, in hook_dict order, each once.

    A pattern without glob characters must name a hook exactly; a glob must match at least one.
    Either failure raises HookNameError listing the nearest names.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    patterns = list(patterns)
    names = list(model.hook_dict)
    n_layers = getattr(getattr(model, "cfg", None), "n_layers", None)
    if not patterns:
        raise HookNameError("no hooks given; name at least one, e.g. 'blocks.0.hook_resid_post' or 'blocks.*.hook_resid_post'")
    chosen: set[str] = set()
    for pattern in patterns:
        if GLOB_CHARS & set(pattern):
            hits = fnmatch.filter(names, pattern)
        else:
            hits = [pattern] if pattern in model.hook_dict else []
        if not hits:
            m = BLOCK.match(pattern)
            if m and n_layers is not None and int(m.group(1)) >= n_layers:
                try:
                    layer_index(int(m.group(1)), n_layers)
                except LayerError as e:  # the clearer error: no such layer, naming the hook asked for
                    raise LayerError(f"{pattern!r}: {e}") from None
            raise HookNameError(_unknown(pattern, names))
        chosen.update(hits)
    return [n for n in names if n in chosen]


class LayerError(HookNameError):
    """A layer index the model does not have."""


def layer_index(layer: int, n_layers: int) -> int:
    """`layer` as 0..n_layers-1 (negative counts from the end); LayerError when out of range."""
    i = int(layer)
    if not -n_layers <= i < n_layers:
        raise LayerError(f"layer {i} is out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    return i % n_layers


def layer_hooks(model, layers, kind: str = "resid_post") -> list[str]:
    """`blocks.{i}.hook_{kind}` for each layer, checked against the model, in the model's order."""
    names = [f"blocks.{layer_index(layer, model.cfg.n_layers)}.hook_{kind}" for layer in layers]
    return resolve_hooks(model, names)


def _unknown(pattern: str, names: list[str]) -> str:
    near = difflib.get_close_matches(pattern, names, n=5, cutoff=0.5)
    hint = f"nearest: {', '.join(near)}" if near else f"hooks look like {', '.join(names[:3])}, ..."
    kind = "matches no hook" if GLOB_CHARS & set(pattern) else "is not a hook of this model"
    return f"{pattern!r} {kind}; {hint}"


def stop_layer(hooks: list[str], n_layers: int | None) -> int | None:
    """The stop_at_layer that still runs every chosen hook: one past the last block needed,
    or None when a hook after the blocks (ln_final, unembed) is wanted."""
    last = -1
    for name in hooks:
        m = BLOCK.match(name)
        if m:
            last = max(last, int(m.group(1)))
        elif not name.startswith(("hook_embed", "hook_pos_embed", "embed.", "pos_embed.")) and name not in ("hook_tokens",):
            return None
    stop = last + 1
    return None if n_layers is not None and stop >= n_layers else stop
