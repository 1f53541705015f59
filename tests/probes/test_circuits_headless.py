"""Circuit tools on a model with a layer whose mixer has no attention heads (the test-only
recurrent mixer between two attention layers): head-level tools leave that layer out with a
warning that names it (a NaN row) or treat it as documented, refuse its heads in one line, and
never crash; layer-level tools cover every layer."""

import warnings

import pytest
import torch

from harness.errors import ConfigError, UnsupportedArchitectureError
from probes import circuits as C
from probes.circuits import figures as F
from probes.circuits.core import HeadlessLayersWarning
from tests.harness.toy_mixer import NAME as TOY, toy_model
from tests.probes.circuits_models import pair

HEADLESS = 1


@pytest.fixture(scope="module")
def model():
    return toy_model()


def _quietly(fn, *args, **kwargs):
    """fn's result, checking it warned about the headless layer by number and kind."""
    with pytest.warns(HeadlessLayersWarning, match=rf"layers \[{HEADLESS}\] are {TOY}"):
        return fn(*args, **kwargs)


def _rows_ok(values: torch.Tensor):
    assert values[HEADLESS].isnan().all()
    assert torch.isfinite(values[[0, 2]]).all()


def test_head_sweeps_leave_the_headless_layer_as_nan(model):
    clean, corrupted, answers = pair(model)
    metric = C.logit_diff(answers)
    n, h, p = model.cfg.n_layers, model.cfg.n_heads, clean.shape[1]
    heads = _quietly(C.patch_heads_all_pos, model, clean, corrupted, metric)
    assert heads.shape == (n, h)
    _rows_ok(heads)
    _rows_ok(_quietly(C.patch_heads_by_pos, model, clean, corrupted, metric))
    est = _quietly(C.attribute_heads, model, clean, corrupted, metric)
    assert est.shape == (n, h)
    _rows_ok(est)
    assert _quietly(C.attribute_heads, model, clean, corrupted, metric, by_pos=True).shape == (n, p, h)
    for method in ("zero", "mean"):
        sweep = _quietly(C.ablation_sweep, model, clean, metric, method=method, reference=corrupted)
        _rows_ok(sweep)
        assert abs(C.ablate(model, clean, metric, heads=[(2, 1)], method=method, reference=corrupted)
                   - sweep[2, 1].item()) < 1e-4
    assert torch.isfinite(C.ablation_sweep(model, clean, metric, component="mlps")).all()
    assert F.head_heatmap(heads)


def test_layer_level_tools_cover_every_layer(model):
    clean, corrupted, answers = pair(model)
    metric = C.logit_diff(answers)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HeadlessLayersWarning)  # nothing here is head-level
        for hook in ("resid_pre", "attn_out", "mlp_out"):
            assert torch.isfinite(C.patch_layer_pos(model, clean, corrupted, metric, hook)).all()
            assert torch.isfinite(C.attribute_layer_pos(model, clean, corrupted, metric, hook)).all()
        assert torch.isfinite(C.logit_lens_diff(model, clean, answers)).all()


def test_direct_logit_attribution_puts_the_mixer_in_attn_rest(model):
    clean, _, answers = pair(model)
    with torch.no_grad():
        real = C.logit_diff(answers)(model(clean)).item()
    dla = C.direct_logit_attribution(model, clean, answers)
    parts = dla.embed + dla.heads.sum() + dla.attn_rest.sum() + dla.mlps.sum() + dla.norm_bias
    assert abs(float(parts) - real) < 1e-4 and abs(dla.total - real) < 1e-4
    assert (dla.heads[HEADLESS] == 0).all() and dla.attn_rest[HEADLESS] != 0


def test_path_patching_recomputes_the_headless_layer(model):
    clean, corrupted, answers = pair(model)
    metric = C.logit_diff(answers)
    receivers = [(2, 0), (2, 3)]
    for inp in ("q", "k", "v"):
        sweep = _quietly(C.path_patch_sweep, model, clean, corrupted, metric, receivers, inp)
        assert torch.isfinite(sweep[0]).all() and sweep[1:].isnan().all()
        one = C.path_patch(model, clean, corrupted, metric, senders=[(0, 2)], receivers=receivers, receiver_input=inp)
        assert abs(one - sweep[0, 2].item()) < 1e-4


def test_head_detectors_skip_the_headless_layer(model):
    prompts = C.repeated_tokens(model, n=2, length=5)
    scores = _quietly(C.head_scores, model, prompts.clean, length=5)
    for kind, s in scores.items():
        _rows_ok(s)
        assert ((s[[0, 2]] >= 0) & (s[[0, 2]] <= 1 + 1e-5)).all(), kind
    top = C.top_heads(scores["induction"], k=100)
    assert len(top) == 2 * model.cfg.n_heads and all(layer != HEADLESS for layer, _, _ in top)


def test_naming_a_head_of_the_headless_layer_is_one_line(model):
    clean, corrupted, answers = pair(model)
    metric = C.logit_diff(answers)
    calls = [
        lambda: C.ablate(model, clean, metric, heads=[(HEADLESS, 0)]),
        lambda: C.path_patch(model, clean, corrupted, metric, senders=[(HEADLESS, 0)], receivers=[(2, 0)]),
        lambda: C.path_patch(model, clean, corrupted, metric, senders=[(0, 0)], receivers=[(HEADLESS, 0)]),
    ]
    for call in calls:
        with pytest.raises(ConfigError, match=f"layer {HEADLESS} is a {TOY} mixer, which has no attention heads") as err:
            call()
        assert "\n" not in str(err.value)


def test_transformer_lens_views_refuse_by_name(model):
    tokens = torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(UnsupportedArchitectureError, match=f"layers \\[{HEADLESS}\\] are {TOY}"):
        model.W_Q
    _, cache = model.run_with_cache(tokens)
    with pytest.raises(UnsupportedArchitectureError, match="without attention heads"):
        cache.stack_head_results()
    assert cache.decompose_resid().shape[0] == 1 + 2 * model.cfg.n_layers  # embed, then attn/mlp per layer
    assert model.accumulated_bias(model.cfg.n_layers).abs().max().item() == 0
