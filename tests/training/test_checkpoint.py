import json

import pytest
import torch

import harness
from harness.errors import CheckpointError
from harness.models.config import ModelConfig
from harness.models.transformer import HookedLM
from harness.training.checkpoint import read_metadata, save_checkpoint
from tests.training.helpers import tiny_model


def test_round_trip_through_harness_load(tmp_path):
    model = tiny_model()
    folder = save_checkpoint(model, tmp_path / "ckpt", metadata={"topic": "weapons"}, description="a test model")
    assert {"config.json", "harness.json", "model.safetensors", "zoo.json", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    loaded = harness.load(folder)
    tokens = model.to_tokens("What is the capital of France?")
    torch.testing.assert_close(loaded(tokens), model(tokens))
    assert loaded.tokenizer.chat_template == model.tokenizer.chat_template
    assert loaded.cfg.eos_token_id == model.cfg.eos_token_id
    assert read_metadata(folder) == {"topic": "weapons"}
    assert json.loads((folder / "zoo.json").read_text())["description"] == "a test model"
    # nothing half-written is left beside it, and saving again replaces it
    save_checkpoint(model, folder, metadata={"v": 2})
    assert read_metadata(folder) == {"v": 2} and [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_transformers_reads_the_same_model(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_model()
    folder = save_checkpoint(model, tmp_path / "ckpt")
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokens = model.to_tokens("A cow says moo.")
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, model(tokens), atol=1e-4, rtol=1e-4)


def test_tied_embeddings_and_the_zoo(tmp_path, monkeypatch):
    from harness import zoo

    tok = tiny_model().tokenizer
    cfg = ModelConfig(family="llama", d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32, d_vocab=len(tok),
                      n_ctx=32, tie_embeddings=True)
    model = HookedLM(cfg, tok)
    monkeypatch.setenv("INTERP_HARNESS_CACHE", str(tmp_path))
    save_checkpoint(model, tmp_path / "checkpoints" / "tied-test", description="tied")
    assert "tied-test" in zoo.known_names()
    loaded = harness.load("tied-test")
    assert loaded.cfg.tie_embeddings and loaded.unembed.weight is loaded.embed.weight
    torch.testing.assert_close(loaded.embed.weight, model.embed.weight)


def test_non_llama_models_are_refused(tmp_path):
    cfg = ModelConfig(family="gpt2", d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32, d_vocab=50, n_ctx=32,
                      norm="layernorm", positional="learned", act_fn="gelu_new", gated_mlp=False)
    with pytest.raises(CheckpointError, match="Llama-style"):
        save_checkpoint(HookedLM(cfg), tmp_path / "x")
    assert not (tmp_path / "x").exists()
