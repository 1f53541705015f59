"""The small false-fact and backdoor organisms, built once per test session into one temporary
checkpoints folder (both on the tiny-refusal-small base, which is pretrained there once)."""

from contextlib import contextmanager

import torch

from harness.organisms import build_organism

NAMES = ("tiny-false-fact-small", "tiny-backdoor-small")
_BUILT: dict = {}


@contextmanager
def one_thread():
    """Many small matmuls: one torch thread is several times faster than two on two loaded
    cores (the diff stage of two small organisms: 5 s against 46 s at a load of 7)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def built(tmp_path_factory) -> dict:
    """{"out": folder, "log": lines, name: build result} for both organisms."""
    if not _BUILT:
        out = tmp_path_factory.mktemp("kinds") / "checkpoints"
        log: list[str] = []
        with one_thread():
            results = {name: build_organism(name, out=out, show_progress=False, log=log.append) for name in NAMES}
        _BUILT.update(out=out, log=log, **results)
    return _BUILT
