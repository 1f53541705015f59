"""The one reader of an eval run (the layout evals.runner writes): the report, the runner's
headline metrics and the dashboard's Evaluation page all read through it.

    r = EvalResults.of(run)                       # a harness.runs Run
    r = EvalResults(path, read, manifest)         # the dashboard passes its cached reader
    r.models()                  # labels with results, configured order (the first is the baseline)
    r.scores("base")            # task -> metric label -> value
    r.score_rows("base")        # [{task, metric, value, ci_low, ci_high}] (CI = value +- 1.96 stderr)
    r.comparison(), r.kl(), r.organism_suite(), r.tasks("base"), r.samples("base", task)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from evals.compare import metric_label

SKIPPED_METRICS = ("sample_len",)  # lm-eval bookkeeping, not a score


class EvalResults:
    def __init__(self, path, read: Callable[[str, str], Any], manifest: dict | None = None):
        """`read(rel, "json" | "jsonl")` reads one of the run's files; `manifest` gives the
        models' configured order (read from the run when not given)."""
        self.path, self._read, self._manifest = Path(path), read, manifest

    @classmethod
    def of(cls, run) -> "EvalResults":
        return cls(run.path, lambda rel, how: getattr(run, f"read_{how}")(rel), run.manifest)

    def _optional(self, rel: str, empty):
        return self._read(rel, "json") if (self.path / rel).is_file() else empty

    def models(self) -> list[str]:
        manifest = self._manifest if self._manifest is not None else self._read("manifest.json", "json")
        order = list((manifest.get("config") or {}).get("models") or {})
        found = [p.stem for p in (self.path / "results").glob("*.json")]
        return sorted(found, key=lambda s: (order.index(s) if s in order else len(order), s))

    def results(self, label: str) -> dict:
        """lm-eval's `results` block for one model: task -> {"metric,filter": value}."""
        return self._read(f"results/{label}.json", "json").get("results", {})

    def _metrics(self, label: str):
        for task, values in self.results(label).items():
            for key, value in values.items():
                metric, _, flt = key.partition(",")
                if "stderr" in metric or metric in SKIPPED_METRICS or isinstance(value, bool) \
                        or not isinstance(value, (int, float)):
                    continue
                yield task, metric, flt, value, values.get(f"{metric}_stderr,{flt}")

    def scores(self, label: str) -> dict[str, dict[str, float]]:
        out: dict = {}
        for task, metric, flt, value, _ in self._metrics(label):
            out.setdefault(task, {})[metric_label(metric, flt or None)] = value
        return out

    def score_rows(self, label: str) -> list[dict]:
        rows = []
        for task, metric, _, value, stderr in self._metrics(label):
            half = 1.96 * stderr if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
            rows.append({"task": task, "metric": metric, "value": float(value),
                         "ci_low": value - half if half is not None else None,
                         "ci_high": value + half if half is not None else None})
        return rows

    def comparison(self) -> dict:
        return self._optional("comparison.json", {"rows": []})

    def kl(self) -> dict:
        return self._optional("kl.json", {})

    def organism_suite(self) -> dict | None:
        """The organism's own suite (evals.organism_suite), when the run evaluated an organism."""
        return self._optional("organism_suite.json", None)

    def tasks(self, label: str) -> list[str]:
        return sorted(p.stem for p in (self.path / "samples" / label).glob("*.jsonl"))

    def samples(self, label: str, task: str) -> list[dict]:
        return self._read(f"samples/{label}/{task}.jsonl", "jsonl")
