"""Tiny hooked models with a real (small, trained-on-the-spot) BPE tokenizer and a chat template."""

from __future__ import annotations

import functools

import torch

from harness.models.config import ModelConfig
from harness.models.transformer import HookedLM

WORDS = ("apple pear plum grape lemon melon cherry peach red blue green black white yellow "
         "cat dog bird fish horse mouse cow sheep the a is on in of and to with for").split()
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@functools.lru_cache(maxsize=None)
def tokenizer(vocab_size: int = 320, extra: str = ""):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS) + extra] * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|pad|>",
                                   chat_template=TEMPLATE)


def model(family: str = "llama", seed: int = 0, n_layers: int = 3, d_model: int = 32, tok=None, **overrides) -> HookedLM:
    tok = tok or tokenizer()
    base = dict(family=family, d_model=d_model, n_layers=n_layers, n_heads=4, d_head=d_model // 4, d_mlp=2 * d_model,
                d_vocab=len(tok), n_ctx=64, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if family == "gpt2":
        base.update(norm="layernorm", positional="learned", act_fn="gelu_new", gated_mlp=False, mlp_bias=True,
                    attn_bias=True, attn_out_bias=True, norm_eps=1e-5)
    torch.manual_seed(seed)
    m = HookedLM(ModelConfig(**{**base, **overrides}), tok)
    with torch.no_grad():  # random norm weights, so a misplaced weight shows
        for name, p in m.named_parameters():
            if name.endswith(".w"):
                p.add_(torch.randn_like(p) * 0.1)
    m.identity["name"] = f"tiny-{family}-{seed}"
    return m.eval()
