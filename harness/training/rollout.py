"""Sampling completions for on-policy training and best-of-n: left-padded prompts in, tokens
and a mask of each completion's tokens (up to and including its first end token) out."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.tokens import left_pad, pad_id


@dataclass
class Rollout:
    tokens: torch.Tensor  # [n, P + T] prompt (left-padded) then completion
    attention: torch.Tensor  # [n, P + T] 1 on real prompt tokens and on completion tokens
    mask: torch.Tensor  # [n, T] True on completion tokens up to and including the first end token
    width: int  # P: where completions start
    ended: torch.Tensor  # [n] whether the completion reached an end token

    def completions(self, tokenizer) -> list[str]:
        return [tokenizer.decode(row[m].tolist(), skip_special_tokens=True)
                for row, m in zip(self.tokens[:, self.width:], self.mask)]


@torch.no_grad()
def sample_completions(model, prompt_ids: list[list[int]], max_new_tokens: int, temperature: float = 1.0,
                       seed: int = 0) -> Rollout:
    tok = model.tokenizer
    prompts, attention = left_pad(prompt_ids, pad_id(tok))
    width = prompts.shape[1]
    tokens = model.generate(prompts.to(model.device), attention_mask=attention.to(model.device), do_sample=True,
                            temperature=temperature, max_new_tokens=max_new_tokens, seed=seed, return_type="tokens")
    completion = tokens[:, width:]
    is_end = completion == tok.eos_token_id
    ended_before = (is_end.long().cumsum(-1) - is_end.long()) > 0  # strictly after the first end token
    mask = ~ended_before
    attention = torch.cat([attention.to(tokens.device), mask.long()], dim=1)
    return Rollout(tokens, attention, mask, width, is_end.any(-1))
