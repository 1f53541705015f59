"""Prompts in, activations out: the shared first step of probes, directions and diffing.

    tokens, mask = encode_prompts(model, ["How do I bake bread?"], chat=True)
    acts = collect(model, prompts, ["blocks.3.hook_resid_post"], position=-1)   # {hook: [n, d]}

Prompts are left-padded, so position -1 is every prompt's last token (where a chat model starts
its reply). With chat=True each prompt is wrapped in the tokenizer's chat template as a user turn
with the generation prompt appended; chat="auto" does that when the tokenizer has a template.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch

from harness.errors import ConfigError, HookNameError
from harness.progress import progress

LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


def use_chat(model, chat: bool | str) -> bool:
    has_template = bool(getattr(model.tokenizer, "chat_template", None))
    if chat == "auto":
        return has_template
    if chat and not has_template:
        raise ConfigError("this model's tokenizer has no chat template; pass chat=False (--no-chat) for plain text")
    return bool(chat)


def context_messages(system: str | list[dict] | None) -> list[dict]:
    """`system` is a system message, or a whole conversation (chat messages) placed before each
    prompt - e.g. a few-shot example of the behaviour being studied."""
    if not system:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in system):
        raise ConfigError("a chat context must be a list of {'role': ..., 'content': ...} messages")
    return list(system)


def format_prompts(model, prompts: Sequence[str], chat: bool | str = "auto",
                   system: str | list[dict] | None = None) -> list[str]:
    """The exact text the model sees for each prompt."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not use_chat(model, chat):
        if system:
            raise ConfigError("a system message or chat context needs chat prompts (chat=True)")
        return list(prompts)
    head = context_messages(system)
    return [
        model.tokenizer.apply_chat_template(head + [{"role": "user", "content": p}], add_generation_prompt=True,
                                            tokenize=False)
        for p in prompts
    ]


def encode_prompts(model, prompts: Sequence[str], chat: bool | str = "auto", system: str | list[dict] | None = None):
    """Left-padded (tokens [n, pos], attention mask [n, pos] of 0/1)."""
    chat_on = use_chat(model, chat)
    texts = format_prompts(model, prompts, chat_on, system)
    # A chat template already writes its own special tokens; plain text follows the tokenizer.
    prepend = False if chat_on else model.cfg.tokenizer_prepends_bos
    tokens, mask = model.to_tokens(texts, prepend_bos=prepend, padding_side="left", return_mask=True)
    if mask is None:
        mask = torch.ones_like(tokens)
    return tokens, mask


def layer_of(hook: str) -> int | None:
    m = LAYER_RE.match(hook)
    return int(m.group(1)) if m else None


def layer_hooks(model, kind: str = "resid_post", layers: Sequence[int] | None = None) -> list[str]:
    """`blocks.{i}.hook_{kind}` for the given layers (default all)."""
    layers = range(model.cfg.n_layers) if layers is None else layers
    names = [f"blocks.{i}.hook_{kind}" for i in layers]
    model.check_hook_names(names)
    return names


def select_positions(x: torch.Tensor, mask: torch.Tensor, position: int | str) -> torch.Tensor:
    """[n, pos, ...] -> [n, ...]: one position per prompt, or the mean over its real tokens.
    Integer positions count within each prompt's own tokens (0 = first, -1 = last)."""
    if position == "mean":
        m = mask.to(x.dtype).reshape(*mask.shape, *([1] * (x.dim() - 2)))
        return (x * m).sum(1) / m.sum(1).clamp(min=1)
    if not isinstance(position, int):
        raise ConfigError(f"position must be an integer or 'mean'; got {position!r}")
    lengths = mask.sum(1)
    width = mask.shape[1]
    if position < 0:
        if bool((lengths < -position).any()):
            raise ConfigError(f"position {position} is before the start of a prompt of {int(lengths.min())} tokens")
        cols = torch.full_like(lengths, width + position)
    else:
        if bool((lengths <= position).any()):
            raise ConfigError(f"position {position} is past the end of a prompt of {int(lengths.min())} tokens")
        cols = width - lengths + position  # left padding: a prompt starts at width - length
    return x[torch.arange(x.shape[0]), cols.to(x.device)]


def stop_layer(hooks: Sequence[str], n_layers: int) -> int | None:
    """Run only as far as the last block a hook sits in (None when a hook is past the blocks)."""
    layers = [layer_of(h) for h in hooks]
    if any(layer is None for layer in layers):
        return None
    last = max(layers) + 1
    return None if last >= n_layers else last


@torch.no_grad()
def collect(
    model,
    prompts: Sequence[str],
    hooks: Sequence[str],
    position: int | str = -1,
    chat: bool | str = "auto",
    system: str | list[dict] | None = None,
    batch_size: int = 16,
) -> dict[str, torch.Tensor]:
    """Activations of `hooks` at one position per prompt: {hook: [n_prompts, ...]} in float32."""
    hooks = list(hooks)
    if not hooks:
        raise HookNameError("no hooks given")
    model.check_hook_names(hooks)
    stop = stop_layer(hooks, model.cfg.n_layers)
    out: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    for start in progress(range(0, len(prompts), batch_size), desc="activations", unit="batch"):
        tokens, mask = encode_prompts(model, prompts[start : start + batch_size], chat, system)
        _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=hooks, stop_at_layer=stop)
        for h in hooks:
            out[h].append(select_positions(cache[h], mask.to(cache[h].device), position).float().cpu())
    return {h: torch.cat(v) for h, v in out.items()}
