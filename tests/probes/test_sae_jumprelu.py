"""JumpReLU SAEs reach the L0 they are asked for: thresholds start at each latent's target-L0
quantile (probes/sae/jumprelu_init.py) and the quadratic penalty holds L0 near k."""

import pytest
import torch

from probes.sae.configs import sae_config
from probes.sae.jumprelu_init import start_thresholds_at_target_l0

from tests.probes.sae_tiny import trained_tiny_model

HOOK = "blocks.0.hook_resid_post"


def test_thresholds_start_at_the_target_l0_quantile():
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE

    torch.manual_seed(0)
    sae = JumpReLUTrainingSAE(sae_config("jumprelu", d_in=16, d_sae=128, k=8))
    x = torch.randn(2048, 16) * 5
    before = (sae.encode(x) != 0).float().sum(-1).mean()
    start_thresholds_at_target_l0(sae, 8)
    first = (sae.encode(x) != 0).float().sum(-1).mean()  # the hook sets the thresholds on this pass
    again = (sae.encode(x) != 0).float().sum(-1).mean()  # and is gone afterwards: same thresholds
    assert before > 40  # SAELens's constant 0.01 lets about half the latents fire
    assert 7 <= first <= 9 and again == first
    per_latent = (sae.encode(x) != 0).float().mean(0)
    assert per_latent.min() > 0  # every latent starts alive, near 8/128 of the rows
    assert torch.allclose(per_latent, torch.full_like(per_latent, 8 / 128), atol=0.01)


def test_jumprelu_config_takes_k_as_its_target_l0():
    cfg = sae_config("jumprelu", d_in=16, d_sae=64, k=5)
    assert cfg.target_l0 == 5 and cfg.jumprelu_sparsity_loss_mode == "quadratic"
    assert sae_config("jumprelu", d_in=16, d_sae=64).target_l0 == 32
    assert sae_config("jumprelu", d_in=16, d_sae=64, extra={"jumprelu_sparsity_loss_mode": "step"}) \
        .jumprelu_sparsity_loss_mode == "step"


def test_a_trained_jumprelu_sae_sits_at_its_target_l0(tmp_path):
    import json

    from harness.caching import cache_activations
    from probes.sae import train_sae

    model = trained_tiny_model()
    cache = cache_activations(model, [HOOK], "stdlib-docs", 16 * 1024, tmp_path / "cache", context_length=64,
                              batch_size=16, shard_contexts=128, progress=False)
    train_sae(None, HOOK, cache=cache, arch="jumprelu", d_sae=64, k=4, tokens=40 * 256, batch_tokens=256,
              out=tmp_path / "jr", progress=False, log_every=1)
    log = [json.loads(line) for line in (tmp_path / "jr" / "train_log.jsonl").read_text().splitlines()]
    assert 2 <= log[0]["l0"] <= 8  # the first step already fires about k latents
    assert all(1 <= row["l0"] <= 12 for row in log[-10:])  # and training keeps it there
    assert log[-1]["explained_variance"] > log[0]["explained_variance"]
