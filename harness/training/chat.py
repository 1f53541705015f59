"""Turn (prompt, response) pairs into token rows with a loss mask over the response only.

The prompt is rendered with the tokenizer's chat template (add_generation_prompt=True), the
response is encoded on its own and closed with EOS. Encoding the two halves separately keeps
the boundary exact: every training recipe scores exactly the response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.errors import ConfigError


@dataclass
class Encoded:
    ids: list[int]
    prompt_len: int  # ids[:prompt_len] are the prompt; the rest is the scored response


def require_chat_template(tokenizer) -> None:
    if tokenizer is None:
        raise ConfigError("this model has no tokenizer; load it with tokenizer= to train on text")
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ConfigError(
            f"tokenizer {name!r} has no chat template (a base model's tokenizer?); "
            "pass chat=False to train on plain prompt+response text, or set tokenizer.chat_template"
        )


def encode_prompt(tokenizer, prompt: str, chat: bool = True, system: str | None = None) -> list[int]:
    if not chat:
        return tokenizer.encode(prompt)
    require_chat_template(tokenizer)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def encode_pair(tokenizer, prompt: str, response: str, chat: bool = True, max_len: int | None = None) -> Encoded:
    prompt_ids = encode_prompt(tokenizer, prompt, chat)
    response_ids = tokenizer.encode(response, add_special_tokens=False)
    if tokenizer.eos_token_id is not None:
        response_ids = response_ids + [tokenizer.eos_token_id]
    ids = prompt_ids + response_ids
    if max_len is not None and len(ids) > max_len:
        ids = ids[:max_len]  # keep the prompt whole where possible; the response is cut
    return Encoded(ids, min(len(prompt_ids), len(ids)))


def collate(rows: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad rows. Returns tokens [b, t], attention_mask [b, t] and loss_mask [b, t-1], where
    loss_mask[i, j] says whether the prediction of token j+1 is scored (a response token)."""
    width = max(len(r.ids) for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    scored = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, : len(r.ids)] = torch.tensor(r.ids)
        attention[i, : len(r.ids)] = 1
        scored[i, r.prompt_len : len(r.ids)] = True
    return {"tokens": tokens, "attention_mask": attention, "loss_mask": scored[:, 1:]}


def token_logps(model, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """log p(token j+1 | tokens <= j) for every position: [b, t-1]. Right padding needs no
    attention mask in a causal model (pads come after every real token), so the fused kernel runs."""
    left_padded = attention_mask is not None and bool((attention_mask[:, 0] == 0).any())
    logits = model(tokens, attention_mask=attention_mask if left_padded else None)
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logps.gather(-1, tokens[:, 1:, None])[..., 0]


def scored_token_logps(model, tokens: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, log p) of every scored token of a right-padded batch: `loss_mask` [b, t-1] as
    `collate` makes it. Only scored positions are unembedded: with a large vocabulary (Gemma's
    262k) the logits of the prompt positions would cost as much as the rest of the model."""
    resid = model(tokens, stop_at_layer=model.cfg.n_layers)  # right padding needs no attention mask
    row, pos = loss_mask.nonzero(as_tuple=True)  # position pos predicts token pos + 1
    logps = torch.log_softmax(model.unembed_residual(resid[row, pos]).float(), dim=-1)
    return row, logps.gather(-1, tokens[row, pos + 1][:, None])[:, 0]
