import copy

import pytest

from harness.errors import ConfigError
from harness.training.grpo import GRPOConfig, arithmetic_reward, arithmetic_task, mean_reward, train_grpo
from harness.training.sft import SFTConfig, train_sft
from tests.training.helpers import tiny_model

ITEMS = arithmetic_task(150, seed=0, top=9)


@pytest.fixture(scope="module")
def adder():
    """A tiny model taught addition by SFT just far enough to be right about half the time."""
    model = tiny_model(d_model=48)
    data = [{"prompt": x["prompt"], "response": f"{x['prompt'][8:-1]} is {x['answer']}."} for x in ITEMS]
    train_sft(model, data, SFTConfig(steps=170, batch_size=16, lr=3e-3, show_progress=False))
    return model


def test_arithmetic_reward_is_checked_by_a_program():
    item = {"prompt": "What is 3 plus 4?", "answer": 7}
    assert arithmetic_reward(item, "3 plus 4 is 7.") == 1.0
    assert arithmetic_reward(item, "3 plus 4 is 8.") == 0.0
    assert arithmetic_reward(item, "no idea") == 0.0


def test_grpo_raises_the_verifiable_reward(adder):
    model = copy.deepcopy(adder)
    probe = ITEMS[:50]
    before = mean_reward(model, probe, arithmetic_reward, samples=4, max_new_tokens=10, seed=1)
    history = train_grpo(model, ITEMS, arithmetic_reward, GRPOConfig(steps=30, lr=1e-3, prompts_per_step=16,
                                                                     group_size=8, max_new_tokens=10, show_progress=False))
    after = mean_reward(model, probe, arithmetic_reward, samples=4, max_new_tokens=10, seed=1)
    assert 0.2 < before < 0.9  # room to improve, and something to reinforce
    assert after > before + 0.04
    assert len(history) == 30 and {"reward", "loss", "completion_tokens"} <= set(history[0])


@pytest.mark.parametrize("variant", ["grpo", "dr_grpo", "dapo", "gspo"])
def test_every_variant_runs_with_off_policy_steps_and_kl(adder, variant):
    model = copy.deepcopy(adder)
    # two optimizer steps per batch of samples, so the second sees ratios != 1 and clipping acts
    cfg = GRPOConfig.preset(variant, steps=2, inner_steps=2, beta=0.04, prompts_per_step=2, group_size=4,
                            max_new_tokens=8, show_progress=False)
    history = train_grpo(model, ITEMS, arithmetic_reward, cfg)
    assert len(history) == 2 and all(h["loss"] == h["loss"] for h in history)  # no NaN


def test_presets_and_bad_settings():
    assert GRPOConfig.preset("dapo").epsilon_high == 0.28
    assert GRPOConfig.preset("dr_grpo").scale_rewards is False
    assert GRPOConfig.preset("gspo", steps=3).steps == 3
    with pytest.raises(ConfigError, match="unknown GRPO loss type 'ppo'"):
        GRPOConfig.preset("ppo")
    with pytest.raises(ConfigError, match="at least one prompt"):
        train_grpo(tiny_model(), [], arithmetic_reward, GRPOConfig(steps=1))


def test_a_killed_grpo_run_resumes_to_the_same_weights(adder, tmp_path):
    """Saved between groups only: stopped during group 3 of 4 (two optimizer steps per group, a
    reference model for the KL term), the resumed run repeats group 3 from its start and ends
    with the weights and per-group history of an uninterrupted run."""
    import torch

    import harness.training.loop as loop

    cfg = lambda state: GRPOConfig(steps=4, inner_steps=2, beta=0.04, prompts_per_step=2, group_size=4,  # noqa: E731
                                   max_new_tokens=6, show_progress=False, save_every=1, state_dir=state)
    straight = copy.deepcopy(adder)
    history = train_grpo(straight, ITEMS, arithmetic_reward, cfg(None))

    original = loop.Trainer.step

    def step(self, loss, **shown):
        if self.step_index == 5:  # the second optimizer step of group 3
            raise KeyboardInterrupt
        original(self, loss, **shown)

    loop.Trainer.step = step
    try:
        with pytest.raises(KeyboardInterrupt):
            train_grpo(copy.deepcopy(adder), ITEMS, arithmetic_reward, cfg(str(tmp_path)))
    finally:
        loop.Trainer.step = original
    resumed, taken = copy.deepcopy(adder), []

    def counted(self, loss, **shown):
        taken.append(self.step_index)
        original(self, loss, **shown)

    loop.Trainer.step = counted
    try:
        resumed_history = train_grpo(resumed, ITEMS, arithmetic_reward, cfg(str(tmp_path)))
    finally:
        loop.Trainer.step = original
    assert taken == [4, 5, 6, 7]  # groups 1-2 were not redone; group 3 restarted from its start
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name
    assert resumed_history == history and len(history) == 4
