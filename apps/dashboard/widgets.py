"""Small pieces shared by the pages: run pickers, run cards, empty states, coloured tokens."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Iterable

import streamlit as st

from apps.dashboard import data
from harness.runs import RunInfo


def short(source: str) -> str:
    """A model source as a label: a folder's name, or the name itself."""
    return Path(source).name if ("/" in source or "\\" in source) else source


def sidebar() -> None:
    """Where the runs come from, and a button to re-read them."""
    with st.sidebar:
        st.caption(f"runs folder: `{data.runs_root()}`")
        if st.button("Reload runs", key="reload_runs"):
            data.refresh()


def empty_state(what: str, command: str) -> None:
    st.info(f"No {what} runs yet - produce one with `{command}` "
            f"(runs folder: `{data.runs_root()}`).")


def pick_run_having(kind: str, label: str, required: str, command: str) -> RunInfo | None:
    """pick_run, then check the chosen run holds `required` (the file its producer writes); says
    how to make such a run, or what is missing, and returns None when there is nothing to show."""
    info = pick_run(kind, label)
    if info is None:
        empty_state(kind, command)
    elif not data.has(info.path, required):
        st.warning(f"run {info.name} has no {required} (written by `{command.split(' --')[0]}`)")
        return None
    return info


def run_or_stop(kind: str | tuple[str, ...], label: str, what: str, command: str) -> RunInfo:
    """pick_run; with no such run, the empty state (how to make one) and the end of the page."""
    info = pick_run(kind, label)
    if info is None:
        empty_state(what, command)
        st.stop()
    return info


def model_or_stop(source: str | None, hint: str):
    """The loaded model of a picked source; with none picked, `hint` and the end of the page, and
    the end of the page too (after load_model's message) when it cannot load."""
    if not source:
        st.info(hint)
        st.stop()
    model = load_model(source)
    if model is None:
        st.stop()
    return model


def run_label(info: RunInfo) -> str:
    created = (info.created or "")[:16].replace("T", " ")
    return f"{info.name} ({info.status or '?'}, {created})"


def pick_run(kind: str | tuple[str, ...], label: str = "Run", key: str | None = None) -> RunInfo | None:
    """A select box of runs of `kind` (newest first); the Runs page's "open" or ?run=NAME preselects one."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    runs = data.runs_of_kind(kinds)
    if not runs:
        return None
    names = [i.name for i in runs]
    wanted = st.session_state.get("open_run") or st.query_params.get("run")  # the Runs page, or ?run=NAME
    index = names.index(wanted) if wanted in names else 0
    labels = {i.name: run_label(i) for i in runs}
    chosen = st.selectbox(label, names, index=index, key=key or f"pick_{kinds[0]}",
                          format_func=lambda n, labels=labels: labels.get(n, n))
    info = runs[names.index(chosen)]
    if info.status != "complete":
        st.warning(f"run {info.name} is {info.status}: {info.failure or 'not finished'}; showing what it wrote.")
    return info


def headline(metrics: dict, limit: int = 6) -> list[tuple[str, str]]:
    """The first few numeric headline metrics of a manifest, formatted."""
    out = []
    for key, value in _flatten(metrics):
        if key.endswith("sample_len") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out.append((key, f"{value:.4g}" if isinstance(value, float) else str(value)))
        if len(out) >= limit:
            break
    return out


def _flatten(obj, prefix: str = "") -> Iterable[tuple[str, object]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}{k}/" if isinstance(v, dict) else f"{prefix}{k}")
    else:
        yield prefix.rstrip("/"), obj


def run_card(info: RunInfo) -> None:
    """One run as a bordered card; an unreadable manifest shows its error instead of breaking."""
    with st.container(border=True):
        if info.error:
            st.markdown(f"**{html.escape(info.name)}**")
            st.error(f"This run cannot be read: {info.error}")
            return
        left, right = st.columns([3, 2])
        with left:
            badge = {"complete": "green", "failed": "red", "interrupted": "orange"}.get(info.status, "gray")
            st.markdown(f"**{info.name}** &nbsp; :blue-badge[{info.kind}] :{badge}-badge[{info.status}]")
            created = (info.created or "")[:19].replace("T", " ")
            st.caption(f"{created} UTC · models: {', '.join(info.models) or '-'}")
            if info.failure:
                st.caption(f":red[{info.failure}]")
        with right:
            for key, value in headline(info.manifest.get("metrics") or {}, limit=3):
                st.caption(f"{key}: **{value}**")


def coloured_tokens(tokens: list[str], values: list[float], title: str = "") -> str:
    """HTML: each token on a background whose colour encodes its value (blue < 0 < red)."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    scale = max(finite) if finite and max(finite) > 0 else 1.0
    spans = []
    for tok, v in zip(tokens, values):
        a = min(1.0, abs(v) / scale) if math.isfinite(v) else 0.0
        rgb = "220,50,47" if v >= 0 else "38,139,210"
        text = html.escape(tok).replace(" ", "&nbsp;").replace("\n", "\\n") or "&nbsp;"
        spans.append(f"<span title='{v:.4g}' style='background:rgba({rgb},{a:.2f});padding:2px 1px;"
                     f"margin:1px;border-radius:3px;font-family:monospace'>{text}</span>")
    head = f"<div style='font-size:0.8em;color:#666'>{html.escape(title)}</div>" if title else ""
    return f"<div class='tokens' style='line-height:2.0'>{head}{''.join(spans)}</div>"


def json_block(obj, expanded: bool = False, label: str = "details") -> None:
    with st.expander(label, expanded=expanded):
        st.code(json.dumps(obj, indent=2, default=str), language="json")


OTHER = "other (type a zoo name, folder, .gguf or HF id)"


def model_picker(label: str, key: str, default: str | None = None) -> str | None:
    """A model picker (run models first, then the zoo); `?<key without act_/diff_ prefix>=...` in the
    URL preselects one, e.g. `?model=smollm2-135m-instruct`."""
    choices = data.model_choices(str(data.runs_root()))
    wanted = st.query_params.get(key.split("_", 1)[-1]) or default
    if wanted and wanted not in choices:
        choices = [wanted] + choices
    picked = st.selectbox(label, choices + [OTHER], index=choices.index(wanted) if wanted else None,
                          placeholder="choose a model", key=key)
    if picked == OTHER:
        picked = st.text_input(f"{label}: source", key=f"{key}_text").strip() or None
    return picked


def load_model(source: str):
    """The cached model, with a spinner the first time; None (and a message) if it cannot load."""
    from harness.errors import HarnessError

    try:
        with st.spinner(f"loading {source} (once per session)..."):
            return data.load_model(source)
    except Exception as e:  # any loader failure is bad input here: say so on the page, keep the app up
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        detail = first if isinstance(e, HarnessError) else f"{type(e).__name__}: {first}"
        st.error(f"could not load model {source!r}: {detail}")
        return None


def integer_ticks(fig):
    """Heatmaps over layers / heads / experts: one tick per integer row and column, not 0.5 steps."""
    for trace in fig.data:
        if trace.type != "heatmap":
            continue
        for axis, values in (("xaxis", trace.x), ("yaxis", trace.y)):
            if values is None or all(isinstance(v, int) for v in values):
                fig.update_layout({axis: {"dtick": 1}})
    return fig
