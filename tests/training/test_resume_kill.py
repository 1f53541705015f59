"""kill -9 of a real training process, then a restart, ends with the weights of a run that was
never stopped: reward-model training and PPO. The killed run is a process of its own
(tests/training/resume_worker.py); the uninterrupted run and the restart run here, on one
thread like the worker."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import harness.training.loop as loop
from tests.training import resume_worker

ROOT = Path(__file__).resolve().parents[2]
TOTAL = {"reward": resume_worker.REWARD_STEPS, "ppo": resume_worker.PPO_STEPS * 2 * 2}  # optimizer steps


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def saved_step(state):
    try:
        return json.loads((state / loop.STATE_JSON).read_text())["step"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.parametrize("kind", ["reward", "ppo"])
def test_kill_9_then_restart_gives_the_uninterrupted_weights(tmp_path, kind, one_thread):
    state, out = tmp_path / "state", tmp_path / "never-written.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.training.resume_worker", kind, str(state), str(out), "0.3"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        straight = {k: v.detach().clone() for k, v in resume_worker.run(kind, None).items()}
        deadline = time.monotonic() + 240
        while (saved_step(state) or 0) < 2:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "training never saved a state"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stopped_at = saved_step(state)
    assert 2 <= stopped_at < TOTAL[kind] and not out.exists(), stopped_at  # killed mid-run, after a save
    resumed = resume_worker.run(kind, str(state))
    assert straight.keys() == resumed.keys()
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), f"{kind}: {name} differs after a restart from step {stopped_at}"
