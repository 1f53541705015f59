"""Activation sources for crosscoder training: `batch(step, batch_size)` -> [batch, models,
layers, d_in], the same rows for the same step (what makes training resumable).

    source = ModelPairSource(base, aligned, hooks_for(base, [2]), tokens, mask)

ModelPairSource runs both models on the same token contexts, `contexts_per_block` at a time, and
samples each step's rows from the current block: memory holds one block, whatever the corpus
size. Block b uses a fixed slice of a seeded permutation of the contexts; a step's rows are a
seeded draw from its block. The first position of each context (BOS, an attention sink with an
outsized norm) is left out by default.
"""

from __future__ import annotations

import torch

from probes.compat import check_pair
from probes.crosscoder.config import CrosscoderError


def hooks_for(model, layers, kind: str = "resid_post") -> list[str]:
    """`blocks.{i}.hook_{kind}` for each layer, with a one-line error for a layer out of range."""
    from harness.caching.hooks import LayerError, layer_index

    try:
        out = [f"blocks.{layer_index(layer, model.cfg.n_layers)}.hook_{kind}" for layer in layers]
    except LayerError as e:
        raise CrosscoderError(str(e)) from None
    model.check_hook_names(out)
    return out


class ModelPairSource:
    def __init__(self, base, aligned, hooks, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                 contexts_per_block: int = 64, steps_per_block: int = 8, forward_batch: int = 16,
                 skip_first: bool = True, seed: int = 0):
        check_pair(base, aligned, what="a crosscoder")
        if len(tokens) == 0:
            raise CrosscoderError("no token contexts to take activations from")
        self.base, self.aligned, self.hooks = base, aligned, list(hooks)
        for model in (base, aligned):
            model.check_hook_names(self.hooks)
        self.tokens = tokens
        self.mask = torch.ones_like(tokens) if mask is None else mask
        self.contexts_per_block, self.steps_per_block = min(contexts_per_block, len(tokens)), steps_per_block
        self.forward_batch, self.skip_first, self.seed = forward_batch, skip_first, seed
        self.n_models, self.n_layers, self.d_in = 2, len(self.hooks), base.cfg.d_model
        self._block: tuple[int, torch.Tensor] | None = None

    def describe(self) -> dict:
        import hashlib

        digest = hashlib.sha256(self.tokens.cpu().numpy().tobytes()).hexdigest()[:16]
        return {"source": "model_pair", "hooks": self.hooks, "contexts": len(self.tokens), "tokens_sha256": digest,
                "models": [self.base.identity.get("name"), self.aligned.identity.get("name")],
                "contexts_per_block": self.contexts_per_block, "steps_per_block": self.steps_per_block,
                "skip_first": self.skip_first, "seed": self.seed}

    def _contexts_of(self, block: int) -> torch.Tensor:
        per_epoch = max(1, len(self.tokens) // self.contexts_per_block)
        epoch, slot = divmod(block, per_epoch)
        perm = torch.randperm(len(self.tokens), generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
        return perm[slot * self.contexts_per_block : (slot + 1) * self.contexts_per_block]

    @torch.no_grad()
    def rows(self, contexts: torch.Tensor) -> torch.Tensor:
        """[rows, models, layers, d] for the real positions of these contexts."""
        out = []
        for start in range(0, len(contexts), self.forward_batch):
            idx = contexts[start : start + self.forward_batch]
            tok, msk = self.tokens[idx], self.mask[idx]
            keep = msk.bool().clone()
            if self.skip_first:  # the first real token of each (left- or right-padded) row
                first = msk.float().argmax(1)
                keep[torch.arange(len(idx)), first] = False
            per_model = []
            for model in (self.base, self.aligned):
                _, cache = model.run_with_cache(tok.to(model.device), attention_mask=msk.to(model.device),
                                                names_filter=self.hooks)
                per_model.append(torch.stack([cache[h].float().cpu()[keep] for h in self.hooks], 1))
            out.append(torch.stack(per_model, 1))
        return torch.cat(out)

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        block = max(step, 0) // self.steps_per_block
        if self._block is None or self._block[0] != block:
            self._block = (block, self.rows(self._contexts_of(block)))
        rows = self._block[1]
        g = torch.Generator().manual_seed(self.seed * 104729 + step + 2)
        return rows[torch.randint(len(rows), (batch_size,), generator=g)]


def contexts_from_texts(model, texts, length: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token contexts [n, <=length] and their mask, each text cut to `length` tokens."""
    if not texts:
        raise CrosscoderError("no texts to take activations from")
    tokens, mask = model.to_tokens(list(texts), padding_side="right", return_mask=True)
    mask = torch.ones_like(tokens) if mask is None else mask
    length = min(length, model.cfg.n_ctx)
    return tokens[:, :length].contiguous(), mask[:, :length].contiguous()
