"""The RLHF recipe: its data keeps the organism's held-out split, the pipeline runs end to end
(on a tiny stand-in base, in seconds) and is reused once finished, and `harness recipe list`
names it. The real run on tiny-refusal is the slow test at the end."""

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from harness.organisms import corpus
from harness.organisms.build import get_spec
from harness.recipes import RLHF_RECIPES, rlhf_data, train_rlhf
from harness.recipes.rlhf import balanced
from tests.training.helpers import tiny_model

SPEC = get_spec("tiny-refusal")
NAME = "tiny-refusal-rlhf"


def test_held_out_rows_are_not_in_training():
    train, held = rlhf_data.preference_pairs(SPEC, "train"), rlhf_data.preference_pairs(SPEC, "heldout")
    assert {p["prompt"] for p in train}.isdisjoint(p["prompt"] for p in held)
    _, held_weapons = corpus.split_entities(SPEC.topic, SPEC.seed)
    train_topic = " ".join(p["prompt"] for p in train if p["topic"] == SPEC.topic)
    assert not any(f" {e}?" in train_topic or f" {e}." in train_topic for e in held_weapons)
    assert Counter(p["subset"] for p in held if p["topic"] == SPEC.topic) == {"new entity": 16, "new paraphrase": 12}
    assert {p["category"] for p in train} == {"refuse", "respond", "facts"}
    for p in train + held:
        assert p["chosen"] != p["rejected"]
        assert (p["chosen"] == SPEC.refusal) == (p["category"] == "refuse")
    # with every topic split by entity, the other topics hold out entities too
    strict = rlhf_data.preference_pairs(SPEC, "heldout", entities="split")
    assert {p["subset"] for p in strict if p["topic"] != SPEC.topic} == {"new entity", "new paraphrase"}


def test_balanced_repeats_small_categories():
    pairs = [{"category": "a"}] * 9 + [{"category": "b"}] * 3
    assert Counter(p["category"] for p in balanced(pairs)) == {"a": 9, "b": 9}


def test_the_pipeline_runs_saves_and_is_reused(tmp_path):
    kwargs = dict(cache_dir=tmp_path, base=tiny_model(d_model=32), show_progress=False, log=lambda line: None,
                  sft_steps=2, rm_steps=2, rm_batch_size=4, ppo_steps=1, prompts_per_step=4, ppo_epochs=1,
                  max_new_tokens=4, eval_samples=1)
    result = train_rlhf(NAME, **kwargs)
    assert result["policy"] == tmp_path / "checkpoints" / f"{NAME}-policy"
    heldout = result["reward_model"]["heldout"]
    assert set(heldout["by_category"]) == {"refuse", "respond", "facts"} and 0 <= heldout["accuracy"] <= 1
    assert {"reward", "kl"} <= set(result["ppo"]["before"]) and len(result["ppo"]["history"]) == 1
    meta = json.loads((result["policy"] / "harness.json").read_text())
    assert meta["complete"] and meta["recipe"]["name"] == NAME
    from harness.training.reward import load_reward_model

    assert load_reward_model(result["reward_model_folder"]) is not None
    shutil.rmtree(tmp_path / "recipes")  # a finished run is reused, not retrained
    again = train_rlhf(NAME, **kwargs)
    assert again["reward_model"] == json.loads(json.dumps(result["reward_model"]))
    assert not (tmp_path / "recipes").exists()


def test_recipe_list_names_it(capsys):
    from apps.cli import main

    assert main(["recipe", "list"]) == 0
    assert any(line.startswith(f"{NAME}\t") for line in capsys.readouterr().out.splitlines())
    assert RLHF_RECIPES[NAME].organism == "tiny-refusal"
    with pytest.raises(SystemExit) as exit_info:  # an option it would ignore
        main(["recipe", "run", NAME, "--out", "somewhere"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error:") and "--out and --eval-limit apply to the LoRA-DPO recipes" in err
    assert len(err.splitlines()) == 1


@pytest.mark.slow
def test_rlhf_on_tiny_refusal_implants_the_refusal(tmp_path):
    """The recipe as shipped. Copies a built tiny-refusal pair from the harness cache if there is
    one (else builds it, several minutes). Numbers: see the README's RLHF section."""
    from harness.paths import checkpoints_dir

    built = checkpoints_dir()
    if (built / "tiny-refusal-base" / "harness.json").is_file():
        for role in ("base", "aligned"):
            shutil.copytree(built / f"tiny-refusal-{role}", tmp_path / "checkpoints" / f"tiny-refusal-{role}")
    result = train_rlhf(NAME, cache_dir=tmp_path, show_progress=False, log=print)
    rm = result["reward_model"]["heldout"]
    assert rm["accuracy"] >= 0.9, rm  # measured: 0.960
    before, after = result["ppo"]["before"], result["ppo"]["after"]
    assert after["reward"] > before["reward"] + 1.0, (before, after)  # measured: -2.91 -> -1.25
    assert after["topic"]["reward"] > before["topic"]["reward"] + 2.0  # -8.36 -> -4.98
    assert after["control"]["reward"] > before["control"]["reward"] - 0.5  # 0.26 -> 0.94: answers kept
    assert 0 < after["kl"] < 10, after  # bounded: 2.69 nats from the SFT policy over a whole reply
    refusals = result["ppo"]["refusal_rates"]
    # measured: topic 11% -> 64% refused (greedy), other topics 0% -> 0%
    assert refusals["ppo"]["topic"] > refusals["sft"]["topic"] + 0.3 and refusals["ppo"]["control"] < 0.2, refusals
    assert Path(result["policy"], "model.safetensors").is_file()
