"""A tiny random Llama HookedLM with a small BPE tokenizer trained on stdlib-docs, for SAE tests."""

import functools
import itertools

import torch

import harness


@functools.lru_cache(maxsize=None)
def tiny_tokenizer(vocab: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from harness.data import stdlib_docs

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<bos>", "<eos>"], show_progress=False)
    tok.train_from_iterator(itertools.islice(stdlib_docs.documents(), 200), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


def tiny_model(seed: int = 0, d_model: int = 32, n_layers: int = 2, tokenizer=None):
    """A HookedLM with random weights; seed picks the weights (a 'base' and an 'aligned' differ by seed)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=300, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    return harness.load(LlamaForCausalLM(cfg).eval(), tokenizer=tokenizer or tiny_tokenizer())


@functools.lru_cache(maxsize=None)
def trained_tiny_model(steps: int = 60, seed: int = 0, context_length: int = 64, d_model: int = 32):
    """tiny_model after a few Adam steps of next-token training on stdlib-docs, so that its
    activations matter for its predictions (zero-ablating them costs loss), as in a real model."""
    import itertools

    import numpy as np

    from harness.data import pack

    model = tiny_model(seed=seed, d_model=d_model)
    contexts = np.stack(list(itertools.islice(pack("stdlib-docs", model.tokenizer, context_length, seed=seed,
                                                   shuffle_buffer=512), steps * 8)))
    data = torch.from_numpy(contexts.astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for i in range(steps):
        loss = model(data[i * 8:(i + 1) * 8], return_type="loss")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False)


def save_hf_folder(folder, seed: int = 0, d_model: int = 32):
    """A random tiny Llama with the tiny tokenizer saved as an HF folder (what --model takes)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=300, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder
