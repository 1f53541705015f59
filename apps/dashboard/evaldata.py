"""Reading an eval run (evals.runner's layout) into plain tables for the Evaluation page."""

from __future__ import annotations

import math
from pathlib import Path

from apps.dashboard import data


def models(path: Path, manifest: dict) -> list[str]:
    """Model labels with results, in the configured order (the first is the baseline)."""
    order = list((manifest.get("config") or {}).get("models") or {})
    found = [p.stem for p in (Path(path) / "results").glob("*.json")]
    return sorted(found, key=lambda s: (order.index(s) if s in order else len(order), s))


def scores(path: Path, label: str) -> list[dict]:
    """[{task, metric, value, ci_low, ci_high}] from lm-eval's results (CI = value +- 1.96 stderr)."""
    results = data.read_json(path, f"results/{label}.json").get("results", {})
    rows = []
    for task, values in results.items():
        for key, value in values.items():
            metric, _, flt = key.partition(",")
            if "stderr" in metric or metric in ("sample_len",) or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            stderr = values.get(f"{metric}_stderr,{flt}")
            half = 1.96 * stderr if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
            rows.append({"task": task, "metric": metric, "value": float(value),
                         "ci_low": value - half if half is not None else None,
                         "ci_high": value + half if half is not None else None})
    return rows


def comparison(path: Path) -> dict:
    return data.read_json(path, "comparison.json") if data.has(path, "comparison.json") else {"rows": []}


def organism_suite(path: Path) -> dict | None:
    """The organism's own suite (evals.organism_suite) when the run evaluated a model organism."""
    return data.read_json(path, "organism_suite.json") if data.has(path, "organism_suite.json") else None


def kl(path: Path) -> dict:
    return data.read_json(path, "kl.json") if data.has(path, "kl.json") else {}


def tasks(path: Path, label: str) -> list[str]:
    return sorted(p.stem for p in (Path(path) / "samples" / label).glob("*.jsonl"))


def answer(item: dict) -> str:
    """What the model answered: the highest-likelihood choice, or the generated text."""
    outputs = item.get("outputs") or []
    inputs = item.get("inputs") or []
    scored = [o for o in outputs if isinstance(o, (list, tuple)) and o and isinstance(o[0], (int, float))]
    if scored and len(scored) == len(outputs):
        best = max(range(len(scored)), key=lambda i: scored[i][0])
        if best < len(inputs) and isinstance(inputs[best], (list, tuple)) and len(inputs[best]) > 1:
            return str(inputs[best][1]).strip()
        return f"choice {best}"
    if outputs and isinstance(outputs[0], str):
        return outputs[0]
    return str(outputs)


def prompt(item: dict) -> str:
    inputs = item.get("inputs") or []
    first = inputs[0] if inputs else ""
    return str(first[0] if isinstance(first, (list, tuple)) and first else first)


def target(item: dict) -> str:
    """The expected answer; a choice index is shown with its text."""
    t, inputs = item.get("target"), item.get("inputs") or []
    if isinstance(t, int) and 0 <= t < len(inputs) and isinstance(inputs[t], (list, tuple)) and len(inputs[t]) > 1:
        return f"{str(inputs[t][1]).strip()} (choice {t})"
    return str(t)


def _metric_value(item: dict, metric: str):
    value = (item.get("metrics") or {}).get(metric)
    if isinstance(value, (list, tuple)) and len(value) == 3:  # paired metric: (pair_id, variant, correct)
        return value[2]
    return value


def changed_items(path: Path, task: str, base: str, other: str, metric: str) -> list[dict]:
    """Items whose metric value or answer differs between the two models, side by side."""
    by_id = {it["doc_id"]: it for it in data.read_jsonl(path, f"samples/{other}/{task}.jsonl")}
    rows = []
    for b in data.read_jsonl(path, f"samples/{base}/{task}.jsonl"):
        o = by_id.get(b["doc_id"])
        if o is None:
            continue
        vb, vo = _metric_value(b, metric), _metric_value(o, metric)
        ab, ao = answer(b), answer(o)
        if vb != vo or ab != ao:
            rows.append({"doc_id": b["doc_id"], "prompt": prompt(b), "target": target(b),
                         f"{base} answer": ab, f"{other} answer": ao,
                         f"{base} {metric}": vb, f"{other} {metric}": vo})
    return rows
