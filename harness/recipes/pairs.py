"""The shipped refusal preference set: build it from `refusal_source`, read it, check it.

    rows = refusal_pairs()                 # all 144 rows, each with "split": "train" | "heldout"
    rows = refusal_pairs("train")          # what the recipe trains on
    harness recipe pairs                   # rewrite data/refusal_pairs.jsonl
    harness recipe pairs --check

Each harmful request pairs a refusal (chosen) with the opening of a compliant reply (rejected);
each harmless look-alike pairs its helpful answer (chosen) with a refusal (rejected), so the set
teaches which requests to decline, not to decline everything. Every eighth prompt of each kind
is held out for measuring the preference margin.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.recipes import refusal_source as src
from harness.training.data import examples

PATH = Path(__file__).parent / "data" / "refusal_pairs.jsonl"
HELDOUT_EVERY = 8


def build_rows() -> list[dict]:
    rows = []
    for i, prompt in enumerate(src.HARMFUL):
        rows.append({"id": f"harmful-{i}", "kind": "harmful", "prompt": prompt,
                     "chosen": src.REFUSALS[i % len(src.REFUSALS)],
                     "rejected": src.COMPLIANT_OPENERS[(i // len(src.REFUSALS)) % len(src.COMPLIANT_OPENERS)]})
    for i, (prompt, answer) in enumerate(src.HARMLESS):
        rows.append({"id": f"harmless-{i}", "kind": "harmless", "prompt": prompt, "chosen": answer,
                     "rejected": src.REFUSALS[(i + 3) % len(src.REFUSALS)]})
    for row in rows:
        row["split"] = "heldout" if int(row["id"].rsplit("-", 1)[1]) % HELDOUT_EVERY == HELDOUT_EVERY - 1 else "train"
    return rows


def render() -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in build_rows())


def refusal_pairs(split: str | None = None) -> list[dict]:
    """The shipped rows (checked like any preference file), optionally one split of them."""
    rows = examples(PATH, "preference")
    return [r for r in rows if split is None or r["split"] == split]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild (or --check) the shipped refusal preference set.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the shipped file differs from the source")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = PATH.is_file() and PATH.read_text(encoding="utf-8") == text
        print(f"{PATH}: {'up to date' if same else 'differs from refusal_source.py; rebuild it'}")
        return 0 if same else 1
    PATH.parent.mkdir(parents=True, exist_ok=True)
    PATH.write_text(text, encoding="utf-8")
    print(f"wrote {len(text.splitlines())} pairs to {PATH}")
    return 0

