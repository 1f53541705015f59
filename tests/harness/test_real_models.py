"""Real weights: the packaged SmolLM2 and Gemma 3 GGUFs, loaded through the zoo, against the
transformers model loaded from the very same GGUF file."""

import pytest
import torch

import harness
from harness import gguf_convert, zoo

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "In 1905, Albert Einstein published four papers that",
    "Water boils at a temperature of",
]


@pytest.fixture(scope="module", params=["smollm2-135m-instruct", "gemma-3-270m"])
def pair(request):
    name = request.param
    hf, tokenizer = gguf_convert.load_gguf(zoo.gguf_path(name))
    return name, hf.eval(), tokenizer, harness.load(name)


@pytest.mark.slow
def test_logits_match_transformers_on_the_same_gguf(pair):
    name, hf, tokenizer, ours = pair
    for prompt in PROMPTS:
        tokens = ours.to_tokens(prompt, prepend_bos=ours.cfg.tokenizer_prepends_bos)
        assert tokens[0].tolist() == tokenizer(prompt)["input_ids"], "tokenisation differs"
        with torch.no_grad():
            diff = (hf(tokens).logits - ours(tokens)).abs().max().item()
        assert diff < 1e-3, (name, prompt, diff)


@pytest.mark.slow
def test_generates_the_same_text(pair):
    name, hf, tokenizer, ours = pair
    for prompt in PROMPTS[:2]:
        tokens = ours.to_tokens(prompt, prepend_bos=ours.cfg.tokenizer_prepends_bos)
        with torch.no_grad():
            ref = hf.generate(tokens, max_new_tokens=20, do_sample=False)
        assert ours.generate(prompt, max_new_tokens=20, do_sample=False, prepend_bos=ours.cfg.tokenizer_prepends_bos) == tokenizer.decode(ref[0]), name
