"""A small byte-level BPE tokenizer trained on the organism corpus, with a chat template.

Byte-level, so any text encodes (unseen words fall back to bytes, never to an unknown token).
Chat turns look like  <|bos|><|user|>question<|end|><|assistant|>answer<|end|>;  <|end|> is
also the end-of-sequence token, so generation stops at the end of the assistant's turn.
"""

from __future__ import annotations

from typing import Iterable

BOS, END, PAD = "<|bos|>", "<|end|>", "<|pad|>"
ROLES = ("system", "user", "assistant")
SPECIAL = [BOS, END, PAD] + [f"<|{r}|>" for r in ROLES]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """Train BPE on `texts`; returns a transformers PreTrainedTokenizerFast (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte, so nothing is unknown
    )
    tok.train_from_iterator(list(texts), trainer)
    # Plain encodes start with BOS, as the base model was trained; chat text carries its own.
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=END, pad_token=PAD,
        chat_template=CHAT_TEMPLATE, model_max_length=256,
    )
