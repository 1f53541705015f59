"""Reading an eval run (evals.runner's layout) into plain tables for the Evaluation page."""

from __future__ import annotations

from pathlib import Path

from apps.dashboard import data
from evals.results import EvalResults


def results(path: Path, manifest: dict | None = None) -> EvalResults:
    """The run through evals.results (the one reader of the layout), with the cached loaders."""
    return EvalResults(path, lambda rel, how: getattr(data, f"read_{how}")(path, rel), manifest)


def models(path: Path, manifest: dict) -> list[str]:
    return results(path, manifest).models()


def scores(path: Path, label: str) -> list[dict]:
    return results(path).score_rows(label)


def comparison(path: Path) -> dict:
    return results(path).comparison()


def organism_suite(path: Path) -> dict | None:
    return results(path).organism_suite()


def kl(path: Path) -> dict:
    return results(path).kl()


def tasks(path: Path, label: str) -> list[str]:
    return results(path).tasks(label)


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
    by_id = {it["doc_id"]: it for it in results(path).samples(other, task)}
    rows = []
    for b in results(path).samples(base, task):
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
