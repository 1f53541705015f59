"""Bad input gives a typed, one-line error that says what was wrong."""

import json

import pytest
import torch

import harness
from harness.errors import CheckpointError, HookNameError, ShapeError, UnknownModelError, UnsupportedArchitectureError
from tests.harness.hf_tiny import build


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    build("llama-gqa3-llama3rope").save_pretrained(folder)
    return folder


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and text
    return text


def test_unknown_name_lists_zoo_models():
    with pytest.raises(UnknownModelError) as err:
        harness.load("no-such-model")
    assert "smollm2-135m-instruct" in one_line(err)


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError) as err:
        harness.load(str(tmp_path / "missing"))
    assert "missing" in one_line(err)


def test_folder_without_config(tmp_path):
    with pytest.raises(CheckpointError) as err:
        harness.load(tmp_path)
    assert "config.json" in one_line(err)


def test_truncated_weights(saved_llama, tmp_path):
    for f in saved_llama.iterdir():
        data = f.read_bytes()
        (tmp_path / f.name).write_bytes(data[: len(data) // 2] if f.suffix == ".safetensors" else data)
    with pytest.raises(CheckpointError) as err:
        harness.load(tmp_path)
    assert "corrupt weights file" in one_line(err)


def test_weights_that_do_not_fit_the_config(saved_llama, tmp_path):
    for f in saved_llama.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] += 8
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        harness.load(tmp_path)
    assert "shape" in one_line(err)


def test_unsupported_architecture_names_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UnsupportedArchitectureError) as err:
        harness.load(tmp_path)
    text = one_line(err)
    assert "'bert'" in text and "llama" in text and "gemma3_text" in text


def test_hook_typo_suggests_nearest(saved_llama):
    model = harness.load(saved_llama)
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(HookNameError) as err:
        model.run_with_cache(tokens, names_filter=["blocks.1.hook_resid_psot"])
    assert "blocks.1.hook_resid_post" in one_line(err)
    with pytest.raises(HookNameError):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_zz", lambda x, hook: x)])
    with pytest.raises(ShapeError):
        model(torch.zeros(1, 2, 3, dtype=torch.long))


def test_in_memory_load_copies_the_weights():
    hf = build("llama-mqa-tied-odd-heads")
    model = harness.load(hf)
    before = hf.model.embed_tokens.weight.detach().clone()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    assert torch.equal(hf.model.embed_tokens.weight, before)  # the source model is untouched
