"""Shared plumbing for the circuit tools: input checks, metrics and small helpers.

A *metric* is a function logits [batch, pos, d_vocab] -> scalar tensor (as in TransformerLens's
patching utilities). The tools call it once per patched run, on that run's slice of a batch.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch

from harness.errors import ConfigError, HarnessError, ShapeError

Metric = Callable[[torch.Tensor], torch.Tensor]


def last_position_only(metric: Metric, flag: bool = True) -> Metric:
    """Mark a metric as reading only the last position's logits. The tools then unembed just that
    position ([batch, 1, d_vocab]): with a large vocabulary the unembedding dominates the cost."""
    metric.last_position_only = flag
    return metric


def reads_last_position_only(metric: Metric) -> bool:
    return bool(getattr(metric, "last_position_only", False))


def final_logits(model, resid: torch.Tensor, metric: Metric) -> torch.Tensor:
    """Logits from the final residual stream, only at the last position if that is all the metric reads."""
    return model.unembed_residual(resid[:, -1:] if reads_last_position_only(metric) else resid)


def as_tokens(model, prompts, what: str = "prompts") -> torch.Tensor:
    """Token ids [batch, pos] on the model's device from ids or text; an empty set is an error."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, (list, tuple)):
        if not prompts:
            raise HarnessError(f"the {what} set is empty; give at least one prompt")
        if all(isinstance(p, str) for p in prompts):
            tokens, mask = model.to_tokens(list(prompts), return_mask=True, prepend_bos=model.cfg.tokenizer_prepends_bos)
            if mask is not None:
                raise ShapeError(f"the {what} tokenise to different lengths; use prompts of equal token length")
            return tokens
        prompts = torch.as_tensor(prompts)
    if not isinstance(prompts, torch.Tensor):
        raise HarnessError(f"{what} must be token ids or text; got {type(prompts).__name__}")
    tokens = prompts[None] if prompts.dim() == 1 else prompts
    if tokens.dim() != 2:
        raise ShapeError(f"{what} must be token ids [batch, pos]; got shape {tuple(prompts.shape)}")
    if tokens.numel() == 0:
        raise HarnessError(f"the {what} set is empty; give at least one prompt")
    return tokens.long().to(model.device)


def check_pair(model, clean, corrupted) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and corrupted token ids of identical shape (patching swaps position by position)."""
    clean, corrupted = as_tokens(model, clean, "clean prompts"), as_tokens(model, corrupted, "corrupted prompts")
    if clean.shape != corrupted.shape:
        raise ShapeError(f"clean prompts are {tuple(clean.shape)} tokens but corrupted are {tuple(corrupted.shape)}; "
                         "patching needs the same number of prompts and the same token length in both")
    return clean, corrupted


def scalar(metric: Metric, logits: torch.Tensor) -> torch.Tensor:
    """The metric's value on `logits`, checked to be one number."""
    value = metric(logits)
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value, dtype=torch.float32)
    if value.numel() != 1:
        raise ShapeError(f"the metric must return a scalar; it returned shape {tuple(value.shape)} "
                         "(average over the batch, e.g. .mean())")
    return value.reshape(())


def logit_diff(answers: torch.Tensor, pos: int = -1) -> Metric:
    """Metric: mean over prompts of logit(answers[:, 0]) - logit(answers[:, 1]) at `pos`.
    answers: [batch, 2] token ids (correct, wrong)."""
    answers = torch.as_tensor(answers).long()

    def metric(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, pos]
        ans = answers.to(last.device)
        return (last.gather(-1, ans[:, :1]) - last.gather(-1, ans[:, 1:2])).mean()

    return last_position_only(metric, pos == -1)


def answer_prob(answers: torch.Tensor, pos: int = -1) -> Metric:
    """Metric: mean probability of the correct answer answers[:, 0] at `pos`."""
    answers = torch.as_tensor(answers).long()

    def metric(logits: torch.Tensor) -> torch.Tensor:
        probs = logits[:, pos].float().softmax(-1)
        return probs.gather(-1, answers[:, :1].to(probs.device)).mean()

    return last_position_only(metric, pos == -1)


def normalized(metric: Metric, clean_value: float, corrupted_value: float) -> Metric:
    """Rescale so the corrupted run scores 0 and the clean run 1 (patching recovers a fraction)."""
    span = float(clean_value) - float(corrupted_value)
    if abs(span) < 1e-12:
        raise HarnessError("the metric is the same on clean and corrupted prompts; nothing to normalise against")

    def rescaled(logits: torch.Tensor) -> torch.Tensor:
        return (metric(logits) - corrupted_value) / span

    return last_position_only(rescaled, reads_last_position_only(metric))


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two same-shaped tensors, flattened."""
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp(min=1e-30))


def head_dim_index(act: torch.Tensor, head: int, n_heads: int) -> int:
    """The index along a q/k/v activation's head axis that feeds query head `head` (grouped-query
    attention shares a key/value head among n_heads / n_kv query heads)."""
    n = act.shape[2]
    return head if n == n_heads else head // (n_heads // n)


# ---------------------------------------------------------------------------------- layers without heads
# A layer whose token mixer has no attention heads (a recurrent mixer such as gated DeltaNet) has no
# hook_z, hook_pattern or per-head weights. Head-level tools run on the other layers only: sweeps
# give such a layer a row of NaN (no head was patched there) and say so in a HeadlessLayersWarning;
# asking for one of its heads by (layer, head) is a ConfigError. Path patching recomputes such a
# layer, as it does the MLPs; direct logit attribution puts its whole output in `attn_rest`.


class HeadlessLayersWarning(UserWarning):
    """A head-level tool left out layers whose mixer has no attention heads."""


def head_layers(model) -> list[int]:
    """The layers whose token mixer has attention heads."""
    return [layer for layer in range(model.cfg.n_layers) if model.cfg.has_heads(layer)]


def warn_headless(model, tool: str, shown_as: str = "NaN") -> list[int]:
    """Warn, naming them, that `tool` skips the layers without heads; returns the layers with heads."""
    with_heads, skipped = head_layers(model), model.cfg.headless_layers()
    if skipped:
        kinds = sorted({model.cfg.mixers[layer] for layer in skipped})
        warnings.warn(f"{tool}: layers {skipped} are {'/'.join(kinds)} mixers without attention heads; "
                      f"their rows are {shown_as}", HeadlessLayersWarning, stacklevel=3)
    if not with_heads:
        raise ConfigError(f"{tool}: no layer of this {model.cfg.family} model has attention heads")
    return with_heads


def check_head(model, layer: int, head: int, what: str = "head") -> tuple[int, int]:
    """(layer, head) as ints, or a one-line ConfigError if the model has no such attention head."""
    layer, head = int(layer), int(head)
    cfg = model.cfg
    if not (0 <= layer < cfg.n_layers and 0 <= head < cfg.n_heads):
        raise ConfigError(f"{what} ({layer}, {head}) does not exist: the model has "
                          f"{cfg.n_layers} layers of {cfg.n_heads} heads")
    if not cfg.has_heads(layer):
        raise ConfigError(f"{what} ({layer}, {head}): layer {layer} is a {cfg.mixers[layer]} mixer, "
                          "which has no attention heads")
    return layer, head
