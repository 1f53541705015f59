"""The small false-fact and backdoor organisms, built once per test session into one temporary
checkpoints folder (both on the tiny-refusal-small base, which is pretrained there once)."""

import torch

from harness.organisms import build_organism

NAMES = ("tiny-false-fact-small", "tiny-backdoor-small")
_BUILT: dict = {}


def built(tmp_path_factory) -> dict:
    """{"out": folder, "log": lines, name: build result} for both organisms."""
    if not _BUILT:
        out = tmp_path_factory.mktemp("kinds") / "checkpoints"
        log: list[str] = []
        # many small steps: one thread is fastest on two loaded cores (see tests/probes/test_adl.py)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            results = {name: build_organism(name, out=out, show_progress=False, log=log.append) for name in NAMES}
        finally:
            torch.set_num_threads(before)
        _BUILT.update(out=out, log=log, **results)
    return _BUILT
