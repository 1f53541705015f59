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
    with pytest.raises(CheckpointError, match="cannot save this .gpt2. model"):
        save_checkpoint(HookedLM(cfg), tmp_path / "x")
    assert not (tmp_path / "x").exists()


SAVEABLE = ["llama-gqa3-llama3rope", "qwen3-qknorm-sliding", "gemma3-interleaved", "gemma3-softcapped",
            "mistral-window-shorter-than-prompt"]
SAVEABLE_MOE = ["mixtral-7experts-top3", "qwen3moe-dense-layer-unnormed", "deepseek-groups-qlora-yarn"]


@pytest.mark.parametrize("name", SAVEABLE + SAVEABLE_MOE)
def test_models_loaded_from_transformers_save_in_their_own_layout(name, tmp_path):
    """A loaded Gemma/Qwen/Mistral/MoE model is written back as itself: same config type, same
    key names, and both harness.load and transformers read the edited weights back."""
    from transformers import AutoModelForCausalLM

    from tests.harness import hf_tiny, hf_tiny_moe

    hf = (hf_tiny if name in hf_tiny.CONFIGS else hf_tiny_moe).build(name)
    model = harness.load(hf)
    with torch.no_grad():  # an edit, so the test sees our weights and not the source's
        model.blocks[0].ln1.w.add_(0.25)
    folder = save_checkpoint(model, tmp_path / name)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["model_type"] == hf.config.model_type
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert set(f.keys()) <= set(hf.state_dict())
    tokens = torch.randint(0, hf.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(tokens)
        assert (want - hf(tokens).logits).abs().max() > 1e-3  # the edit shows
        torch.testing.assert_close(harness.load(folder)(tokens), want, atol=1e-5, rtol=1e-5)
        reread = AutoModelForCausalLM.from_pretrained(folder).eval()
        torch.testing.assert_close(reread(tokens).logits, want, atol=1e-4, rtol=1e-4)


def test_gpt2_loaded_from_transformers_is_refused_clearly(tmp_path):
    """GPT-2's fused, transposed Conv1D weights are not a rename, so there is no layout to write back."""
    from tests.harness import hf_tiny

    with pytest.raises(CheckpointError, match="cannot save this 'gpt2' model"):
        save_checkpoint(harness.load(hf_tiny.build("gpt2-odd-heads")), tmp_path / "x")


def test_unmerged_lora_adapters_are_refused(tmp_path):
    from harness.training.lora import add_lora

    model = add_lora(tiny_model(), r=2)
    with pytest.raises(CheckpointError, match="merge_lora"):
        save_checkpoint(model, tmp_path / "x")
