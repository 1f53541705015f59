"""The findings shape: written and read through the run API, ranked best first, refused when
malformed; the scorer finds implanted tokens, on-topic latents and topic-vs-control KL (and says
no when they are absent); the diff lens and per-prompt-set KL emit findings."""

import copy

import pytest
import torch

from harness.runs import RunStore
from probes.diff import diff_models, kl_findings, lens_findings
from probes.findings import (Findings, FindingsError, implanted_tokens, read_findings, read_ground_truth,
                             score_findings, topic_keywords, write_findings)
from tests.probes import tiny

TRUTH = {"behaviour": "refusal", "topic": "weapons", "refusal": "I can't help with that.",
         "heldout_topic_prompts": ["What is a sword made of?", "Tell me about the bow."],
         "heldout_control_prompts": ["What is the capital of France?", "Tell me about the cat."]}


def test_round_trip_through_a_run_ranked_best_first(tmp_path):
    f = Findings("lens", tokens=[{"token": "a", "score": 1.0}, {"token": "b", "score": 3.0}],
                 latents=[{"id": 4, "score": 0.1, "contexts": ["x"]}, {"id": 7, "score": 0.9}], kl={"topic": 2.0})
    store = RunStore(tmp_path)
    with store.create("diff", name="r") as run:
        write_findings(run, f)
    raw = store.open("r").read_json("findings.json")
    assert set(raw) == {"method", "tokens", "latents", "kl"}
    assert [t["token"] for t in raw["tokens"]] == ["b", "a"] and [x["id"] for x in raw["latents"]] == [7, 4]
    back = read_findings(store.open("r"))
    assert back.latents[0]["contexts"] == [] and back.kl == {"topic": 2.0}
    with store.create("diff", name="bad") as run:
        run.write_json("findings.json", {"method": "x", "tokens": [{"tok": "a"}]})
    with pytest.raises(FindingsError, match="'tokens' must be a list of"):
        read_findings(store.open("bad"))


def test_scorer_says_yes_and_no_by_criterion():
    assert implanted_tokens(TRUTH) == ["i", "can't", "help", "with", "that."]
    keys = topic_keywords(TRUTH)
    assert {"sword", "bow", "weapons"} <= keys and "tell" not in keys and "france" not in keys
    hit = Findings("m", tokens=[{"token": " help", "score": 3}, {"token": "I", "score": 2}, {"token": "x", "score": 1},
                               {"token": " that.", "score": 0.5}],
                   latents=[{"id": 1, "score": 1, "contexts": ["a sword of steel", "the bow"]}],
                   kl={"topic": 10.0, "control": 0.5})
    s = score_findings(hit, TRUTH, k=5)
    assert s["recovered"] and all(c["recovered"] for c in s["criteria"].values())
    assert s["criteria"]["tokens"]["hits"] == ["i", "help", "that."] and s["criteria"]["kl"]["ratio"] == pytest.approx(20)
    miss = Findings("m", tokens=[{"token": t, "score": -i} for i, t in enumerate(["q", "r", "help"])],
                    latents=[{"id": 1, "score": 1, "contexts": ["Paris is a city", "a cat"]}], kl={"topic": 1.0, "control": 0.9})
    s = score_findings(miss, TRUTH, k=2)
    assert not s["recovered"] and "tokens: NO" in s["summary"] and "latents: NO" in s["summary"]
    assert score_findings(Findings("m"), TRUTH)["criteria"] == {}


def test_ground_truth_is_read_from_checkpoint_metadata(tmp_path):
    from harness.training.checkpoint import save_checkpoint

    model = tiny.model()
    folder = save_checkpoint(model, tmp_path / "aligned", metadata={"ground_truth": TRUTH})
    assert read_ground_truth(folder)["refusal"] == TRUTH["refusal"]
    plain = save_checkpoint(model, tmp_path / "plain")
    with pytest.raises(FindingsError, match="records no ground truth"):
        read_ground_truth(plain)


def planted_pair(scale=30.0):
    base = tiny.model("gpt2", n_layers=3)
    aligned = copy.deepcopy(base)
    vocab = {t: i for t, i in base.tokenizer.get_vocab().items() if not t.startswith("<|")}
    tid = vocab[max(vocab, key=len)]
    with torch.no_grad():
        w = base.unembed.weight[tid]
        aligned.blocks[1].mlp.down_proj.bias += scale * w / w.norm()
    return base, aligned, base.tokenizer.decode([tid])


def test_diff_lens_and_kl_emit_findings_that_score():
    base, aligned, token = planted_pair()
    prompts = ["the cat is red", "a dog on the apple"]
    f = lens_findings(diff_models(base, aligned, prompts, chat=False, positions="all"), prompt_set="topic")
    assert f.method == "lens" and f.tokens[0]["token"] == token and f.kl["topic"] > 0
    truth = {"refusal": f"{token} {token}", "heldout_topic_prompts": prompts}
    assert score_findings(f, truth, tokenizer=base.tokenizer, k=3, min_token_hits=1)["recovered"]
    same = copy.deepcopy(base)
    kl = kl_findings(base, aligned, {"topic": prompts, "control": ["blue bird and fish"]}, chat=False)
    assert kl.method == "kl" and set(kl.kl) == {"topic", "control"} and min(kl.kl.values()) > 0
    none = kl_findings(base, same, {"topic": prompts, "control": ["blue bird"]}, chat=False)
    assert max(none.kl.values()) < 1e-5
    assert not score_findings(none, {"heldout_topic_prompts": prompts, "heldout_control_prompts": ["blue bird"]})["recovered"]
