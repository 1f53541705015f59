"""Tiny models and tokenizers for the eval tests: a byte-level BPE trained on the spot (so the
tests need no hub) and a small random Llama with that vocabulary."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
import transformers as tf

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France.",
    "Answer: A B C D yes no true false refuse sorry I cannot help with that request.",
    "def function(argument): return the value of the argument plus one, as documented.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 + - * = ? !",
    "Question: what is the largest planet in the solar system? Jupiter, Saturn, Earth, Mars.",
] * 4


@functools.lru_cache(maxsize=None)
def tokenizer(add_bos: bool = False, vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_TRAINING_TEXT, trainer)
    if add_bos:  # a Llama-style tokenizer that puts BOS in front of everything it encodes
        bos = tok.token_to_id("<|im_start|>")
        tok.post_processor = processors.TemplateProcessing(single="<|im_start|> $A", special_tokens=[("<|im_start|>", bos)])
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                      pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.name_or_path = f"tiny-bpe-{'bos' if add_bos else 'nobos'}"
    return fast


def hf_llama(tok, seed: int = 0, n_layers: int = 2):
    torch.manual_seed(seed)
    config = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    model = tf.LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random norms too, so a misplaced weight shows
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def hooked(tok, seed: int = 0, n_layers: int = 2):
    import harness

    return harness.load(hf_llama(tok, seed, n_layers), tokenizer=tok)


def model_pair(aligned_seed: int = 1) -> dict:
    """{"base", "aligned"}: two tiny models on one tokenizer, differing by their random weights."""
    tok = tokenizer()
    return {"base": hooked(tok, seed=0), "aligned": hooked(tok, seed=aligned_seed)}


def write_task(folder: Path, name: str, yaml_text: str, rows: list[dict]) -> None:
    """A task in `folder`: `rows` as NAME.jsonl, and `yaml_text` as NAME.yaml with DATA standing for that file."""
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / f"{name}.yaml").write_text(yaml_text.replace("DATA", str(data)))
