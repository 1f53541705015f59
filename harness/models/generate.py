"""Sampling with a key/value cache: greedy, temperature, top-k, top-p and min-p."""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from harness.models.kv_cache import KVCache


def filter_logits(
    logits: torch.Tensor,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
) -> torch.Tensor:
    """Set the logits of tokens outside the sampling set to -inf. logits: [batch, vocab]."""
    neg_inf = torch.finfo(logits.dtype).min
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, neg_inf)
    if min_p is not None and min_p > 0:
        probs = logits.softmax(-1)
        threshold = min_p * probs.max(dim=-1, keepdim=True).values
        logits = logits.masked_fill(probs < threshold, neg_inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token once the mass before it already reaches top_p; the top token always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, neg_inf)
    return logits


def sample_next(
    logits: torch.Tensor,
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token for each row of logits [batch, vocab]."""
    if not do_sample or temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p, min_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def _eos_ids(model: torch.nn.Module, eos_token_id) -> list[int]:
    eos = eos_token_id if eos_token_id is not None else model.cfg.eos_token_id
    if eos is None and model.tokenizer is not None:
        eos = model.tokenizer.eos_token_id
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    input: str | Sequence[str] | torch.Tensor,
    max_new_tokens: int = 10,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    stop_at_eos: bool = True,
    eos_token_id: int | list[int] | None = None,
    use_past_kv_cache: bool = True,
    prepend_bos: bool | None = None,
    attention_mask: torch.Tensor | None = None,
    return_type: str = "input",
    seed: int | None = None,
    verbose: bool = False,
):
    """Generate continuations. Text input is left-padded so every row ends at the same place.

    Defaults are TransformerLens's: do_sample=True samples at `temperature` (temperature=0, or
    do_sample=False, is greedy); text input gets a BOS per `cfg.default_prepend_bos`.

    return_type "input" returns the same kind as the input (text for text, tokens for tokens);
    "str" and "tokens" force one. Tokens include the prompt; strings are the decoded whole.
    """
    text_input = isinstance(input, (str, list))
    if text_input:
        tokens, attention_mask = model.to_tokens(
            input, prepend_bos=prepend_bos, padding_side="left", return_mask=True
        )
    else:
        tokens = input if input.dim() == 2 else input[None]
    tokens = tokens.to(model.device)
    batch, prompt_len = tokens.shape
    generator = torch.Generator(device=model.device).manual_seed(seed) if seed is not None else None
    eos = _eos_ids(model, eos_token_id) if stop_at_eos else []
    finished = torch.zeros(batch, dtype=torch.bool, device=tokens.device)
    pad = eos[0] if eos else 0


    cache = KVCache(model.cfg.n_layers, capacity=prompt_len + max_new_tokens) if use_past_kv_cache else None
    mask = attention_mask
    step_input = tokens
    for _ in tqdm(range(max_new_tokens), disable=not verbose, desc="generating"):
        if cache is not None:
            logits = model(step_input, attention_mask=mask if cache.length == 0 else None, past_kv_cache=cache)
        else:
            logits = model(tokens, attention_mask=mask)
        next_tokens = sample_next(logits[:, -1], do_sample, temperature, top_k, top_p, min_p, generator)
        next_tokens = torch.where(finished, torch.full_like(next_tokens, pad), next_tokens)
        tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)
        if mask is not None and cache is None:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if eos:
            finished |= torch.isin(next_tokens, torch.tensor(eos, device=tokens.device))
            if bool(finished.all()):
                break
        step_input = next_tokens[:, None]

    if return_type == "tokens" or (return_type == "input" and not text_input):
        return tokens
    texts = []
    for row in range(batch):
        ids = tokens[row]
        if attention_mask is not None:
            ids = ids[int((attention_mask[row] == 0).sum()) :]  # drop left padding
        texts.append(model.tokenizer.decode(ids, skip_special_tokens=False))
    return texts[0] if isinstance(input, str) else texts
