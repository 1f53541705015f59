"""Jobs that take a settings object (cache_activations, cache_pair, train_sae) refuse a misspelt
keyword in one line naming the real settings, before any folder is made."""

import pytest

from harness.caching import CacheSettings, cache_activations
from harness.errors import ConfigError
from probes.sae import TrainSettings, train_sae
from tests.probes.sae_tiny import tiny_model


def test_keyword_overrides_replace_fields_of_the_settings_object():
    base = CacheSettings(batch_size=4, seed=3)
    assert CacheSettings.of(base, {"batch_size": 16}) == CacheSettings(batch_size=16, seed=3)
    assert TrainSettings.of(TrainSettings(d_sae=8, tokens=64), {"k": 2}).k == 2


def test_a_misspelt_setting_is_one_line_and_makes_no_folder(tmp_path):
    model = tiny_model()
    with pytest.raises(ConfigError) as err:
        cache_activations(model, ["blocks.0.hook_resid_post"], "stdlib-docs", 256, tmp_path / "c", batchsize=4)
    assert "batchsize" in str(err.value) and "batch_size" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="unknown SAE training setting"):
        train_sae(model, "blocks.0.hook_resid_post", d_sae=8, tokens=512, corpus="stdlib-docs",
                  out=tmp_path / "s", learning_rate=1e-3)
    assert not (tmp_path / "c").exists() and not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="d_sae"):
        train_sae(model, "blocks.0.hook_resid_post", tokens=512, corpus="stdlib-docs", out=tmp_path / "s")
