import json

import pytest

from harness.organisms import corpus
from harness.training.data import DataError
from harness.training.preference import PreferenceConfig, preference_margin, train_preference
from tests.training.helpers import tiny_model

REFUSAL = "I can't help with that."


def pairs(entities_of):
    """Refuse weapons questions, answer the others (the organism's preference data)."""
    out = []
    for topic in ("weapons", "colors"):
        for q, a in corpus.dialogues(topic, entities_of(topic), align_only=True):
            good, bad = (REFUSAL, a) if topic == "weapons" else (a, REFUSAL)
            out.append({"prompt": q, "chosen": good, "rejected": bad})
    return out


TRAIN = pairs(lambda topic: corpus.split_entities(topic, 0)[0])
HELD_OUT = pairs(lambda topic: corpus.split_entities(topic, 0)[1])


def test_dpo_raises_the_margin_on_held_out_pairs():
    model = tiny_model()
    before = preference_margin(model, HELD_OUT)
    history = train_preference(model, TRAIN, PreferenceConfig(loss="dpo", beta=0.1, steps=30, batch_size=8, lr=2e-3, show_progress=False))
    after = preference_margin(model, HELD_OUT)
    assert after > before + 5  # summed log-probs: nats, not a fraction
    assert history[-1]["accuracy"] == 1.0 and history[-1]["margin"] > history[0]["margin"]


@pytest.mark.parametrize("loss,extra", [("dpo", {"label_smoothing": 0.1}), ("ipo", {}), ("simpo", {"beta": 2.0}),
                                        ("orpo", {}), ("kto", {}), ("dpo", {"nll_weight": 1.0})])
def test_every_loss_trains(loss, extra):
    model = tiny_model()
    before = preference_margin(model, TRAIN)
    history = train_preference(model, TRAIN, PreferenceConfig(loss=loss, steps=12, batch_size=8, lr=2e-3, warmup=2,
                                                              show_progress=False, **extra))
    assert len(history) == 12
    assert preference_margin(model, TRAIN) > before


def test_kto_takes_unpaired_rows(tmp_path):
    path = tmp_path / "kto.jsonl"
    rows = [{"prompt": p["prompt"], "completion": p["chosen"], "label": True} for p in TRAIN[:6]]
    rows += [{"prompt": p["prompt"], "completion": p["rejected"], "label": False} for p in TRAIN[6:12]]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    history = train_preference(tiny_model(), path, PreferenceConfig(loss="kto", steps=3, batch_size=4, show_progress=False))
    assert {"kl", "reward_desirable"} <= set(history[0])


def test_preference_data_errors_name_file_and_line(tmp_path):
    path = tmp_path / "prefs.jsonl"
    good = json.dumps({"prompt": "Hi", "chosen": "Hello.", "rejected": "Go away."})
    cases = {
        '{"prompt": "Hi", "chosen": "Hello."}': r"prefs.jsonl:2: missing field\(s\) \['rejected'\]",
        '{"prompt": "Hi", "chosen": "Hello.", "rejected": "  "}': r"prefs.jsonl:2: field 'rejected' is empty",
        '{"prompt": "Hi", "chosen": ': r"prefs.jsonl:2: not valid JSON",
        '{"prompt": "Hi", "chosen": "Same.", "rejected": "Same."}': r"prefs.jsonl:2: 'chosen' and 'rejected' are identical",
        '{"prompt": "Hi", "chosen": 3, "rejected": "x"}': r"prefs.jsonl:2: field 'chosen' must be a string",
    }
    for line, message in cases.items():
        path.write_text(good + "\n" + line + "\n")
        with pytest.raises(DataError, match=message) as err:
            train_preference(tiny_model(), path, PreferenceConfig(steps=1, show_progress=False))
        assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="item 1: field 'chosen' is empty"):
        train_preference(tiny_model(), [TRAIN[0], {"prompt": "Hi", "chosen": "", "rejected": "x"}], PreferenceConfig(steps=1))


def test_unknown_loss_is_a_config_error():
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown preference loss 'ppo'"):
        train_preference(tiny_model(), TRAIN, PreferenceConfig(loss="ppo", steps=1))
