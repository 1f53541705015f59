"""The eval run's plotly HTML report and the terminal summary table."""

from __future__ import annotations

import html
import math

from evals.compare import metric_label
from evals.results import EvalResults
from harness.runs import Run


def build_report_html(run: Run) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    results = EvalResults.of(run)
    scores = {label: results.scores(label) for label in results.models()}
    comp, kl = results.comparison(), results.kl()
    figures = []
    # One panel per task: every metric, one bar per model.
    tasks = sorted({t for per_model in scores.values() for t in per_model})
    if tasks:
        fig = make_subplots(rows=len(tasks), cols=1, subplot_titles=tasks, vertical_spacing=0.25 / max(1, len(tasks)))
        for i, task in enumerate(tasks, 1):
            for model, per_task in scores.items():
                metrics = per_task.get(task, {})
                fig.add_trace(go.Bar(name=model, x=list(metrics), y=list(metrics.values()), legendgroup=model,
                                     showlegend=i == 1, marker_color=_colour(list(scores).index(model))), row=i, col=1)
        fig.update_layout(title="Scores per task", barmode="group", height=260 * len(tasks))
        figures.append(fig)
    rows = comp.get("rows", [])
    if rows:
        labels = [f"{r['task']} / {_label(r)} ({r['other']} - {r['base']})" for r in rows]
        fig = go.Figure(go.Scatter(
            x=[r["diff"] for r in rows], y=labels, mode="markers",
            error_x=dict(type="data", symmetric=False, array=[r["ci_high"] - r["diff"] for r in rows],
                         arrayminus=[r["diff"] - r["ci_low"] for r in rows]),
            text=[f"p={r['p_value']:.3g} ({r['test']}), n={r['n_units']}" for r in rows], hoverinfo="x+y+text"))
        fig.add_vline(x=0, line_dash="dot")
        fig.update_layout(title="Paired differences with bootstrap 95% CIs", height=120 + 28 * len(rows),
                          yaxis=dict(autorange="reversed"), margin=dict(l=380))
        figures.append(fig)
    for pair, info in kl.items():
        if info.get("tasks"):
            fig = go.Figure(go.Bar(x=list(info["tasks"]), y=list(info["tasks"].values())))
            fig.update_layout(title=f"Next-token {info.get('direction', pair)} on the suite prompts")
            figures.append(fig)
    parts = [f"<h1>Eval run {html.escape(run.name)}</h1>",
             f"<p>suite: {html.escape(str(run.manifest.get('config', {}).get('suite')))}; models: "
             f"{html.escape(', '.join(run.manifest.get('models', {})))}; status: {html.escape(str(run.status))}</p>",
             *(f"<p><b>warning:</b> {html.escape(w)}</p>" for w in run.manifest.get("warnings", [])),
             *(f"<p><b>note:</b> {html.escape(n)}</p>" for n in run.manifest.get("notes", [])),
             _table_html(comp.get("rows", []))]
    for n, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(n == 0)))
    return "<!doctype html><html><head><meta charset='utf-8'><title>eval report</title></head><body>" + "\n".join(parts) + "</body></html>"


def _table_html(rows: list[dict]) -> str:
    if not rows:
        return ""
    head = "<tr><th>task</th><th>metric</th><th>base</th><th>other</th><th>diff [95% CI]</th><th>p</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(r['task'])}</td><td>{html.escape(_label(r))}</td><td>{_fmt(r['base_value'])}</td>"
        f"<td>{_fmt(r['other_value'])}</td><td>{_fmt(r['diff'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]</td>"
        f"<td>{r['p_value']:.3g}</td></tr>" for r in rows)
    return f"<table border='1' cellpadding='4'>{head}{body}</table>"


def write_report(run: Run) -> None:
    run.write_text("report.html", build_report_html(run), "html")


def print_summary(run: Run, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    results = EvalResults.of(run)
    scores = {label: results.scores(label) for label in results.models()}
    comp, kl = results.comparison(), results.kl()
    diffs = {(r["task"], _label(r), r["other"]): r for r in comp.get("rows", [])}
    models = list(scores)
    table = Table(title=f"eval {run.name}")
    table.add_column("task")
    table.add_column("metric")
    for m in models:
        table.add_column(m, justify="right")
    for m in models[1:]:
        table.add_column(f"{m} - {models[0]}", justify="right")
        table.add_column("95% CI", justify="right")
        table.add_column("p", justify="right")
    tasks = list(dict.fromkeys(t for per in scores.values() for t in per))
    for task in tasks:
        metrics = list(dict.fromkeys(k for per in scores.values() for k in per.get(task, {})))
        for metric in metrics:
            row = [task.removeprefix("harness_"), metric] + [_fmt(scores[m].get(task, {}).get(metric)) for m in models]
            for m in models[1:]:
                r = diffs.get((task, metric, m))
                row += ([_fmt(r["diff"], "+.3g"), f"[{_fmt(r['ci_low'], '.3g')}, {_fmt(r['ci_high'], '.3g')}]",
                         f"{r['p_value']:.2g}"] if r else ["", "", ""])
            table.add_row(*row)
    console.print(table)
    for pair, info in kl.items():
        if info.get("mean") is not None:
            console.print(f"next-token {info['direction']}: mean {info['mean']:.4g} over {info['n_prompts']} prompts")
        elif info.get("skipped"):
            console.print(f"KL {pair}: skipped ({info['skipped']})")
    console.print(f"run folder: {run.path}  (report: {run.path / 'report.html'})")


def _label(row: dict) -> str:
    return metric_label(row["metric"], row.get("filter"))


def _fmt(value, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _colour(i: int) -> str:
    return ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"][i % 6]
