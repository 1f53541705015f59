"""add_sae / run_with_saes / run_with_cache_with_saes / reset_saes on HookedLM give what SAELens's
HookedSAETransformer gives on the same GPT-2 weights and the same SAE. torch.set_num_threads(1)."""

import pytest
import torch
from sae_lens import HookedSAETransformer, StandardSAE, StandardSAEConfig

from harness.errors import HookNameError
from tests.harness.hf_tiny import gpt2_pair

torch.set_num_threads(1)
HOOK = "blocks.1.hook_resid_pre"


@pytest.fixture(scope="module")
def models():
    ours, tl = gpt2_pair()
    reference = HookedSAETransformer(tl.cfg)
    reference.load_state_dict(tl.state_dict(), strict=False)
    return ours, reference.eval()


def make_sae(hook=HOOK, seed=0, use_error_term=False):
    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=60, d_sae=96))
    sae.cfg.metadata.hook_name = hook
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # b_enc/b_dec start at zero; make them matter
    sae.use_error_term = use_error_term
    return sae


TOKENS = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("use_error_term", [False, True])
def test_run_with_saes_matches_saelens(models, use_error_term):
    ours, ref = models
    sae = make_sae()
    with torch.no_grad():
        a = ours.run_with_saes(TOKENS, saes=[sae], use_error_term=use_error_term)
        b = ref.run_with_saes(TOKENS, saes=[sae], use_error_term=use_error_term)
        plain = ours(TOKENS)
    assert (a - b).abs().max().item() < 1e-5
    # The error term makes the spliced model exact; without it the SAE changes the output.
    assert ((a - plain).abs().max().item() < 1e-4) == use_error_term
    assert HOOK in ours.hook_dict and not ours.acts_to_saes  # detached afterwards


def test_run_with_cache_with_saes_matches_saelens(models):
    ours, ref = models
    sae = make_sae(seed=1)
    with torch.no_grad():
        la, ca = ours.run_with_cache_with_saes(TOKENS, saes=[sae], use_error_term=True)
        lb, cb = ref.run_with_cache_with_saes(TOKENS, saes=[sae], use_error_term=True)
    names = [f"{HOOK}.hook_sae_{n}" for n in ("input", "acts_pre", "acts_post", "recons", "error", "output")]
    for name in names:
        assert (ca[name] - cb[name]).abs().max().item() < 1e-5, name
    assert (la - lb).abs().max().item() < 1e-5
    assert (ca[f"{HOOK}.hook_sae_acts_post"] > 0).any()


def test_add_sae_stays_until_reset_and_ablating_a_feature_matches(models):
    ours, ref = models
    sae = make_sae(seed=2)

    def kill_feature(acts, hook):
        acts[..., 3] = 0.0
        return acts

    hooks = [(f"{HOOK}.hook_sae_acts_post", kill_feature)]
    results = []
    for model in (ours, ref):
        model.add_sae(sae, use_error_term=True)
        with torch.no_grad():
            results.append(model.run_with_hooks(TOKENS, fwd_hooks=hooks))
        assert set(model.acts_to_saes) == {HOOK}
        model.reset_saes()
        assert not model.acts_to_saes
    assert (results[0] - results[1]).abs().max().item() < 1e-5
    with torch.no_grad():
        assert (results[0] - ours(TOKENS)).abs().max().item() > 1e-4  # the ablation reached the output
        assert isinstance(ours.blocks[1].hook_resid_pre, type(ours.blocks[0].hook_resid_pre))


def test_saes_context_restores_an_attached_sae(models):
    ours, _ = models
    first, second = make_sae(seed=3), make_sae(seed=4)
    ours.add_sae(first)
    with torch.no_grad():
        with_first = ours(TOKENS)
        ours.run_with_saes(TOKENS, saes=[second])
        assert ours.acts_to_saes[HOOK] is first
        assert torch.equal(ours(TOKENS), with_first)
    ours.reset_saes()


def test_unknown_hook_is_a_harness_error(models):
    ours, _ = models
    with pytest.raises(HookNameError, match="hook_resid_pre"):
        ours.add_sae(make_sae(hook="blocks.1.hook_resid_pree"))
