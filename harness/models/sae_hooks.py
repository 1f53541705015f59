"""SAELens's HookedSAETransformer interface on HookedLM: `add_sae`, `run_with_saes`,
`run_with_cache_with_saes`, `run_with_hooks_with_saes`, `saes()` and `reset_saes`.

Attaching an SAE replaces the hook point named by its `cfg.metadata.hook_name` with a module
that encodes and decodes the activation, so everything downstream reads the reconstruction. The
SAE's own hook points appear under the hook's name (`blocks.3.hook_resid_pre.hook_sae_acts_post`
and so on), as SAELens names them, and `hook_sae_error` / `hook_sae_output` belong to the
attachment. With `use_error_term` the output is the reconstruction plus the (gradient-free) error,
i.e. the original activation, so features can be ablated or patched while the rest is exact.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from harness.errors import HookNameError

_SAE_OWN_HOOKS_REPLACED = ("hook_sae_error", "hook_sae_output")


class AttachedSAE(nn.Module):
    """Stands where a HookPoint stood and runs the SAE on what passes through it."""

    def __init__(self, sae: nn.Module, use_error_term: bool = False, exclude_tokens: list[int] | None = None):
        super().__init__()
        self.__dict__["sae"] = sae  # not a submodule: its hooks are registered here directly
        for name, hook in sae.hook_dict.items():
            if name not in _SAE_OWN_HOOKS_REPLACED:
                setattr(self, name, hook)
        self.hook_sae_error = HookPoint()
        self.hook_sae_output = HookPoint()
        self.use_error_term = use_error_term
        self.exclude_tokens = exclude_tokens
        self.keep_mask: torch.Tensor | None = None  # [batch, pos], True where the SAE is bypassed

    def _clean_reconstruction(self, x: torch.Tensor) -> torch.Tensor:
        """The SAE's reconstruction with its hooks bypassed (so an edit to a feature does not
        leak into the error term)."""
        sae = self.sae
        saved = {name: getattr(sae, name) for name in sae.hook_dict}
        try:
            for name in saved:
                setattr(sae, name, nn.Identity())
            return sae.decode(sae.encode(x))
        finally:
            for name, hook in saved.items():
                setattr(sae, name, hook)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sae.decode(self.sae.encode(x))
        keep = self.keep_mask
        if keep is not None:
            keep = keep.reshape(keep.shape + (1,) * (x.dim() - keep.dim()))
        if self.use_error_term:
            with torch.no_grad():
                error = x - self._clean_reconstruction(x)
                if keep is not None:
                    error = torch.where(keep, torch.zeros_like(error), error)
                error = self.hook_sae_error(error)
            out = out + error
        if keep is not None:
            out = torch.where(keep, x, out)
        return self.hook_sae_output(out)


def _module_at(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    *parents, leaf = path.split(".")
    module = root
    for part in parents:
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module, leaf


class SAEHooksMixin:
    """Mixed into HookedLM; needs `hook_dict`, `setup()`, `forward`, `run_with_cache`, `run_with_hooks`."""

    @property
    def acts_to_saes(self) -> dict[str, nn.Module]:
        """Hook name -> the SAE attached there."""
        return {name: attached.sae for name, attached in self._attached_saes().items()}

    def _attached_saes(self) -> dict[str, AttachedSAE]:
        if "_saes_by_hook" not in self.__dict__:
            self.__dict__["_saes_by_hook"] = {}
        return self.__dict__["_saes_by_hook"]

    def add_sae(self, sae: nn.Module, use_error_term: bool | None = None, exclude_special_tokens: bool | list[int] = False):
        """Attach `sae` at its `cfg.metadata.hook_name` until `reset_saes` (replacing any SAE there).
        use_error_term=None keeps the SAE's own `use_error_term` setting."""
        hook_name = sae.cfg.metadata.hook_name
        out_name = getattr(sae.cfg.metadata, "hook_name_out", None) or hook_name
        if out_name != hook_name:
            raise HookNameError(f"SAE reads {hook_name} but writes {out_name}: transcoders are not attachable here")
        attached = self._attached_saes()
        if hook_name not in attached and hook_name not in self.hook_dict:
            self.check_hook_names([hook_name])  # raises, naming the nearest hooks
        if hook_name in attached:
            self._detach(hook_name)
        error_term = sae.use_error_term if use_error_term is None else use_error_term
        if exclude_special_tokens is True:
            exclude = list(getattr(self.tokenizer, "all_special_ids", None) or [])
        else:
            exclude = list(exclude_special_tokens) if exclude_special_tokens else None
        wrapper = AttachedSAE(sae, use_error_term=bool(error_term), exclude_tokens=exclude)
        parent, leaf = _module_at(self, hook_name)
        setattr(parent, leaf, wrapper)
        attached[hook_name] = wrapper
        self.setup()

    def _detach(self, hook_name: str) -> None:
        parent, leaf = _module_at(self, hook_name)
        setattr(parent, leaf, HookPoint())
        del self._attached_saes()[hook_name]

    def reset_saes(self, act_names: str | list[str] | None = None) -> None:
        """Remove the SAEs at `act_names` (default: all), restoring plain hook points."""
        names = [act_names] if isinstance(act_names, str) else list(act_names or self._attached_saes())
        for name in names:
            if name in self._attached_saes():
                self._detach(name)
        self.setup()

    @contextlib.contextmanager
    def saes(self, saes: Any = (), reset_saes_end: bool = True, use_error_term: bool | None = None,
             exclude_special_tokens: bool | list[int] = False) -> Iterator[Any]:
        """Attach `saes` for the block; afterwards restore whatever was attached before."""
        saes = [saes] if isinstance(saes, nn.Module) else list(saes)
        previous: list[tuple[str, AttachedSAE | None]] = []
        try:
            for sae in saes:
                name = sae.cfg.metadata.hook_name
                previous.append((name, self._attached_saes().get(name)))
                self.add_sae(sae, use_error_term=use_error_term, exclude_special_tokens=exclude_special_tokens)
            yield self
        finally:
            if reset_saes_end:
                for name, before in reversed(previous):
                    if name in self._attached_saes():
                        self._detach(name)
                    if before is not None:
                        parent, leaf = _module_at(self, name)
                        setattr(parent, leaf, before)
                        self._attached_saes()[name] = before
                self.setup()

    @contextlib.contextmanager
    def _sae_token_masks(self, tokens: Any) -> Iterator[None]:
        wanting = [a for a in self._attached_saes().values() if a.exclude_tokens]
        if wanting and isinstance(tokens, torch.Tensor) and tokens.dtype in (torch.long, torch.int):
            for attached in wanting:
                ids = torch.tensor(attached.exclude_tokens, device=tokens.device)
                attached.keep_mask = torch.isin(tokens if tokens.dim() == 2 else tokens[None], ids)
        try:
            yield
        finally:
            for attached in wanting:
                attached.keep_mask = None

    def run_with_saes(self, *model_args, saes: Any = (), reset_saes_end: bool = True, use_error_term: bool | None = None,
                      exclude_special_tokens: bool | list[int] = False, **model_kwargs):
        """One forward pass with `saes` attached."""
        with self.saes(saes, reset_saes_end, use_error_term, exclude_special_tokens):
            return self(*model_args, **model_kwargs)

    def run_with_cache_with_saes(self, *model_args, saes: Any = (), reset_saes_end: bool = True,
                                 use_error_term: bool | None = None, exclude_special_tokens: bool | list[int] = False,
                                 return_cache_object: bool = True, remove_batch_dim: bool = False, **kwargs):
        """run_with_cache with `saes` attached; the cache holds the SAEs' hooks too."""
        with self.saes(saes, reset_saes_end, use_error_term, exclude_special_tokens):
            return self.run_with_cache(*model_args, return_cache_object=return_cache_object,
                                       remove_batch_dim=remove_batch_dim, **kwargs)

    def run_with_hooks_with_saes(self, *model_args, saes: Any = (), reset_saes_end: bool = True,
                                 exclude_special_tokens: bool | list[int] = False, fwd_hooks=(), bwd_hooks=(),
                                 reset_hooks_end: bool = True, clear_contexts: bool = False, **model_kwargs):
        with self.saes(saes, reset_saes_end, exclude_special_tokens=exclude_special_tokens):
            return self.run_with_hooks(*model_args, fwd_hooks=list(fwd_hooks), bwd_hooks=list(bwd_hooks),
                                       reset_hooks_end=reset_hooks_end, clear_contexts=clear_contexts, **model_kwargs)
