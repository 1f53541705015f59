"""SAE training through SAELens on a tiny model: every architecture trains from a harness cache
and round-trips through SAE.load_from_disk; on-the-fly training goes through SAELens's runner;
and the metrics move the right way (explained variance rises with d_sae and with L0, the spliced
CE loss lies between clean and zero-ablated)."""

import json

import pytest
import torch
from sae_lens import SAE

from harness.caching import cache_activations
from probes.sae import ARCHITECTURES, evaluate_sae, load_sae, train_sae
from tests.probes.sae_tiny import trained_tiny_model

HOOK = "blocks.0.hook_resid_post"
CTX = 64


@pytest.fixture(scope="module")
def model():
    return trained_tiny_model()


@pytest.fixture(scope="module")
def cache(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("sae-cache") / "cache"
    return cache_activations(model, [HOOK], "stdlib-docs", 32 * 1024, out, context_length=CTX, batch_size=16,
                             shard_contexts=128, progress=False)


@pytest.fixture(scope="module")
def heldout(model):
    from probes.sae import heldout_tokens

    return heldout_tokens(model, "stdlib-docs", 4096, CTX)


def _train(cache, tmp_path, name, **kw):
    args = dict(arch="topk", d_sae=64, k=4, tokens=40 * 512, batch_tokens=512, lr=3e-3, progress=False, log_every=5)
    args.update(kw)
    return train_sae(None, HOOK, cache=cache, out=tmp_path / name, **args)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_trains_from_cache_and_round_trips(arch, cache, model, tmp_path, heldout):
    result = _train(cache, tmp_path, arch, arch=arch, d_sae=48, tokens=6 * 256, batch_tokens=256, log_every=2,
                    k=4 if arch not in ("standard", "gated", "jumprelu") else None)
    folder = tmp_path / arch / "sae"
    assert result.path == folder and (folder / "cfg.json").is_file() and (folder / "sae_weights.safetensors").is_file()
    loaded = SAE.load_from_disk(str(folder))  # SAELens's own loader reads the run's sae/ folder
    assert (loaded.cfg.d_in, loaded.cfg.d_sae) == (32, 48)
    assert loaded.cfg.metadata.hook_name == HOOK
    assert loaded.cfg.metadata.training_architecture == arch
    ours = load_sae(tmp_path / arch)  # the run folder works too
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], tensor)
    x = model.run_with_cache(heldout[:2], names_filter=[HOOK])[1][HOOK]
    assert torch.isfinite(loaded(x)).all()
    # progress: loss, L0 and explained variance were logged as training went
    log = [json.loads(line) for line in (tmp_path / arch / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [2, 4, 6]
    assert all({"loss", "l0", "explained_variance"} <= set(row) for row in log)
    manifest = json.loads((tmp_path / arch / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["kind"] == "sae"
    assert {a["path"] for a in manifest["artifacts"]} >= {"sae/cfg.json", "sae/sae_weights.safetensors", "train_log.jsonl"}
    assert not [p for p in (tmp_path / arch).iterdir() if p.name.startswith(".")]  # SAELens scratch removed


def test_on_the_fly_training_goes_through_the_saelens_runner(model, tmp_path, monkeypatch, capsys):
    import sae_lens.llm_sae_training_runner as runner_mod

    calls = []
    original = runner_mod.LanguageModelSAETrainingRunner.run
    monkeypatch.setattr(runner_mod.LanguageModelSAETrainingRunner, "run",
                        lambda self: calls.append(self.cfg) or original(self))
    monkeypatch.chdir(tmp_path)  # anything SAELens wrote to its default ./output would land here
    result = train_sae(model, HOOK, arch="topk", d_sae=64, k=4, tokens=10 * 512, batch_tokens=512, lr=3e-3,
                       corpus="stdlib-docs", context_length=CTX, out=tmp_path / "fly", log_every=5)
    assert len(calls) == 1 and calls[0].logger.log_to_wandb is False
    assert calls[0].n_batches_in_buffer * calls[0].context_size >= calls[0].train_batch_size_tokens
    assert not (tmp_path / "output").exists() and not (tmp_path / "checkpoints").exists()
    assert SAE.load_from_disk(str(result.path)).cfg.metadata.hook_name == HOOK
    printed = capsys.readouterr()
    assert "L0 4.0" in printed.out + printed.err and "EV " in printed.out + printed.err
    assert result.tokens == 10 * 512 and len(result.history) == 2


def test_explained_variance_rises_with_d_sae_and_with_l0(cache, model, tmp_path, heldout):
    def ev(**kw):
        result = _train(cache, tmp_path, f"ev-{kw['d_sae']}-{kw['k']}", **kw)
        return evaluate_sae(result.sae, model, HOOK, tokens=heldout).metrics

    small, wide = ev(d_sae=16, k=4), ev(d_sae=128, k=4)
    sparse, dense = ev(d_sae=64, k=2), ev(d_sae=64, k=16)
    assert wide["explained_variance"] > small["explained_variance"] + 0.02
    assert dense["explained_variance"] > sparse["explained_variance"] + 0.05
    assert sparse["l0"] == pytest.approx(2, abs=0.01) and dense["l0"] == pytest.approx(16, abs=0.01)
    # the spliced loss lies between the clean and the zero-ablated loss, and better SAEs recover more
    for m in (small, wide, sparse, dense):
        assert m["ce_clean"] < m["ce_spliced"] < m["ce_zero_ablated"]
        assert 0 < m["ce_loss_recovered"] < 1 and m["kl_div"] > 0
    assert dense["ce_loss_recovered"] > sparse["ce_loss_recovered"]
    assert dense["kl_div"] < sparse["kl_div"]


def test_skipping_leading_positions(cache, model, tmp_path, heldout):
    """skip_positions=1 trains without position 0 (attention-sink outliers in real models); the
    SAE records it and evaluation splices from position 1 on."""
    result = _train(cache, tmp_path, "skip", skip_positions=1, tokens=8 * 512)
    loaded = load_sae(result.path)
    assert list(loaded.cfg.metadata.seqpos_slice) == [1, None]
    metrics = evaluate_sae(loaded, model, HOOK, tokens=heldout[:8]).metrics
    assert metrics["skip_positions"] == 1 and metrics["n_tokens"] == 8 * (CTX - 1)
    assert metrics["ce_clean"] < metrics["ce_spliced"] < metrics["ce_zero_ablated"]


def test_max_norm_leaves_outlier_activations_out(cache, model, tmp_path, heldout):
    """max_norm drops activations above it from training; the SAE records it and evaluation keeps
    those activations clean (the massive attention-sink activations of real models)."""
    x = model.run_with_cache(heldout[:8], names_filter=[HOOK])[1][HOOK]
    limit = float(x.norm(dim=-1).median())
    result = _train(cache, tmp_path, "max-norm", max_norm=limit, tokens=8 * 512, skip_positions=0,
                    exclude_special=False)
    loaded = load_sae(result.path)
    assert loaded.cfg.metadata.max_activation_norm == pytest.approx(limit)
    metrics = evaluate_sae(loaded, model, HOOK, tokens=heldout[:8]).metrics
    assert metrics["max_norm"] == pytest.approx(limit)
    assert metrics["n_tokens"] == int((x.norm(dim=-1) <= limit).sum())
    assert metrics["ce_clean"] < metrics["ce_spliced"] < metrics["ce_zero_ablated"]
    with pytest.raises(Exception, match="max_norm must be positive"):
        train_sae(model, HOOK, d_sae=16, tokens=1024, batch_tokens=512, corpus="stdlib-docs", max_norm=-1.0,
                  out=tmp_path / "no")
    assert not (tmp_path / "no").exists()
