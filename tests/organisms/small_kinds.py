"""The small false-fact and backdoor organisms, built once per test session into one temporary
checkpoints folder (both on the tiny-refusal-small base, which is pretrained there once)."""

from harness.organisms import build_organism
from harness.threads import torch_threads

NAMES = ("tiny-false-fact-small", "tiny-backdoor-small")
_BUILT: dict = {}


def one_thread():
    # One torch thread: the diff stage of two small organisms took 5 s against 46 s on two at a load of 7.
    return torch_threads(1)


def built(tmp_path_factory) -> dict:
    """{"out": folder, "log": lines, name: build result} for both organisms."""
    if not _BUILT:
        out = tmp_path_factory.mktemp("kinds") / "checkpoints"
        log: list[str] = []
        with one_thread():
            results = {name: build_organism(name, out=out, show_progress=False, log=log.append) for name in NAMES}
        _BUILT.update(out=out, log=log, **results)
    return _BUILT
