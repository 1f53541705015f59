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
        '{"prompt": "Hi", "chosen": ': r"prefs.jsonl:2: not JSON Lines: invalid JSON",
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


def test_sequence_logps_scores_only_the_response_tokens_exactly():
    """The response-only unembedding equals summing the full forward's log-probs under the loss mask."""
    import torch

    from harness.training.chat import collate, encode_pair, token_logps
    from harness.training.preference import sequence_logps
    from harness.training.sft import pad_id

    model = tiny_model(seed=3)
    rows = [encode_pair(model.tokenizer, p["prompt"], p[side]) for p in TRAIN[:5] for side in ("chosen", "rejected")]
    batch = collate(rows, pad_id(model.tokenizer))
    with torch.no_grad():
        full = (token_logps(model, batch["tokens"]) * batch["loss_mask"]).sum(-1)
        sums, lengths = sequence_logps(model, rows)
    torch.testing.assert_close(sums, full, atol=1e-5, rtol=1e-5)
    assert lengths.tolist() == batch["loss_mask"].sum(-1).tolist()


def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    """Stopping after 7 of 12 steps and starting again from the saved state lands on exactly the
    weights (and metrics) of a run that was never stopped, LoRA adapters included."""
    import torch

    from harness.training.lora import add_lora

    import harness.training.loop as loop

    original, taken = loop.Trainer.step, []

    def run(steps, state_dir):
        model = add_lora(tiny_model(seed=1), r=4)
        cfg = PreferenceConfig(loss="dpo", steps=12, batch_size=4, lr=2e-3, show_progress=False,
                               state_dir=str(state_dir) if state_dir else None, save_every=1)

        def step(self, loss, **shown):  # a kill between steps: raise before step `steps` + 1
            if self.step_index == steps:
                raise KeyboardInterrupt
            taken.append(self.step_index)
            original(self, loss, **shown)

        loop.Trainer.step = step
        try:
            if steps < 12:
                with pytest.raises(KeyboardInterrupt):
                    train_preference(model, TRAIN, cfg)
                return None, None
            return model, train_preference(model, TRAIN, cfg)
        finally:
            loop.Trainer.step = original

    straight, history = run(12, None)
    run(7, tmp_path / "state")
    taken.clear()
    resumed, resumed_history = run(12, tmp_path / "state")
    assert taken == list(range(7, 12))  # the 7 finished steps were not redone
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name
    assert resumed_history == history and len(history) == 12


def test_a_state_from_other_settings_is_not_resumed(tmp_path):
    from harness.errors import CheckpointError

    cfg = dict(loss="dpo", batch_size=4, show_progress=False, state_dir=str(tmp_path), save_every=1)
    train_preference(tiny_model(), TRAIN[:8], PreferenceConfig(steps=2, **cfg))
    with pytest.raises(CheckpointError, match="different training run"):
        train_preference(tiny_model(), TRAIN[:8], PreferenceConfig(steps=2, lr=1e-2, **cfg))
