"""Bad input gives one-line HarnessError / ShapeError messages."""

import pytest
import torch

from harness.errors import ConfigError, HarnessError, ShapeError
from probes import circuits as C
from tests.probes.circuits_models import load, pair


@pytest.fixture(scope="module")
def model():
    return load("llama-mqa-tied-odd-heads")


def _one_line(err):
    assert "\n" not in str(err.value) and str(err.value)


def test_clean_and_corrupted_of_different_lengths(model):
    clean, corrupted, answers = pair(model)
    for fn in (C.patch_heads_all_pos, C.patch_resid_pre, C.attribute_heads):
        with pytest.raises(ShapeError, match="same token length") as err:
            fn(model, clean, corrupted[:, :-1], C.logit_diff(answers))
        _one_line(err)
    with pytest.raises(ShapeError, match="same token length"):
        C.path_patch(model, clean, corrupted[:, :-1], C.logit_diff(answers), [(0, 0)], [(1, 0)])


def test_empty_prompt_set(model):
    _, _, answers = pair(model)
    empty = torch.zeros(0, 5, dtype=torch.long)
    with pytest.raises(HarnessError, match="empty") as err:
        C.patch_heads_all_pos(model, empty, empty, C.logit_diff(answers))
    _one_line(err)
    with pytest.raises(HarnessError, match="empty"):
        C.head_scores(model, [])
    with pytest.raises(HarnessError, match="empty"):
        C.logit_lens(model, torch.zeros(2, 0, dtype=torch.long))


def test_metric_that_is_not_a_scalar(model):
    clean, corrupted, _ = pair(model)
    per_prompt = lambda logits: logits[:, -1, 0]  # noqa: E731  (forgot the .mean())
    for fn in (C.patch_heads_all_pos, C.attribute_heads):
        with pytest.raises(ShapeError, match="metric must return a scalar") as err:
            fn(model, clean, corrupted, per_prompt)
        _one_line(err)
    with pytest.raises(ShapeError, match="scalar"):
        C.ablate(model, clean, per_prompt, heads=[(0, 0)])


def test_bad_options(model):
    clean, corrupted, answers = pair(model)
    metric = C.logit_diff(answers)
    with pytest.raises(ConfigError, match="receiver_input"):
        C.path_patch(model, clean, corrupted, metric, [(0, 0)], [(1, 0)], receiver_input="z")
    with pytest.raises(ConfigError, match="does not exist"):
        C.path_patch(model, clean, corrupted, metric, [(0, 0)], [(9, 0)])
    with pytest.raises(ConfigError, match="unknown ablation method"):
        C.ablate(model, clean, metric, heads=[(0, 0)], method="noise")
    with pytest.raises(ConfigError, match="reference"):
        C.ablate(model, clean, metric, heads=[(0, 0)], method="mean")
    with pytest.raises(ShapeError, match="same token length"):
        C.ablate(model, clean, metric, heads=[(0, 0)], method="resample", reference=corrupted[:, :-1])
    with pytest.raises(ConfigError, match="cannot patch"):
        C.patch_layer_pos(model, clean, corrupted, metric, "hook_z")
    with pytest.raises(HarnessError, match="nothing to normalise"):
        C.normalized(metric, 1.0, 1.0)
    with pytest.raises(HarnessError, match="tokenizer"):
        C.ioi(model)
