import pytest
import torch

import harness

import peft  # noqa: F401  (a hard dependency: LoRA must not silently skip)

from harness.errors import ConfigError
from harness.training.lora import add_lora, lora_layers, merge_lora
from harness.training.checkpoint import save_checkpoint
from harness.training.sft import SFTConfig, train_sft
from tests.training.helpers import tiny_model

DATA = [{"prompt": "What is the capital of France?", "response": "The capital of France is Paris."}] * 4


def test_lora_trains_only_adapters_and_merges_exactly(tmp_path):
    model = tiny_model()
    tokens = model.to_tokens(["What is the capital of France?", "A cow says moo."])
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    add_lora(model, r=4, alpha=8)
    assert len(lora_layers(model)) == 2 * 7  # every projection of both blocks
    assert torch.allclose(model(tokens), tiny_model()(tokens))  # B starts at zero: nothing changed yet
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    train_sft(model, DATA, SFTConfig(steps=5, batch_size=4, lr=1e-2, warmup=1, show_progress=False))
    with torch.no_grad():
        adapted = model(tokens)
    assert not torch.allclose(adapted, tiny_model()(tokens))  # the adapters learned something
    base_weights = {k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base_weights[k], v) for k, v in frozen.items())  # base weights untouched

    merge_lora(model)
    assert not lora_layers(model) and set(model.state_dict()) == set(frozen)
    with torch.no_grad():
        merged = model(tokens)
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)
    # hooks still see the merged projections, and the merged model saves and loads like any other
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_q")
    assert cache["blocks.0.attn.hook_q"].shape[:2] == tokens.shape
    loaded = harness.load(save_checkpoint(model, tmp_path / "merged"))
    torch.testing.assert_close(loaded(tokens), merged, atol=1e-5, rtol=1e-5)


def test_lora_errors():
    with pytest.raises(ConfigError, match="no LoRA targets"):
        add_lora(tiny_model(), targets=("c_attn",))
    with pytest.raises(ConfigError, match="no LoRA adapters to merge"):
        merge_lora(tiny_model())


def test_weight_views_and_hook_result_include_unmerged_adapters():
    """Before merging, W_Q/W_K/W_V/W_O and the per-head hook_result describe the adapted model:
    the heads' results add up to the attention output, and the views equal the merged weights."""
    model = add_lora(tiny_model(), r=4, alpha=8)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)  # a trained-looking adapter
    tokens = model.to_tokens(["What is the capital of France?"])
    attn = model.blocks[0].attn
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0.") and
                                    n.endswith(("hook_result", "hook_attn_out")))
    torch.testing.assert_close(cache["blocks.0.attn.hook_result"].sum(2), cache["blocks.0.hook_attn_out"],
                               atol=1e-5, rtol=1e-5)
    views = {name: getattr(attn, name).detach().clone() for name in ("W_Q", "W_K", "W_V", "W_O")}
    merge_lora(model)
    for name, view in views.items():
        torch.testing.assert_close(view, getattr(model.blocks[0].attn, name), atol=1e-6, rtol=1e-6)
