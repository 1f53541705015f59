"""The Bradley-Terry reward model: hooks, pooling, training, evaluation by category, best-of-n,
saving, and bad input."""

import json

import pytest
import torch

import harness
from harness.errors import CheckpointError, ConfigError, HarnessError
from harness.training.best_of_n import best_of_n
from harness.training.chat import encode_pair
from harness.training.data import DataError
from harness.training.reward import RewardModel, load_reward_model, save_reward_model, score_rows, score_texts
from harness.training.reward_train import RewardConfig, pairwise_accuracy, train_reward_model
from tests.training.helpers import tiny_model

# An answer over a non-answer; the category names the non-answer. Held out: other sums.
PAIRS = [{"prompt": f"What is {a} plus {b}?", "chosen": f"{a} plus {b} is {a + b}.",
          "rejected": "I do not know." if a % 2 else "No.", "category": "dunno" if a % 2 else "no"}
         for a in range(1, 9) for b in range(1, 9)]
TRAIN, HELDOUT = PAIRS[::2], PAIRS[1::2]


@pytest.fixture(scope="module")
def trained():
    rm = RewardModel.from_lm(tiny_model(seed=0, d_model=48), seed=0)
    history = train_reward_model(rm, TRAIN, RewardConfig(steps=60, batch_size=16, lr=3e-3, show_progress=False))
    return rm, history


def test_hooks_keep_the_backbone_names_and_add_the_reward():
    lm = tiny_model()
    rm = RewardModel.from_lm(lm)
    assert set(rm.hook_dict) == set(lm.hook_dict) | {"reward.hook_pooled", "reward.hook_score"}
    tokens = torch.tensor([[1, 5, 9, 7], [2, 3, 4, 6]])
    scores, cache = rm.run_with_cache(tokens)
    assert scores.shape == (2,) and torch.equal(cache["reward.hook_score"], scores)
    # the pooled vector is ln_final's output at the last token, and the score is its projection
    assert torch.allclose(cache["reward.hook_pooled"], cache["ln_final.hook_normalized"][:, -1])
    assert torch.allclose(cache["reward.hook_pooled"] @ rm.reward.score.weight[0], scores, atol=1e-6)
    # the language model underneath is unchanged, and still runs as one
    assert torch.equal(rm(tokens, return_type="logits"), lm(tokens))
    assert torch.equal(rm.generate(tokens, max_new_tokens=3, do_sample=False, return_type="tokens"),
                       lm.generate(tokens, max_new_tokens=3, do_sample=False, return_type="tokens"))
    assert not hasattr(lm, "reward")  # from_lm copies: the lm gained no head


def test_scores_do_not_depend_on_padding_or_batch():
    rm = RewardModel.from_lm(tiny_model())
    tok = rm.tokenizer
    rows = [encode_pair(tok, p["prompt"], p["chosen"]) for p in PAIRS[:5]] + [encode_pair(tok, "Hi", "Yes.")]
    together = score_rows(rm, rows)
    alone = torch.cat([score_rows(rm, [r]) for r in rows])
    assert torch.allclose(together, alone, atol=1e-5)
    from harness.tokens import left_pad

    tokens, mask = left_pad([r.ids for r in rows], tok.pad_token_id)
    assert torch.allclose(rm(tokens, attention_mask=mask), alone, atol=1e-5)


def test_training_separates_held_out_pairs_by_category(trained):
    rm, history = trained
    assert history[-1]["loss"] < history[0]["loss"]
    result = pairwise_accuracy(rm, HELDOUT)
    assert result["n"] == len(HELDOUT) and set(result["by_category"]) == {"dunno", "no"}
    assert result["accuracy"] > 0.8, result
    by = result["by_category"]
    assert sum(v["n"] for v in by.values()) == len(HELDOUT)
    assert result["category_mean"] == pytest.approx((by["dunno"]["accuracy"] + by["no"]["accuracy"]) / 2)


def test_margin_and_centring_are_taken():
    rm = RewardModel.from_lm(tiny_model())
    rows = [{**p, "margin": 1.5} for p in TRAIN[:8]]
    history = train_reward_model(rm, rows, RewardConfig(steps=2, batch_size=4, center_rewards=0.01, show_progress=False))
    assert len(history) == 2
    with pytest.raises(DataError, match="field 'margin' must be a number"):
        train_reward_model(rm, [{**TRAIN[0], "margin": "big"}], RewardConfig(steps=1, show_progress=False))


def test_best_of_n_keeps_the_highest_scoring_sample(trained):
    rm, _ = trained
    policy = tiny_model(seed=3)
    picks = best_of_n(policy, rm, ["What is 2 plus 3?", "What is 4 plus 4?"], n=4, max_new_tokens=6, seed=1)
    for pick in picks:
        scores = [s for _, s in pick["samples"]]
        assert len(scores) == 4 and pick["best_score"] == max(scores)
        assert pick["best"] == pick["samples"][scores.index(max(scores))][0]
        # the score is the reward model's for that (prompt, completion)
        assert score_texts(rm, [pick["prompt"]], [pick["best"]])[0].item() == pytest.approx(pick["best_score"], abs=1e-5)
        assert pick["best_score"] >= pick["mean_score"]
    with pytest.raises(ConfigError, match="n >= 1"):
        best_of_n(policy, rm, ["Hi"], n=0)


def test_save_and_load_round_trip(trained, tmp_path):
    rm, _ = trained
    folder = save_reward_model(rm, tmp_path / "rm", metadata={"trained_on": "sums"}, description="sums RM")
    again = load_reward_model(folder)
    prompts, replies = [p["prompt"] for p in HELDOUT[:6]], [p["chosen"] for p in HELDOUT[:6]]
    assert torch.equal(score_texts(rm, prompts, replies), score_texts(again, prompts, replies))
    meta = json.loads((folder / "harness.json").read_text())
    assert meta["trained_on"] == "sums" and meta["reward_model"]["head"] == "reward/score.safetensors"
    lm = harness.load(folder)  # the backbone is an ordinary checkpoint
    assert type(lm).__name__ == "HookedLM" and not hasattr(lm, "reward")
    save_reward_model(again, folder, metadata={"trained_on": "again"})  # overwriting keeps one folder
    assert load_reward_model(folder) is not None and not list(tmp_path.glob(".rm.*"))


def test_a_damaged_or_missing_head_is_refused(trained, tmp_path):
    rm, _ = trained
    folder = save_reward_model(rm, tmp_path / "rm")
    head = folder / "reward" / "score.safetensors"
    data = bytearray(head.read_bytes())
    data[-1] ^= 0xFF
    head.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        load_reward_model(folder)
    head.unlink()
    with pytest.raises(CheckpointError, match="cannot read the reward head"):
        load_reward_model(folder)
    from harness.training.checkpoint import save_checkpoint

    plain = save_checkpoint(tiny_model(), tmp_path / "lm")
    with pytest.raises(CheckpointError, match="is not a reward model"):
        load_reward_model(plain)


@pytest.mark.parametrize("side", ["chosen", "rejected"])
def test_a_pair_with_an_empty_side_is_one_line(side, tmp_path):
    rm = RewardModel.from_lm(tiny_model())
    bad = [TRAIN[0], {**TRAIN[1], side: "  "}]
    with pytest.raises(DataError, match=rf"<examples> item 1: field '{side}' is empty") as err:
        train_reward_model(rm, bad, RewardConfig(steps=1, show_progress=False))
    assert isinstance(err.value, HarnessError) and "\n" not in str(err.value)
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in bad) + "\n")
    with pytest.raises(DataError, match=rf"pairs.jsonl:2: field '{side}' is empty"):
        pairwise_accuracy(rm, str(path))
