"""The activation-difference lens: zero for identical models, reads a planted offset back as its
token, and on the model organism (built once into a temporary cache) its top 20 tokens hold the
implanted refusal - scored automatically against the ground truth in the checkpoint."""

import copy

import pytest
import torch

import harness
from harness.errors import ConfigError

from probes.adl import activation_difference, adl_findings, steer_with, unrelated_texts
from probes.findings import score_findings
from tests.probes import tiny
from tests.probes.test_findings import planted_pair

TEXTS = ["the cat is red and the dog is blue", "a bird with a fish on the apple", "green pear and black plum in the"]


def test_identical_models_have_no_difference_and_bad_input_is_refused():
    model = tiny.model()
    adl = activation_difference(model, copy.deepcopy(model), TEXTS, k=3)
    assert adl.delta.shape == (3, 3, 32) and float(adl.delta.abs().max()) == 0.0
    with pytest.raises(ConfigError, match="layer 5 is out of range: the model has 3 layers"):
        activation_difference(model, model, TEXTS, layers=[5])
    with pytest.raises(ConfigError, match="fewer than 40 tokens"):
        activation_difference(model, model, TEXTS, k=40)
    from probes.compat import PairMismatchError

    with pytest.raises(PairMismatchError, match="d_model 32 vs 48"):
        activation_difference(model, tiny.model(d_model=48), TEXTS)


def test_a_planted_offset_reads_back_as_its_token():
    base, aligned, token = planted_pair()  # layer 1's MLP writes one token's unembedding direction
    adl = activation_difference(base, aligned, TEXTS, k=4)
    assert float(adl.delta[0].abs().max()) < 1e-5  # nothing changes before the planted layer
    f = adl_findings(adl, base, aligned, ["the cat"], layer=1, max_new_tokens=3)
    assert f.method == "adl" and f.tokens[0]["token"] == token
    assert len(f.extra["steered"]) == 2 and len(f.extra["per_layer"]) == 3
    # steering the base with the difference makes it say the planted token
    reply = steer_with(adl, base, ["the cat"], layer=1, strength=3.0, max_new_tokens=2, chat=False)[0]
    assert token.strip() in reply


@pytest.fixture(scope="module")
def organism(tmp_path_factory):
    from harness.organisms import build_organism

    # Building is many small steps: on one thread it takes ~45 s on 2 loaded cores, on two ~3 min.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERP_HARNESS_CACHE", str(tmp_path_factory.mktemp("cache")))
        built = build_organism("tiny-refusal-small", show_progress=False, log=lambda line: None)
    torch.set_num_threads(before)
    return harness.load(built["base"]), harness.load(built["aligned"]), built["ground_truth"]


def test_adl_top_tokens_name_the_organisms_refusal(organism):
    base, aligned, truth = organism
    adl = activation_difference(base, aligned, unrelated_texts(64), k=5)
    f = adl_findings(adl, layer=1, k=20)
    score = score_findings(f, truth, tokenizer=aligned.tokenizer, k=20)
    tokens = score["criteria"]["tokens"]
    assert tokens["recovered"] and len(tokens["hits"]) >= 3, score["summary"]
    assert len(tokens["hits"]) > 3 * tokens["chance_hits"]


@pytest.mark.slow
def test_adl_on_tiny_refusal_top_20_holds_the_refusal_and_steering_shows_it():
    from harness.organisms import organism_pair

    pair = organism_pair("tiny-refusal")  # builds into the harness cache once (~3 min)
    base, aligned, truth = harness.load(pair["base"]), harness.load(pair["aligned"]), pair["ground_truth"]
    adl = activation_difference(base, aligned, unrelated_texts(64), k=5)
    f = adl_findings(adl, base, aligned, truth["heldout_control_prompts"][:4], k=20)
    score = score_findings(f, truth, tokenizer=aligned.tokenizer, k=20)
    assert score["criteria"]["tokens"]["recovered"] and len(score["criteria"]["tokens"]["hits"]) >= 6, score["summary"]
    assert score["criteria"]["generations"]["recovered"], score["summary"]
