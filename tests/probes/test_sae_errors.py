"""Bad input gives one-line HarnessErrors: a hook the model lacks, an SAE whose d_in does not
fit the hook, corrupt or incomplete SAE folders, bad architecture arguments, and the CLI."""

import json

import pytest
import torch

from harness.errors import ConfigError, HarnessError, HookNameError, ShapeError
from probes.sae import SAEError, check_fits, evaluate_sae, load_sae, sae_config, train_sae
from tests.probes.sae_tiny import tiny_model

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    """A valid SAELens folder for d_in=32 (the tiny model's width), written by SAELens itself."""
    from sae_lens import SAE, TrainingSAE

    folder = tmp_path_factory.mktemp("sae") / "sae"
    sae = TrainingSAE.from_dict(sae_config("topk", 32, 64, k=4).to_dict())
    sae.cfg.metadata.hook_name = HOOK
    sae.save_inference_model(str(folder))
    SAE.load_from_disk(str(folder))
    return folder


def _one_line(err) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


def test_a_hook_the_model_lacks(model, tmp_path, sae_dir):
    with pytest.raises(HookNameError) as err:
        train_sae(model, "blocks.7.hook_resid_post", d_sae=16, tokens=1024, batch_tokens=512, corpus="stdlib-docs",
                  out=tmp_path / "run")
    assert "blocks.7.hook_resid_post" in _one_line(err) and "did you mean" in str(err.value)
    assert not (tmp_path / "run").exists()  # no half-made run for a command that could not start
    with pytest.raises(HookNameError):
        check_fits(load_sae(sae_dir), model, "blocks.0.hook_resid_psot")


def test_a_hook_missing_from_the_cache(model, tmp_path):
    from harness.caching import cache_activations

    cache = cache_activations(model, [HOOK], "stdlib-docs", 1024, tmp_path / "cache", context_length=32,
                              batch_size=4, shard_contexts=16, progress=False)
    with pytest.raises(HookNameError) as err:
        train_sae(None, "blocks.1.hook_resid_post", d_sae=16, tokens=1024, batch_tokens=512, cache=cache,
                  out=tmp_path / "run")
    assert "not in this cache" in _one_line(err)


def test_d_in_mismatch_between_a_loaded_sae_and_the_hook(model, sae_dir):
    sae = load_sae(sae_dir)
    with pytest.raises(ShapeError) as err:
        check_fits(sae, model, "blocks.0.mlp.hook_post")  # width 64, the SAE reads 32
    assert "d_in is 32" in _one_line(err) and "width 64" in str(err.value)
    wider = tiny_model(d_model=48)
    with pytest.raises(ShapeError):
        evaluate_sae(sae, wider, HOOK, n_tokens=64, context_length=32)


@pytest.mark.parametrize("damage", ["garbage-cfg", "no-weights", "truncated-weights", "wrong-shape", "no-cfg",
                                    "unknown-arch", "missing"])
def test_corrupt_sae_folders(sae_dir, tmp_path, damage):
    import shutil

    folder = tmp_path / "sae"
    shutil.copytree(sae_dir, folder)
    cfg_path, weights = folder / "cfg.json", folder / "sae_weights.safetensors"
    if damage == "garbage-cfg":
        cfg_path.write_text("{not json")
    elif damage == "no-weights":
        weights.unlink()
    elif damage == "truncated-weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "wrong-shape":
        cfg = json.loads(cfg_path.read_text())
        cfg["d_sae"] = 99
        cfg_path.write_text(json.dumps(cfg))
    elif damage == "no-cfg":
        cfg_path.unlink()
    elif damage == "unknown-arch":
        cfg = json.loads(cfg_path.read_text())
        cfg["architecture"] = "hyperbolic"
        cfg_path.write_text(json.dumps(cfg))
    elif damage == "missing":
        folder = tmp_path / "nowhere"
    with pytest.raises(SAEError) as err:
        load_sae(folder)
    assert str(folder) in _one_line(err)


def test_bad_architecture_arguments():
    with pytest.raises(ConfigError, match="unknown SAE architecture"):
        sae_config("sparse-magic", 8, 16)
    with pytest.raises(ConfigError, match="no k"):
        sae_config("standard", 8, 16, k=4)
    with pytest.raises(ConfigError, match="between 1 and d_sae"):
        sae_config("topk", 8, 16, k=17)
    with pytest.raises(ConfigError, match="no field"):
        sae_config("topk", 8, 64, extra={"kk": 3})


def test_cli_errors_are_one_line(sae_dir, capsys, tmp_path):
    from apps.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["sae", "eval", "--sae", str(tmp_path / "none"), "--model", "gpt2-nowhere"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("harness: error:") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["sae", "train", "--hook", HOOK, "--d-sae", "8", "--tokens", "1k", "--corpus", "stdlib-docs"])
    assert "needs --model" in capsys.readouterr().err
    assert issubclass(SAEError, HarnessError) and torch is not None
