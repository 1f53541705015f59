"""A training save is several writes (the tensors, then the JSON naming them, then removing the
previous tensors). A kill between any two of them must resume to the weights of a run that was
never stopped, or be refused: never a silent mix of two steps."""

import json

import pytest
import torch

import harness.training.loop as loop
from harness.errors import CheckpointError
from harness.training.sft import SFTConfig, train_sft
from tests.training.helpers import tiny_model

EXAMPLES = [{"prompt": f"What is {a} plus {b}?", "response": f"{a} plus {b} is {a + b}."} for a in range(4) for b in range(4)]
STEPS = 6


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, and no `except Exception` catches it."""


def cfg(state_dir):
    return SFTConfig(steps=STEPS, batch_size=4, lr=3e-3, show_progress=False, save_every=1,
                     state_dir=str(state_dir) if state_dir else None)


def train(state_dir):
    model = tiny_model(seed=2)
    train_sft(model, EXAMPLES, cfg(state_dir))
    return model


@pytest.fixture(scope="module")
def straight():
    return train(None)


def kill_at_write(monkeypatch, n: int):
    """Make the n-th file operation of the saves (0-based) die before it happens."""
    calls = {"n": 0}
    real_write, real_unlink = loop.atomic_write, loop.Path.unlink

    def counted(real):
        def wrapper(*args, **kwargs):
            if calls["n"] == n:
                raise Killed
            calls["n"] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(loop, "atomic_write", counted(real_write))
    monkeypatch.setattr(loop.Path, "unlink", counted(real_unlink))
    return calls


# Each save is: tensors, JSON, then one removal of the previous tensors (none on the first save).
# Writes 0-1 are save 1; 2-4 save 2; 5-7 save 3: a kill before each of them is one case.
@pytest.mark.parametrize("n", range(8))
def test_a_kill_between_any_two_writes_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch, straight, n):
    state = tmp_path / "state"
    kill_at_write(monkeypatch, n)
    with pytest.raises(Killed):
        train(state)
    monkeypatch.undo()
    resumed = train(state)
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), f"kill before write {n}: {name} differs"
    assert len(list(state.glob("trainer_state*.safetensors"))) == 1  # the leftovers were cleaned up


def test_a_state_whose_tensors_do_not_match_its_json_is_refused(tmp_path):
    state = tmp_path / "state"
    train_sft(tiny_model(seed=2), EXAMPLES, SFTConfig(**{**vars(cfg(state)), "steps": 2}))
    meta = json.loads((state / loop.STATE_JSON).read_text())
    tensors = state / meta["tensors"]
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last tensor
    tensors.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        train_sft(tiny_model(seed=2), EXAMPLES, SFTConfig(**{**vars(cfg(state)), "steps": 2}))


def test_a_state_json_naming_missing_tensors_is_refused(tmp_path):
    state = tmp_path / "state"
    train_sft(tiny_model(seed=2), EXAMPLES, SFTConfig(**{**vars(cfg(state)), "steps": 2}))
    for f in state.glob("trainer_state*.safetensors"):
        f.unlink()
    with pytest.raises(CheckpointError, match="cannot resume"):
        train_sft(tiny_model(seed=2), EXAMPLES, SFTConfig(**{**vars(cfg(state)), "steps": 2}))
