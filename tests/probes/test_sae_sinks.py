"""Sink- and outlier-aware SAE defaults on a tiny model with a planted massive-norm position:
without the default exclusion the SAE looks nearly perfect by explained variance and is useless
by CE loss recovered, and the disagreement warning fires (run manifest, CLI summary); with the
defaults it stays quiet and the run records what was left out and why. SAELens reads the saved
normalisation back: SAE.load_from_disk on raw activations reproduces the harness's
reconstruction, and "mse" is SAELens's definition."""

import copy
import json

import pytest
import torch
from sae_lens import SAE

from harness.caching import cache_activations
from probes.sae import evaluate_sae, heldout_tokens, train_sae
from probes.sae.evaluate import CE_LOW, EV_HIGH
from tests.probes.sae_tiny import trained_tiny_model

HOOK = "blocks.0.hook_resid_post"
CTX = 64
PLANT = 1e5  # the planted position's norm, in multiples of the median token's


@pytest.fixture(scope="module")
def planted():
    """The trained tiny model with a massive constant vector added to position 0's residual
    after block 0: an attention-sink-like outlier, as real models have."""
    model = copy.deepcopy(trained_tiny_model())
    ids = heldout_tokens(model, "stdlib-docs", 1024, CTX)
    x = model.run_with_cache(ids, names_filter=[HOOK])[1][HOOK]
    v = torch.randn(x.shape[-1], generator=torch.Generator().manual_seed(1))
    v = v / v.norm() * PLANT * float(x.norm(dim=-1).median())

    def plant(act, hook):  # noqa: ARG001
        act = act.clone()
        act[:, 0] += v.to(act.dtype)
        return act

    model.blocks[0].hook_resid_post.add_hook(plant, is_permanent=True)
    return model


@pytest.fixture(scope="module")
def planted_cache(planted, tmp_path_factory):
    return cache_activations(planted, [HOOK], "stdlib-docs", 32 * 1024, tmp_path_factory.mktemp("c") / "cache",
                             context_length=CTX, batch_size=16, shard_contexts=128, progress=False)


@pytest.fixture(scope="module")
def heldout(planted):
    return heldout_tokens(planted, "stdlib-docs", 4096, CTX)


def _train(cache, out, **kw):
    args = dict(arch="topk", d_sae=64, k=8, tokens=40 * 512, batch_tokens=512, lr=3e-3, progress=False)
    return train_sae(None, HOOK, cache=cache, out=out, **{**args, **kw})


NO_EXCLUSION = dict(skip_positions=0, exclude_special=False, norm_ratio=None)


def test_disagreement_warning_fires_without_exclusion_and_not_with_it(planted, planted_cache, heldout, tmp_path,
                                                                      capsys):
    from apps.cli.sae import _print_metrics

    bare = _train(planted_cache, tmp_path / "bare", **NO_EXCLUSION)
    ev = evaluate_sae(bare.sae, planted, HOOK, tokens=heldout)
    m = ev.metrics
    assert m["explained_variance"] >= EV_HIGH and m["ce_loss_recovered"] < CE_LOW  # the misleading pair
    assert m["excluded/n_tokens"] == 0 and m["n_tokens"] == heldout.numel()
    assert len(ev.warnings) == 1 and "explained variance" in ev.warnings[0]
    ev.write(bare.run)
    manifest = json.loads((tmp_path / "bare" / "manifest.json").read_text())
    assert any("CE loss recovered" in w for w in manifest["warnings"])
    assert manifest["metrics"]["eval/kl_div"] == pytest.approx(m["kl_div"])
    _print_metrics(m)
    printed = capsys.readouterr().out
    assert "WARNING: explained variance" in printed
    head = printed.splitlines()[0]  # EV is never shown without CE loss recovered and KL next to it
    assert "explained_variance" in head and "ce_loss_recovered" in head and "kl_div" in head

    default = _train(planted_cache, tmp_path / "default")
    ev = evaluate_sae(default.sae, planted, HOOK, tokens=heldout)
    m = ev.metrics
    assert ev.warnings == [] and m["warnings"] == []
    assert m["ce_loss_recovered"] > 0.6 and m["explained_variance"] < EV_HIGH  # honest, and they agree
    # the planted position is reported apart, not averaged in
    assert m["excluded/n_tokens"] == m["excluded/by_position"] == len(heldout)
    assert m["n_tokens"] == heldout.numel() - len(heldout)
    assert m["excluded/explained_variance"] < 0  # the SAE was not trained for it, and it shows
    _print_metrics(m)
    printed = capsys.readouterr().out
    assert "WARNING" not in printed and f"left out (kept clean when spliced): {len(heldout):,} positions" in printed
    # the run says what was left out of training and why
    manifest = json.loads((tmp_path / "default" / "manifest.json").read_text())
    assert manifest["exclusion"]["skip_positions"] == 1 and "attention sinks" in manifest["exclusion"]["why"]["position"]
    assert manifest["exclusion"]["norm_ratio"] == 10.0 and manifest["exclusion"]["max_norm"] > 0
    counts = manifest["excluded"]
    assert counts["position"] > 0 and counts["kept"] >= 40 * 512
    assert counts["position"] * (CTX - 1) == pytest.approx(counts["kept"] + counts["norm"] + counts["special"], rel=0.02)
    assert any("left out of training" in n for n in manifest["notes"])
    cfg = json.loads((tmp_path / "default" / "sae" / "cfg.json").read_text())
    assert cfg["metadata"]["seqpos_slice"] == [1, None] and cfg["metadata"]["outlier_norm_ratio"] == 10.0


def test_the_norm_rule_alone_finds_the_planted_position(planted, planted_cache, heldout, tmp_path):
    result = _train(planted_cache, tmp_path / "norm-only", skip_positions=0, exclude_special=False)
    counts = result.run.manifest["excluded"]
    assert counts["position"] == 0 and counts["norm"] > 0
    # every context's planted position, and (almost) nothing else, is over 10x the median
    assert counts["norm"] * CTX == pytest.approx(counts["norm"] + counts["kept"], rel=0.02)
    m = evaluate_sae(result.sae, planted, HOOK, tokens=heldout).metrics
    assert m["excluded/by_norm"] >= len(heldout) and m["excluded/by_norm"] < 1.02 * len(heldout)
    assert m["warnings"] == [] and m["ce_loss_recovered"] > 0.6


@pytest.fixture(scope="module")
def plain():
    return trained_tiny_model()


@pytest.fixture(scope="module")
def plain_cache(plain, tmp_path_factory):
    return cache_activations(plain, [HOOK], "stdlib-docs", 16 * 1024, tmp_path_factory.mktemp("p") / "cache",
                             context_length=CTX, batch_size=16, shard_contexts=128, progress=False)


@pytest.mark.parametrize("normalize", ["expected_average_only_in", "layer_norm"])
def test_saelens_reads_the_saved_normalisation(normalize, plain, plain_cache, tmp_path):
    result = _train(plain_cache, tmp_path / normalize, normalize=normalize, tokens=20 * 512)
    cfg = json.loads((result.path / "cfg.json").read_text())
    assert cfg["metadata"]["trained_normalize_activations"] == normalize
    if normalize == "expected_average_only_in":
        # SAELens folds the estimated scale into the weights: the saved SAE takes raw activations
        assert cfg["normalize_activations"] == "none"
        factor = cfg["metadata"]["norm_scaling_factor"]
        assert factor > 0 and abs(factor - 1) > 0.05
    else:
        assert cfg["normalize_activations"] == "layer_norm"  # applied by SAELens at run time
    tokens = heldout_tokens(plain, "stdlib-docs", 1024, CTX)
    x = plain.run_with_cache(tokens, names_filter=[HOOK])[1][HOOK]
    loaded = SAE.load_from_disk(str(result.path))
    with torch.no_grad():
        theirs = loaded(x)
        ours = result.sae.decode(result.sae.encode(x))  # what evaluate_sae splices in
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    kept = x[:, 1:].reshape(-1, x.shape[-1])
    err = (theirs[:, 1:].reshape(kept.shape) - kept).pow(2).sum(-1)
    m = evaluate_sae(loaded, plain, HOOK, tokens=tokens).metrics
    # SAELens's definitions: mse = E||x - x_hat||^2 (summed over d_in), EV about the mean
    assert m["mse"] == pytest.approx(float(err.mean()), rel=1e-4)
    assert m["mse_per_dim"] == pytest.approx(m["mse"] / x.shape[-1])
    total = (kept - kept.mean(0)).pow(2).sum(-1).mean()
    assert m["explained_variance"] == pytest.approx(float(1 - err.mean() / total), abs=1e-4)
    assert m["explained_variance"] > 0.3  # raw activations at the right scale


def test_on_the_fly_training_sees_its_whole_token_budget(plain, tmp_path, monkeypatch):
    """Measuring the outlier threshold on a sample of contexts must not shrink the training data
    to that sample: SAELens gets enough distinct contexts for every training token."""
    import sae_lens.llm_sae_training_runner as runner_mod

    seen = []
    original = runner_mod.LanguageModelSAETrainingRunner.__init__

    def spy(self, cfg, override_model=None, override_dataset=None, **kw):
        seen.append(len(override_dataset))
        original(self, cfg, override_model=override_model, override_dataset=override_dataset, **kw)

    monkeypatch.setattr(runner_mod.LanguageModelSAETrainingRunner, "__init__", spy)
    tokens = 24 * 512
    result = train_sae(plain, HOOK, corpus="stdlib-docs", context_length=CTX, out=tmp_path / "fly", arch="topk",
                       d_sae=32, k=4, tokens=tokens, batch_tokens=512, lr=3e-3, progress=False)
    assert seen and seen[0] >= tokens // CTX
    assert result.run.manifest["exclusion"]["max_norm"] > 0 and result.run.manifest["excluded"]["kept"] >= tokens


def test_a_saved_batchtopk_sae_reads_back_with_its_own_sparsity(plain, plain_cache, tmp_path):
    """SAELens saves BatchTopK as JumpReLU with the running threshold it kept in training. That
    threshold is a moving average that starts at 0: on a short run it must still converge, or
    the saved SAE fires far more features than the one that was trained and evaluated."""
    result = _train(plain_cache, tmp_path / "btk", arch="batchtopk", tokens=20 * 512)
    tokens = heldout_tokens(plain, "stdlib-docs", 1024, CTX)
    x = plain.run_with_cache(tokens, names_filter=[HOOK])[1][HOOK][:, 1:].reshape(-1, plain.cfg.d_model)
    loaded = SAE.load_from_disk(str(result.path))
    with torch.no_grad():
        l0_saved = float((loaded.encode(x) > 0).float().sum(-1).mean())
        theirs, ours = loaded(x), result.sae.decode(result.sae.encode(x))
    ev = lambda y: float(1 - (y - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())  # noqa: E731
    assert 8 * 0.5 < l0_saved < 8 * 2, l0_saved  # k = 8 in training
    assert abs(ev(theirs) - ev(ours)) < 0.1, (ev(theirs), ev(ours))
