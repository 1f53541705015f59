"""Argument types shared by every command: numbers are checked at the edge, so a bad value is one
usage line before any model loads, never a traceback (or a hang) in the middle of the work.

    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--tokens", type=token_count, required=True)      # 1e6, 2M, 500k
"""

from __future__ import annotations

import argparse
import math

MAX_TOKENS = 10**12  # past this a "token count" is a typo (1e30 would loop for ever)
UNITS = {"k": 10**3, "m": 10**6, "b": 10**9}


def _number(text: str, kind=float) -> float:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """Strictly between 0 and 1 (a held-out or test share)."""
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text!r}")
    return value


def port(text: str) -> int:
    value = _number(text, int)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a port between 1 and 65535, got {text!r}")
    return value


def _token_value(text: str) -> int:
    t = str(text).strip().lower().replace("_", "")
    scale = UNITS.get(t[-1:], 1)
    value = _number(t[:-1] if scale > 1 else t) * scale
    if value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole token count: {text!r}")
    if value > MAX_TOKENS:
        raise argparse.ArgumentTypeError(f"{text!r} tokens is more than {MAX_TOKENS:.0e}; check the number")
    return int(value)


def token_count(text: str) -> int:
    """A positive token count: 1000, 1e6, 2M, 500k."""
    value = _token_value(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 token, got {text!r}")
    return value


def token_count_or_zero(text: str) -> int:
    """A token count where 0 means "none" (e.g. no evaluation tokens)."""
    value = _token_value(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more tokens, got {text!r}")
    return value


# -- options every run-writing command shares (declared here once) ------------------------------

RUNS_HELP = "runs folder (default: $INTERP_HARNESS_RUNS or ./runs)"


def add_runs(parser, help: str = RUNS_HELP) -> None:
    parser.add_argument("--runs", metavar="DIR", help=help)


def add_run_name(parser, help: str = "run name (default: kind and time)", **kwargs) -> None:
    parser.add_argument("--name", help=help, **kwargs)


def command_line() -> str:
    """The command as typed, recorded in each run's manifest."""
    import shlex
    import sys

    return " ".join(["harness"] + [shlex.quote(a) for a in sys.argv[1:]])


def out_folder(out: str, runs: str | None):
    """`--out`: a bare name is a run in the runs folder (it cannot leave it); anything with a
    separator is a folder path the user chose."""
    import os
    from pathlib import Path

    if os.sep in out or "/" in out or out.startswith("."):
        return Path(out).expanduser()
    from harness.runs import RunStore

    return RunStore(runs).path_of(out)
