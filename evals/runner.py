"""`run_eval`: evaluate several models on a suite and write one run folder.

Run folder layout (all written atomically through harness.runs):
  tasks/<model>/<task>.json      lm-eval's results for one model x task (+ config, n-samples, ...)
  samples/<model>/<task>.jsonl   every item: doc, inputs sent to the model, outputs, metric values
  results/<model>.json           the model's results merged in lm-eval's results JSON layout
  comparison.json                paired differences vs the first model, bootstrap CIs, p-values
  kl.json, kl.jsonl              next-token KL on the suite prompts (pairs sharing a tokenizer)
  report.html                    plotly report
Resuming: a model x task whose tasks/ and samples/ files exist is skipped; a task cut short
reuses its finished requests from cache/<model>.requests.jsonl (evals.request_cache: JSON rows
keyed by a SHA-256 of the request; removed when the run completes). Re-running with the same
--name continues an unfinished run. Nothing in a run folder is ever unpickled: lm-eval's own
request cache (a sqlitedict of pickles) is turned off, and its files from older runs are ignored.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from evals.request_cache import RequestCache, RunFolderError
from evals.suites import Suite, TaskSpec, check_limit, resolve_suite
from harness.errors import HarnessError, RunError
from harness.runs import Run, RunStore, check_name

AS_SHIPPED = "as-shipped"  # chat_template value: prompt each model with its tokenizer's own template, if any
RESULT_KEYS = ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "groups", "group_subtasks")
OFFLINE_HINTS = ("offline", "connection", "couldn't reach", "could not reach", "datasetnotfound",
                 "hub", "network", "resolve", "not found on the hugging face")


def run_eval(
    models: dict[str, Any],
    suite: str | Path | Suite = "default",
    run: Run | None = None,
    *,
    runs_dir: str | Path | None = None,
    name: str | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    kl: bool = True,
    kl_prompts: int = 48,
    command: str | list | None = None,
    console=None,
    chat_template: str | None = None,
) -> Run:
    """Evaluate `models` (label -> HookedLM or anything harness.load accepts) on `suite`.

    The first model is the baseline every other model is compared with. Returns the Run. Raises
    HarnessError after writing everything it could when a model or task failed.

    Chat tasks compare models fairly only when every model is prompted in the same format. By
    default a model whose tokenizer has no chat template borrows the others' template when they
    share one and its vocabulary (a base checkpoint against its chat-tuned descendant); the run's
    manifest says so. `chat_template` instead names a template (harness.recipes.chat_templates)
    for every tokenizer that has none, and "as-shipped" leaves tokenizers alone (the run warns
    when they differ).
    """
    if not models:
        raise HarnessError("no models to evaluate; pass at least one")
    for label in models:
        check_name(label, "model label")
    check_limit(limit)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise HarnessError(f"--batch-size must be a whole number of at least 1, got {batch_size!r}")
    if not isinstance(kl_prompts, int) or kl_prompts < 1:
        raise HarnessError(f"kl_prompts must be a whole number of at least 1, got {kl_prompts!r}")
    named_template = None  # the template to give tokenizers that lack one, if one was named
    if chat_template not in (None, AS_SHIPPED):
        from harness.recipes.chat_templates import check_template_name

        named_template = check_template_name(chat_template)
    suite_obj = suite if isinstance(suite, Suite) else resolve_suite(suite, limit=limit)
    config = {"suite": suite_obj.name, "tasks": [vars(t) | {"source": str(t.source or "")} for t in suite_obj.tasks],
              "models": {k: _describe(v) for k, v in models.items()}, "limit": limit,
              "batch_size": batch_size, "device": device, "kl": kl, "chat_template": chat_template}
    run = run or open_run(runs_dir, name, config, command)
    loaded: dict[str, Any] = {}
    failures: list[str] = []
    try:
        task_manager = suite_obj.task_manager()
        if chat_template is None and any(t.chat for t in suite_obj.tasks) and len(models) > 1:
            _share_chat_template(run, models, loaded, device, console)
        for label, source in models.items():
            _evaluate_model(run, label, source, suite_obj, task_manager, loaded, failures, batch_size, device, console,
                            named_template)
        labels = [m for m in models if _has_any_results(run, m, suite_obj)]
        _warn_mixed_templates(run, loaded, suite_obj, console)
        for label in labels:
            _merge_results(run, label, suite_obj)
        if len(labels) >= 2:
            _write_comparison(run, labels, suite_obj)
            if kl:
                _write_kl(run, labels, models, loaded, suite_obj, kl_prompts, device, failures)
        from evals.report import write_report

        write_report(run)
        if console is not False and labels:
            from evals.report import print_summary

            print_summary(run, console)
    except OSError as err:  # the run folder stopped being writable (permissions, disk full, ...)
        message = _write_failure(run, err)
        run.end_quietly("failed", message)
        raise RunFolderError(message) from None
    except RunFolderError as err:
        run.end_quietly("failed", str(err))
        raise
    except BaseException as err:  # keep what was written; the manifest says how the run ended
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        run.end_quietly(status, f"{type(err).__name__}: {err}".splitlines()[0])
        raise
    finally:
        suite_obj.cleanup()
    if failures:
        run.end_quietly("failed", "; ".join(failures))
        raise HarnessError(f"{failures[0]}" + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else "")
                           + f"; finished results are kept in {run.path}")
    shutil.rmtree(run.path / "cache", ignore_errors=True)
    run.finish("complete", metrics=_headline(run))
    return run


def _write_failure(run: Run, err: OSError) -> str:
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    return f"cannot write the run folder {run.path}{where}: {err.strerror or type(err).__name__}"


def open_run(runs_dir, name: str | None, config: dict, command) -> Run:
    """A new eval run, or the unfinished run called `name` (resume)."""
    store = RunStore(runs_dir)
    if name is not None and store.path_of(name).is_dir():  # a name only: it cannot leave the runs folder
        previous = store.open(name).manifest
        suite = (previous.get("config") or {}).get("suite")
        if previous.get("kind") == "eval" and suite != config["suite"]:
            raise RunError(f"run {name!r} evaluated suite {suite!r}, not {config['suite']!r}; pick another --name")
        return store.resume(name, "eval")
    return store.create("eval", name=name, command=command, config=config)


def _describe(source) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    identity = getattr(source, "identity", None) or {}
    return str(identity.get("name") or type(source).__name__)


# -- one model ----------------------------------------------------------------------------------
def _evaluate_model(run, label, source, suite, task_manager, loaded, failures, batch_size, device, console,
                    chat_template=None):
    todo = [t for t in suite.tasks if not _task_done(run, label, t.name)]
    if not todo:
        _say(console, f"{label}: all {len(suite.tasks)} tasks already done, skipping")
        return
    try:
        model = loaded.get(label) or _load(label, source, device)
    except HarnessError as err:
        failures.append(str(err))
        _say(console, f"[red]{err}[/]")
        return
    if chat_template is not None and model.tokenizer is not None:
        from harness.recipes.chat_templates import ensure_chat_template

        ensure_chat_template(model.tokenizer, chat_template)
    loaded[label] = model
    if label not in run.manifest.get("models", {}):
        run.add_model(label, _identity(model, source))
    from evals.lm_adapter import HookedLMEval

    _note_foreign_cache(run, label, console)
    cache = RequestCache(run.path / "cache" / f"{label}.requests.jsonl")
    lm = HookedLMEval(model, batch_size=batch_size, request_cache=cache)
    if len(cache):
        _say(console, f"{label}: {len(cache)} finished requests from the interrupted run are reused")
    try:
        for task in todo:
            start = time.perf_counter()
            try:
                result = _run_task(lm, model, task, task_manager)
            except RunFolderError:
                raise
            except HarnessError as err:
                failures.append(f"{label}/{task.name}: {err}")
                _say(console, f"[red]{label}/{task.name}: {err}[/]")
                continue
            _write_task(run, label, task, result, chat=_use_chat(model, task))
            run.record_timing(f"eval/{label}/{task.name}", time.perf_counter() - start)
            _say(console, f"{label}/{task.name}: done in {time.perf_counter() - start:.1f}s")
    finally:
        try:
            cache.close()
        except RunFolderError:
            pass  # the error that stopped the run is the one to report


def _note_foreign_cache(run: Run, label: str, console) -> None:
    """Runs written before this cache (or by lm-eval itself) hold a pickled sqlitedict in cache/;
    it is never opened. Say so once, so a user knows why nothing was reused."""
    old = sorted(p.name for p in (run.path / "cache").glob(f"{label}_rank*.db*")) if (run.path / "cache").is_dir() else []
    if not old:
        return
    note = (f"{label}: ignored lm-eval's request cache {', '.join(old)} (pickled data is never read from a run "
            "folder); its requests are recomputed")
    if run.add_note(note):
        _say(console, f"note: {note}")


def _share_chat_template(run: Run, models: dict, loaded: dict, device: str, console) -> None:
    """Give a template-less tokenizer the one chat template the other models use, if it has their
    vocabulary (so the template's turn markers mean the same tokens). Records what it did."""
    for label, source in models.items():
        if label not in loaded:
            try:
                loaded[label] = _load(label, source, device)
            except HarnessError:
                continue  # reported when the model's tasks run
    tokenizers = {label: m.tokenizer for label, m in loaded.items() if m.tokenizer is not None}
    templates = {label: getattr(t, "chat_template", None) for label, t in tokenizers.items()}
    given = {label: t for label, t in templates.items() if isinstance(t, str) and t}
    if not given or len(set(given.values())) > 1 or len(given) == len(templates):
        return
    donor = next(iter(given))
    template, vocab = given[donor], tokenizers[donor].get_vocab()
    for label, tokenizer in tokenizers.items():
        if templates[label] or tokenizer.get_vocab() != vocab:
            continue
        tokenizer.chat_template = template
        note = (f"{label} has no chat template; it was given {donor}'s (same vocabulary), so chat tasks prompt "
                f"every model alike (--chat-template as-shipped to turn this off)")
        run.add_note(note)  # once: a resumed run has said it already
        _say(console, f"note: {note}")


def _warn_mixed_templates(run: Run, loaded: dict, suite: Suite, console) -> None:
    """Chat tasks compare models fairly only if all of them, or none, are prompted through a chat
    template; say so (and record it) when that is still not the case (no template could be shared,
    or "as-shipped" was asked for)."""
    if not any(t.chat for t in suite.tasks) or len(loaded) < 2:
        return
    has = {label: bool(getattr(m.tokenizer, "chat_template", None)) for label, m in loaded.items()}
    if len(set(has.values())) > 1:
        without = ", ".join(label for label, yes in has.items() if not yes)
        warning = (f"{without} has no chat template while the others do, so chat tasks prompt them differently; "
                   "pass --chat-template (e.g. gemma-turns) to prompt every model alike")
        run.add_warning(warning)
        _say(console, f"[yellow]warning: {warning}[/]")


def _load(label: str, source, device: str):
    if hasattr(source, "cfg") and hasattr(source, "tokenizer"):
        return source
    import harness

    try:
        return harness.load(source, device=device)
    except HarnessError as err:
        raise HarnessError(f"model {label!r} failed to load: {err}") from None
    except Exception as err:  # any loader failure is reported as bad input, never a traceback
        first = (str(err).splitlines() or [""])[0]
        raise HarnessError(f"model {label!r} failed to load from {source!r}: {type(err).__name__}: {first}") from None


def _identity(model, source) -> dict:
    from harness.identity import model_identity

    return model_identity(model, source if isinstance(source, (str, Path)) else None)


def _use_chat(model, task: TaskSpec) -> bool:
    return task.chat and bool(getattr(model.tokenizer, "chat_template", None))


def _run_task(lm, model, task: TaskSpec, task_manager) -> dict:
    from lm_eval import simple_evaluate

    chat = _use_chat(model, task)
    try:
        # use_cache stays None: lm-eval's cache unpickles; lm carries our JSON request cache.
        out = simple_evaluate(model=lm, tasks=[task.name], task_manager=task_manager, limit=task.limit,
                              log_samples=True, apply_chat_template=chat, bootstrap_iters=1000,
                              use_cache=None, verbosity="ERROR")
    except HarnessError:
        raise
    except Exception as err:
        first = (str(err).splitlines() or [""])[0][:300]
        hint = ""
        if any(h in f"{type(err).__name__} {first}".lower() for h in OFFLINE_HINTS):
            hint = "; its data is not reachable (lm-eval built-in tasks need a network or a local HF datasets cache)"
        raise HarnessError(f"task {task.name!r} failed: {type(err).__name__}: {first}{hint}") from None
    if out is None or not (task.name in out.get("results", {}) or (task.subtasks and out.get("samples"))):
        raise HarnessError(f"task {task.name!r} produced no results (is it a group? list its subtasks instead)")
    return out


SAMPLE_FIELDS = ("doc_id", "doc", "target", "filter", "arguments", "resps", "filtered_resps", "doc_hash", "prompt_hash",
                 "target_hash")


def sample_item(s: dict) -> dict:
    """One row of samples/<model>/<task>.jsonl: lm-eval's own sample fields (a task with several
    filters has one row per doc and filter), the per-item metric values under `metrics`, and
    `inputs`/`outputs`/`raw_outputs`, the names older readers use for arguments/filtered_resps/resps."""
    metric_names = s.get("metrics") or []
    item = {key: s.get(key) for key in SAMPLE_FIELDS}
    item["filter"] = s.get("filter") or "none"
    item["metrics"] = {m: s[m] for m in metric_names if m in s}
    item.update(inputs=s.get("arguments"), outputs=s.get("filtered_resps"), raw_outputs=s.get("resps"))
    return item


def _write_task(run: Run, label: str, task: TaskSpec, out: dict, chat: bool) -> None:
    name = task.name
    # A group's samples are its subtasks' rows, each naming its task; its summary holds the group's
    # aggregate (lm-eval's "groups") and every subtask's results.
    names = [name] if task.subtasks is None else [t for t in out["samples"] if t in _members(out, name)]
    items = [{"task": t, **sample_item(s)} for t in names for s in out["samples"][t]]
    keep = {name, *names}
    summary = {key: {n: v for n, v in out[key].items() if n in keep} for key in RESULT_KEYS
               if isinstance(out.get(key), dict) and keep & set(out[key])}
    summary.update(chat_template_applied=chat, limit=task.limit)
    # samples first: a task counts as done only once its summary exists.
    run.write_jsonl(f"samples/{label}/{name}.jsonl", items)
    run.write_json(f"tasks/{label}/{name}.json", summary)


def _members(out: dict, group: str) -> set[str]:
    """Every task under `group` in lm-eval's group_subtasks (groups may nest)."""
    tree, seen, todo = out.get("group_subtasks") or {}, set(), [group]
    while todo:
        for sub in tree.get(todo.pop(), []):
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    return seen


def _task_done(run: Run, label: str, task: str) -> bool:
    return (run.path / f"tasks/{label}/{task}.json").is_file() and (run.path / f"samples/{label}/{task}.jsonl").is_file()


def _has_any_results(run: Run, label: str, suite: Suite) -> bool:
    return any(_task_done(run, label, t.name) for t in suite.tasks)


def _merge_results(run: Run, label: str, suite: Suite) -> None:
    merged: dict = {key: {} for key in RESULT_KEYS}
    for task in suite.tasks:
        if _task_done(run, label, task.name):
            part = run.read_json(f"tasks/{label}/{task.name}.json")
            for key in RESULT_KEYS:
                merged[key].update(part.get(key, {}))
    merged["config"] = {"model": "harness", "model_name": label, **run.manifest.get("models", {}).get(label, {})}
    run.write_json(f"results/{label}.json", merged)


# -- comparison and KL --------------------------------------------------------------------------
def load_items(run: Run, label: str, task: str) -> list[dict]:
    return run.read_jsonl(f"samples/{label}/{task}.jsonl")


def _compared_sets(task: TaskSpec, base_items: list[dict], other_items: list[dict]):
    """(task name, base rows, other rows) to compare: the task itself; for a group each subtask,
    and the group when its aggregate is lm-eval's size-weighted mean, which equals the mean over
    the pooled items (an unweighted mean of subtask means is not a per-item mean: not compared)."""
    if task.subtasks is None:
        yield task.name, base_items, other_items
        return
    names = list(dict.fromkeys(it.get("task") for it in base_items))
    for name in names:
        yield name, [it for it in base_items if it.get("task") == name], [it for it in other_items if it.get("task") == name]
    pooled = {m.get("metric") for m in task.aggregate or [] if isinstance(m, dict)
              and m.get("aggregation", "mean") == "mean" and m.get("weight_by_size", True)}
    if pooled:
        def tagged(items):  # a doc id is unique within its subtask only
            return [{**it, "doc_id": f"{it.get('task')}/{it['doc_id']}",
                     "metrics": {k: v for k, v in it["metrics"].items() if k in pooled}} for it in items]

        yield task.name, tagged(base_items), tagged(other_items)


def by_filter(items: list[dict]) -> dict[str, list[dict]]:
    """Sample rows grouped by lm-eval filter ("none" for rows written before filters were kept)."""
    out: dict[str, list[dict]] = {}
    for it in items:
        out.setdefault(it.get("filter") or "none", []).append(it)
    return out


def _write_comparison(run: Run, labels: list[str], suite: Suite) -> None:
    from evals.compare import compare_items

    base = labels[0]
    rows = []
    for task in suite.tasks:
        if not _task_done(run, base, task.name):
            continue
        base_items = by_filter(load_items(run, base, task.name))
        hib_all = run.read_json(f"tasks/{base}/{task.name}.json").get("higher_is_better", {})
        for other in labels[1:]:
            if not _task_done(run, other, task.name):
                continue
            other_items = by_filter(load_items(run, other, task.name))
            # Each filter is its own result (as lm-eval reports "metric,filter"): never pooled.
            for flt, items in base_items.items():
                for name, mine, theirs in _compared_sets(task, items, other_items.get(flt, [])):
                    metrics = list(dict.fromkeys(m for it in mine for m in it["metrics"]))
                    hib = hib_all.get(name) or next(iter(hib_all.values()), {})
                    for metric in metrics:
                        result = compare_items(name, metric, base, other, mine, theirs, hib.get(metric), filter=flt)
                        if result is not None:
                            rows.append(result.to_dict())
    run.write_json("comparison.json", {"baseline": base, "rows": rows})


def _write_kl(run, labels, models, loaded, suite, kl_prompts, device, failures) -> None:
    if run.path.joinpath("kl.json").is_file():
        return
    from evals.compare import next_token_kl, same_tokenizer

    base = labels[0]
    summary, rows = {}, []
    for other in labels[1:]:
        try:
            p = loaded.get(base) or _load(base, models[base], device)
            q = loaded.get(other) or _load(other, models[other], device)
        except HarnessError as err:
            failures.append(str(err))
            continue
        loaded[base], loaded[other] = p, q
        pair = f"{other}||{base}"
        if not same_tokenizer(p.tokenizer, q.tokenizer):
            summary[pair] = {"skipped": "different tokenizers"}
            continue
        per_task = {}
        for task in suite.tasks:
            if not _task_done(run, base, task.name):
                continue
            prompts = _prompts(load_items(run, base, task.name), kl_prompts)
            if not prompts:
                continue
            # KL(aligned || base): how far the compared model's next-token choices moved from the base.
            values = next_token_kl(q, p, [text for _, text in prompts])
            per_task[task.name] = sum(values) / len(values)
            rows += [{"pair": pair, "task": task.name, "doc_id": d, "kl": v} for (d, _), v in zip(prompts, values)]
        all_values = [r["kl"] for r in rows if r["pair"] == pair]
        summary[pair] = {"tasks": per_task, "mean": sum(all_values) / len(all_values) if all_values else None,
                         "n_prompts": len(all_values), "direction": f"KL({other} || {base}), nats"}
    run.write_jsonl("kl.jsonl", rows)
    run.write_json("kl.json", summary)


def _prompts(items: list[dict], limit: int) -> list[tuple[int, str]]:
    """(doc_id, prompt) for the first distinct prompts of a task; rolling-perplexity tasks have none."""
    seen, out = set(), []
    for it in items:
        args = it.get("inputs") or []
        first = args[0] if args else None
        if not isinstance(first, (list, tuple)) or len(first) < 2 or not isinstance(first[0], str) or not first[0]:
            continue
        if first[0] not in seen:
            seen.add(first[0])
            out.append((it["doc_id"], first[0]))
        if len(out) >= limit:
            break
    return out


def _headline(run: Run) -> dict:
    """Manifest metrics: each model's metrics per task."""
    from evals.results import EvalResults

    results = EvalResults.of(run)
    return {f"{label}/{task}/{metric}": value for label in results.models()
            for task, values in results.scores(label).items() for metric, value in values.items()}


def _say(console, text: str) -> None:
    if console is False:
        return
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    console.print(text)
