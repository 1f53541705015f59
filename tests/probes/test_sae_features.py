"""Feature analysis (top contexts, histograms, density, logit effects), base-vs-aligned feature
diffs, and the `harness sae` commands end to end on a tiny model folder."""

import json

import pytest
import torch

from probes.sae import analyze_features, diff_features, feature_acts, heldout_tokens, load_sae, sae_config
from tests.probes.sae_tiny import save_hf_folder, tiny_model

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def sae():
    from sae_lens import TrainingSAE

    torch.manual_seed(0)
    training = TrainingSAE.from_dict(sae_config("topk", 32, 64, k=6).to_dict())
    training.cfg.metadata.hook_name = HOOK
    with torch.no_grad():  # a random decoder at init norm 0.1 gives tiny logit effects; scale them up
        training.W_dec.mul_(10)
    return training


@pytest.fixture(scope="module")
def tokens(model):
    return heldout_tokens(model, "stdlib-docs", 40 * 32, 32, split="all")


def test_top_contexts_histogram_density_and_logit_effects(sae, model, tokens):
    report = analyze_features(sae, model, tokens=tokens, features=4, top_k=3, bins=20)
    acts = feature_acts(sae, model, HOOK, tokens)  # [n, pos, d_sae], the ground truth
    assert report.n_tokens == tokens.numel()
    torch.testing.assert_close(report.density, (acts != 0).float().mean((0, 1)))
    assert [r["feature"] for r in report.features] == report.density.argsort(descending=True)[:4].tolist()
    for row in report.features:
        f = row["feature"]
        maxima = [c["max"] for c in row["top_contexts"]]
        assert maxima == sorted(maxima, reverse=True) and len(maxima) == 3
        best = acts[..., f].amax(1).topk(3)
        assert [c["context"] for c in row["top_contexts"]] == best.indices.tolist()
        for c in row["top_contexts"]:
            assert len(c["tokens"]) == len(c["acts"]) == 32
            torch.testing.assert_close(torch.tensor(c["acts"]), acts[c["context"], :, f])
        assert sum(row["histogram"]["counts"]) == int((acts[..., f] != 0).sum())
        assert len(row["histogram"]["log10_edges"]) == 21
        effect = sae.W_dec[f].detach() @ model.W_U
        promoted = [v for _, v in row["logits"]["promoted"]]
        assert promoted == sorted(promoted, reverse=True)
        assert promoted[0] == pytest.approx(float(effect.max()), rel=1e-4)
        assert row["logits"]["suppressed"][0][1] == pytest.approx(float(effect.min()), rel=1e-4)


def test_chosen_features_and_out_of_range(sae, model, tokens):
    from harness.errors import ConfigError

    report = analyze_features(sae, model, tokens=tokens[:8], features=[5, 2], top_k=2)
    assert [r["feature"] for r in report.features] == [5, 2]
    with pytest.raises(ConfigError, match="out of range"):
        analyze_features(sae, model, tokens=tokens[:8], features=[64])


def test_diff_same_model_is_zero_and_two_models_rank_by_change(sae, model, tokens):
    same = diff_features(sae, model, model, tokens=tokens)
    assert float(same.stats["freq_delta"].abs().max()) == 0 and float(same.stats["mean_delta"].abs().max()) == 0
    aligned = tiny_model(seed=1)
    d = diff_features(sae, model, aligned, tokens=tokens)
    rows = d.top("freq_delta", 64)
    deltas = [abs(r["freq_delta"]) for r in rows]
    assert deltas == sorted(deltas, reverse=True) and deltas[0] > 0
    for r in rows[:5]:
        assert r["freq_delta"] == pytest.approx(r["freq_aligned"] - r["freq_base"], abs=1e-6)
    by_mean = [abs(r["mean_delta"]) for r in d.top("mean_delta", 64)]
    assert by_mean == sorted(by_mean, reverse=True)


def test_cli_train_eval_features(tmp_path, capsys):
    from apps.cli import main

    folder = save_hf_folder(tmp_path / "tiny")
    runs = tmp_path / "runs"
    assert main(["cache", "--model", str(folder), "--hooks", HOOK, "--corpus", "stdlib-docs", "--tokens", "4k",
                 "--out", "c", "--runs", str(runs), "--context-length", "32", "--no-progress"]) == 0
    assert main(["sae", "train", "--from-cache", "c", "--runs", str(runs), "--hook", HOOK, "--arch", "batchtopk",
                 "--d-sae", "64", "--k", "4", "--tokens", "4k", "--batch-tokens", "512", "--out", "s",
                 "--eval-tokens", "512", "--eval-model", str(folder), "--context-length", "32", "--log-every", "4"]) == 0
    out = capsys.readouterr().out
    assert "ce_loss_recovered" in out and "L0" in out
    assert main(["sae", "eval", "--sae", "s", "--runs", str(runs), "--model", str(folder), "--tokens", "512",
                 "--context-length", "32"]) == 0
    assert main(["sae", "features", "--sae", "s", "--runs", str(runs), "--model", str(folder), "--tokens", "512",
                 "--context-length", "32", "--features", "3"]) == 0
    manifest = json.loads((runs / "s" / "manifest.json").read_text())
    assert {"eval.json", "features.json", "sae/cfg.json"} <= {a["path"] for a in manifest["artifacts"]}
    assert "eval/ce_loss_recovered" in manifest["metrics"]
    assert load_sae(runs / "s").cfg.d_sae == 64


def test_firing_stats_over_chunks_equal_the_whole_at_once():
    from harness.errors import HarnessError
    from probes.sae.features import firing_stats

    acts = torch.relu(torch.randn(3, 50, 16, generator=torch.Generator().manual_seed(0)))
    freq, mean = firing_stats((acts[:, i:i + 7] for i in range(0, 50, 7)), 16)
    flat = acts.reshape(-1, 16)
    torch.testing.assert_close(freq, (flat != 0).float().mean(0))
    torch.testing.assert_close(mean, flat.mean(0))
    with pytest.raises(HarnessError, match="no activations"):
        firing_stats(iter(()), 16)
