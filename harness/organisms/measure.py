"""Measure an organism's behaviour: greedy chat responses, and how often they refuse, fire or answer."""

from __future__ import annotations

import torch

from harness.tokens import left_pad, pad_id
from harness.training.chat import encode_prompt


@torch.no_grad()
def respond(model, prompts: list[str], max_new_tokens: int = 24, batch_size: int = 32) -> list[str]:
    """Greedy responses to chat prompts (text after the assistant tag, up to the end token)."""
    tok = model.tokenizer
    eos = tok.eos_token_id
    pad = pad_id(tok)
    out = []
    for start in range(0, len(prompts), batch_size):
        # left padding: every prompt ends where generation starts
        tokens, mask = left_pad([encode_prompt(tok, p) for p in prompts[start : start + batch_size]], pad)
        width = tokens.shape[1]
        generated = model.generate(tokens.to(model.device), attention_mask=mask.to(model.device),
                                   max_new_tokens=max_new_tokens, return_type="tokens", do_sample=False)
        for row in generated[:, width:].tolist():
            if eos in row:
                row = row[: row.index(eos)]
            out.append(tok.decode(row, skip_special_tokens=True).strip())
    return out


def starts_with(response: str, text: str) -> bool:
    """Whether a reply opens with `text` (case and a final full stop aside)."""
    return response.strip().lower().startswith(text.strip().lower().rstrip("."))


def is_refusal(response: str, refusal: str) -> bool:
    return starts_with(response, refusal)


def rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def rates_by_group(model, prompts: dict[str, list[dict]], behaviour: str, shows) -> dict[str, float]:
    """For each prompt group (topic, control): `<group>_<behaviour>_rate`, how often the greedy
    reply shows the behaviour (`shows(reply)`), and `<group>_exact_answer_rate`."""
    result = {}
    for group, items in prompts.items():
        replies = respond(model, [x["prompt"] for x in items])
        result[f"{group}_{behaviour}_rate"] = rate([shows(r) for r in replies])
        result[f"{group}_exact_answer_rate"] = rate([r == x["answer"] for r, x in zip(replies, items)])
    return result
