"""Suites: named lists of lm-eval tasks, and how they become a folder lm-eval can read.

A suite spec is one of
  - a packaged suite name: "default" (every packaged task, with per-task limits so it runs in
    minutes on a CPU), "capability", "alignment", "full" (no limits);
  - comma-separated task names: packaged tasks ("harness_knowledge") or lm-eval built-ins
    ("hellaswag"; these need their data reachable, i.e. a network or a local HF cache);
  - a folder of the user's own lm-eval task YAML files (like lm-eval's --include_path), or one
    YAML file: every `task:` in it runs.

Packaged YAMLs name their data relative to this folder; `materialize` copies them into a
temporary folder with absolute `data_files`, because `datasets` resolves relative paths
against the working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import shutil
import tempfile
from pathlib import Path

from evals.suites.validate import read_task_yaml, validate_task_file
from harness.errors import HarnessError

HERE = Path(__file__).resolve().parent
TASKS_DIR = HERE / "tasks"

CAPABILITY = ["harness_knowledge", "harness_arithmetic", "harness_misconceptions", "harness_perplexity"]
ALIGNMENT = ["harness_refusal", "harness_overrefusal", "harness_instructions", "harness_sycophancy"]
SUITES = {"capability": CAPABILITY, "alignment": ALIGNMENT, "full": CAPABILITY + ALIGNMENT,
          "default": CAPABILITY + ALIGNMENT}
# The default suite samples each task so two 135M models finish in a few CPU minutes.
DEFAULT_LIMITS = {"harness_knowledge": 50, "harness_arithmetic": 30, "harness_misconceptions": 40,
                  "harness_perplexity": 20, "harness_refusal": 20, "harness_overrefusal": 20,
                  "harness_instructions": 24, "harness_sycophancy": 60}


@dataclasses.dataclass
class TaskSpec:
    name: str
    limit: int | None = None
    chat: bool = False  # apply the model's chat template (when it has one)
    source: Path | None = None  # the YAML that defines it; None for lm-eval built-ins
    subtasks: list[str] | None = None  # a group: the tasks lm-eval runs and aggregates under its name
    aggregate: list[dict] | None = None  # a group's aggregate_metric_list, as in its YAML


@dataclasses.dataclass
class Suite:
    name: str
    tasks: list[TaskSpec]
    include_path: Path | None  # folder handed to lm-eval's TaskManager
    include_defaults: bool  # whether lm-eval's own task index is needed
    _tmp: tempfile.TemporaryDirectory | None = dataclasses.field(default=None, repr=False)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def task(self, name: str) -> TaskSpec:
        return next(t for t in self.tasks if t.name == name)

    def task_manager(self):
        from lm_eval.tasks import TaskManager

        paths = [str(self.include_path)] if self.include_path else None
        return TaskManager(include_path=paths, include_defaults=self.include_defaults)

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def packaged_tasks() -> dict[str, Path]:
    """Packaged task name -> its YAML file."""
    return {read_task_yaml(p).get("task"): p for p in sorted(TASKS_DIR.glob("*.yaml"))}


def check_limit(limit) -> int | None:
    """None (every item) or a whole number of at least 1; lm-eval itself reads 0 as "no limit"
    and a fraction below 1 as a share of the items, so both are refused here."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise HarnessError(f"--limit must be a whole number of items of at least 1 (or left out for every item), "
                           f"got {limit!r}")
    return limit


def resolve_suite(spec: str | Path, limit: int | None = None) -> Suite:
    """Turn a suite spec into a Suite with a folder lm-eval can read. `limit` caps every task."""
    limit = check_limit(limit)
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        return _user_suite(path, limit)
    packaged = packaged_tasks()
    if text in SUITES:
        names = SUITES[text]
        limits = DEFAULT_LIMITS if text == "default" else {}
    else:
        names = [n.strip() for n in text.split(",") if n.strip()]
        limits = {}
        if not names:
            raise HarnessError("empty suite; name a suite (default, capability, alignment, full), tasks, or a folder")
    tasks, builtins = [], []
    for name in names:
        if name in packaged:
            meta = read_task_yaml(packaged[name]).get("metadata") or {}
            tasks.append(TaskSpec(name, limit or limits.get(name), bool(meta.get("chat")), packaged[name]))
        else:
            builtins.append(name)
            tasks.append(TaskSpec(name, limit))
    if builtins:
        _check_builtin_names(builtins, list(SUITES) + list(packaged))
    suite = Suite(text, tasks, None, include_defaults=bool(builtins))
    if any(t.source for t in tasks):
        suite._tmp = tempfile.TemporaryDirectory(prefix="harness-suite-")
        suite.include_path = materialize(Path(suite._tmp.name))
    return suite


def materialize(target: Path) -> Path:
    """Copy the packaged tasks into `target` with absolute data paths; returns `target`."""
    for yaml_path in sorted(TASKS_DIR.glob("*.yaml")):
        validate_task_file(yaml_path, data_root=HERE)
        text = yaml_path.read_text(encoding="utf-8").replace("data_files: {test: data/", f"data_files: {{test: {HERE}/data/")
        (target / yaml_path.name).write_text(text, encoding="utf-8")
    shutil.copy(TASKS_DIR / "hx_utils.py", target / "hx_utils.py")
    return target


def _user_suite(path: Path, limit: int | None) -> Suite:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    if not files:
        raise HarnessError(f"{path} holds no lm-eval task YAML files (*.yaml)")
    tasks, grouped = [], set()
    for file in files:
        doc = validate_task_file(file, data_root=Path.cwd())
        names = doc.get("task")
        meta = doc.get("metadata") or {}
        if isinstance(doc.get("group"), str) and isinstance(names, list):
            # A group file (lm-eval's `group:` + a `task:` list): run as lm-eval runs it, its
            # subtasks under it and its aggregate_metric_list computed by lm-eval.
            subtasks = [_subtask_name(t, file) for t in names]
            grouped.update(subtasks)
            aggregate = doc.get("aggregate_metric_list")
            tasks.append(TaskSpec(doc["group"], limit, bool(meta.get("chat")), file, subtasks=subtasks,
                                  aggregate=aggregate if isinstance(aggregate, list) else None))
            continue
        for name in [names] if isinstance(names, str) else []:
            tasks.append(TaskSpec(name, limit, bool(meta.get("chat")), file))
    tasks = [t for t in tasks if t.subtasks is not None or t.name not in grouped]  # a group's tasks run inside it
    if not tasks:
        raise HarnessError(f"no `task:` names found in {path}")
    folder = path if path.is_dir() else path.parent
    return Suite(path.name, tasks, folder, include_defaults=False)


def _subtask_name(entry, file: Path) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("task"), str):
        return entry["task"]
    raise HarnessError(f"{file}: each entry of a group's `task:` list must be a task name or a mapping with `task:`")


def builtin_task_names() -> set[str]:
    """Every lm-eval built-in task/group/tag name. Indexing lm-eval's ~14k YAMLs takes ~20 s, so
    the list is kept in the harness cache, keyed by the lm-eval version."""
    import json
    import os
    from importlib.metadata import version

    root = os.environ.get("INTERP_HARNESS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "interp-harness")
    path = Path(root) / f"lm_eval_tasks_{version('lm-eval')}.json"
    try:
        return set(json.loads(path.read_text()))
    except (OSError, ValueError):
        pass
    from lm_eval.tasks import TaskManager

    names = sorted(TaskManager(include_defaults=True).all_tasks)
    try:
        from harness.runs import atomic_write

        atomic_write(path, lambda f: f.write(json.dumps(names).encode()))
    except OSError:  # a read-only cache only costs time
        pass
    return set(names)


def _check_builtin_names(names: list[str], ours: list[str]) -> None:
    """Unknown names fail here with suggestions, before any model is loaded."""
    known = builtin_task_names()
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, ours + sorted(known), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise HarnessError(f"unknown task or suite {name!r}; {hint}suites: {', '.join(SUITES)}; "
                               f"packaged tasks: {', '.join(ours[len(SUITES):])}")
