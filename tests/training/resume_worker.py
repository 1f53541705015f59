"""A training run in its own process, for the kill -9 tests (tests/training/test_resume_kill.py).

    python -m tests.training.resume_worker reward|ppo STATE_DIR OUT.safetensors [SLEEP_S]

Trains a tiny reward model or a PPO policy with its state saved after every step in STATE_DIR,
resuming from it if it holds one, and writes the final trainable weights to OUT. SLEEP_S
slows each optimizer step, so the test can kill the process in the middle of training.
"""

import json
import sys
import time

import torch

torch.set_num_threads(1)  # every process of a test computes alike

import harness.training.loop as loop  # noqa: E402
from harness.training.ppo import PPOConfig, train_ppo  # noqa: E402
from harness.training.reward import RewardModel  # noqa: E402
from harness.training.reward_train import RewardConfig, train_reward_model  # noqa: E402
from tests.training.helpers import tiny_model  # noqa: E402

PAIRS = [{"prompt": f"What is {a} plus {b}?", "chosen": f"{a} plus {b} is {a + b}.",
          "rejected": f"{a} plus {b} is {a + b + 1}."} for a in range(4) for b in range(4)]
REWARD_STEPS, PPO_STEPS = 8, 4


def reward_model() -> RewardModel:
    return RewardModel.from_lm(tiny_model(seed=1), seed=1)


def run(kind: str, state_dir: str | None) -> dict:
    """Trains and returns {name: tensor} of what was trained (also imported by the test)."""
    if kind == "reward":
        rm = reward_model()
        train_reward_model(rm, PAIRS, RewardConfig(steps=REWARD_STEPS, batch_size=4, show_progress=False,
                                                   save_every=1, state_dir=state_dir))
        return dict(rm.named_parameters())
    rm = reward_model().eval()
    policy = tiny_model(seed=2)
    history = train_ppo(policy, rm, [p["prompt"] for p in PAIRS],
                        PPOConfig(steps=PPO_STEPS, prompts_per_step=4, max_new_tokens=6, ppo_epochs=2, minibatches=2,
                                  show_progress=False, save_every=1, state_dir=state_dir))
    return {**dict(policy.named_parameters()), "history": torch.tensor([h["score"] for h in history])}


if __name__ == "__main__":
    from safetensors.torch import save_file

    kind, state_dir, out = sys.argv[1:4]
    pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    if pause:
        step = loop.Trainer.step

        def slow(self, *args, **kwargs):
            step(self, *args, **kwargs)
            time.sleep(pause)

        loop.Trainer.step = slow
    weights = run(kind, state_dir)
    save_file({k: v.detach().contiguous() for k, v in weights.items()}, out)
    print(json.dumps({"done": kind}))
