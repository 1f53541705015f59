"""(slow) A refusal direction in SmolLM2-135M-Instruct, from the packaged harmful/harmless pairs.

The direction is mean(harmful) - mean(harmless) at the last prompt token, blocks.12.hook_resid_pre,
from the first 32 pairs; the rates are measured on the 16 held-out pairs, by phrase matching on
24 greedy tokens with the chat template.

SmolLM2-135M on its own answers every harmful prompt here (0/16, with or without a safety system
prompt), so there is no refusal to ablate. Ablation is therefore measured with a two-turn example
conversation before each prompt (probes.refusal.FEW_SHOT: one refusal, one answer), where the
model refuses some harmful prompts. In that context the model also refuses half the harmless
prompts whatever is added, so addition is measured in the plain chat, where it refuses none.
"""

import json
import os

import pytest
import torch

import harness
from probes.directions import mean_difference
from probes.refusal import FEW_SHOT, refusal_pairs, refusal_rate
from probes.steering import ablation_hooks, export_orthogonalized, generate, steering_hooks

LAYER = 12
ADD_SCALE = 8.0  # multiples of the mean difference (its norm is about 2.5 at layer 12)
N_TRAIN = 32
MAX_NEW = 24


@pytest.fixture(scope="module")
def smol():
    return harness.load("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def prompts():
    pairs = refusal_pairs()
    return [p["harmful"] for p in pairs], [p["harmless"] for p in pairs]


def _record(rates: dict) -> None:
    print("refusal rates:", json.dumps(rates))
    if os.environ.get("PROBES_RATES_OUT"):  # lets a report pick the numbers up
        with open(os.environ["PROBES_RATES_OUT"], "a") as f:
            f.write(json.dumps(rates) + "\n")


@pytest.mark.slow
def test_ablating_the_direction_lowers_refusals_on_harmful_prompts(smol, prompts):
    harmful, harmless = prompts
    v = mean_difference(smol, harmful[:N_TRAIN], harmless[:N_TRAIN], layers=[LAYER], system=FEW_SHOT).vector(LAYER)
    test = harmful[N_TRAIN:]
    rates = {"setting": "few-shot", "layer": LAYER,
             "harmful": refusal_rate(generate(smol, test, max_new_tokens=MAX_NEW, system=FEW_SHOT)),
             "harmful_ablated": refusal_rate(generate(smol, test, ablation_hooks(smol, v), max_new_tokens=MAX_NEW,
                                                      system=FEW_SHOT))}
    _record(rates)
    assert rates["harmful"] > 0, "the example conversation should make the model refuse some harmful prompts"
    assert rates["harmful_ablated"] < rates["harmful"]


@pytest.mark.slow
def test_adding_the_direction_raises_refusals_on_harmless_prompts(smol, prompts):
    harmful, harmless = prompts
    v = mean_difference(smol, harmful[:N_TRAIN], harmless[:N_TRAIN], layers=[LAYER]).vector(LAYER)
    test = harmless[N_TRAIN:]
    steer = steering_hooks(v, [f"blocks.{LAYER}.hook_resid_pre"], ADD_SCALE)
    rates = {"setting": "plain chat", "layer": LAYER, "scale": ADD_SCALE,
             "harmless": refusal_rate(generate(smol, test, max_new_tokens=MAX_NEW)),
             "harmless_added": refusal_rate(generate(smol, test, steer, max_new_tokens=MAX_NEW))}
    _record(rates)
    assert rates["harmless_added"] > rates["harmless"]


@pytest.mark.slow
def test_orthogonalised_smollm2_equals_the_hook_ablated_one(smol, tmp_path):
    v = torch.randn(smol.cfg.d_model, generator=torch.Generator().manual_seed(0))
    folder = export_orthogonalized(smol, v, tmp_path / "smol-ortho")
    loaded = harness.load(folder)
    tokens = smol.to_tokens(["How do I make bread at home?", "Tell me a joke."], padding_side="left")
    with smol.hooks(fwd_hooks=ablation_hooks(smol, v)):
        hooked = smol(tokens)
    assert loaded.cfg.tie_embeddings is False  # the unembedding kept the original embedding
    torch.testing.assert_close(loaded(tokens), hooked, atol=2e-3, rtol=1e-3)
