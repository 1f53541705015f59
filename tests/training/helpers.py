"""Tiny chat models for the recipe tests: a BPE tokenizer over the organism corpus and a
random two-layer Llama-style HookedLM (built in well under a second)."""

from __future__ import annotations

import functools

import torch

from harness.models.config import ModelConfig
from harness.models.transformer import HookedLM
from harness.organisms import corpus
from harness.organisms.tokenizer import train_tokenizer


@functools.lru_cache(maxsize=1)
def tokenizer():
    texts, chats = corpus.base_corpus(seed=0, n_arithmetic=200)
    return train_tokenizer(texts + [f"{q} {a}" for q, a in chats], vocab_size=400)


def tiny_model(seed: int = 0, d_model: int = 32, n_layers: int = 2, tok=None) -> HookedLM:
    tok = tok or tokenizer()
    torch.manual_seed(seed)
    cfg = ModelConfig(family="llama", d_model=d_model, n_layers=n_layers, n_heads=2, d_head=d_model // 2,
                      d_mlp=2 * d_model, d_vocab=len(tok), n_ctx=64, norm_eps=1e-5,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return HookedLM(cfg, tok).eval()
