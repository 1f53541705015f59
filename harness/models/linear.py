"""Linear layers whose float32 inference on CPU runs PyTorch's oneDNN matmul.

On CPU, `F.linear` sends float32 through MKL's sgemm. PyTorch also ships oneDNN's matmul (the
kernel torch.compile's CPU backend calls), and at our models' prompt-sized shapes it took 6-21%
less time on the machines we measured, half for a one-token vocabulary projection on 2 threads
(`benchmarks/moe.py`, `forward.py` and `generate.py` show both).
Both compute the same product; results differ only in float rounding (about 1e-6 relative).

The oneDNN op has no backward, so anything that needs gradients (training, attribution) and
anything off CPU, in another dtype, under autocast or being compiled runs `F.linear` as before.
`set_cpu_matmul("aten")`, or `INTERP_HARNESS_CPU_MATMUL=aten` in the environment, turns it off.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigError

BACKENDS = ("onednn", "aten")
_backend = os.environ.get("INTERP_HARNESS_CPU_MATMUL", "onednn")
if _backend not in BACKENDS:
    warnings.warn(f"INTERP_HARNESS_CPU_MATMUL={_backend!r} is not one of {list(BACKENDS)}; using onednn", stacklevel=1)
    _backend = "onednn"


def set_cpu_matmul(backend: str) -> str:
    """Choose the float32 CPU inference matmul: "onednn" (default) or "aten" (F.linear, MKL).
    Returns the previous choice."""
    global _backend
    if backend not in BACKENDS:
        raise ConfigError(f"unknown CPU matmul backend {backend!r}; choose one of {list(BACKENDS)}")
    previous, _backend = _backend, backend
    return previous


def cpu_matmul() -> str:
    """The CPU matmul backend float32 inference uses now (after checking it is available)."""
    return "onednn" if _onednn_ready() else "aten"


@contextlib.contextmanager
def using_cpu_matmul(backend: str):
    """Run a block with another CPU matmul backend, e.g. to compare the two."""
    previous = set_cpu_matmul(backend)
    try:
        yield
    finally:
        set_cpu_matmul(previous)


def _onednn_ready() -> bool:
    return _backend == "onednn" and _HAS_OP and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


def _has_op() -> bool:
    try:
        return torch.ops.mkldnn._linear_pointwise is not None
    except (AttributeError, RuntimeError):  # a torch build without it
        return False


_HAS_OP = _has_op()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias, like F.linear, through oneDNN where that is safe (see the module doc)."""
    if takes_onednn(x, weight, bias):
        try:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        except (RuntimeError, NotImplementedError) as error:  # e.g. a tensor subclass or transform it lacks
            _warn_once(error)
    return F.linear(x, weight, bias)


_warned = False


def _warn_once(error: Exception) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"oneDNN linear failed, F.linear used instead: {error}", stacklevel=3)


def takes_onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """Whether `linear(x, weight, bias)` would run oneDNN's kernel."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    wants_grad = x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    if torch.is_grad_enabled() and wants_grad:
        return False  # the op has no backward
    if torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling():
        return False  # autocast would cast F.linear's inputs; the compiler picks its own kernels
    return weight.is_contiguous() and _onednn_ready()


class Linear(nn.Linear):
    """nn.Linear (same parameters, state dict and init; peft adapts it like any nn.Linear) whose
    forward goes through `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
