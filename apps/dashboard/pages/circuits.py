"""Circuits: the patching heatmaps, head-detector scores, lenses and ablations that
`harness circuits` wrote (their plotly figures, as the producer drew them), and head
detectors run live on a chosen model."""

from pathlib import Path

import plotly.io as pio
import streamlit as st

from apps.dashboard import data, live, widgets

st.title("Circuits")
widgets.sidebar()

st.subheader("Circuit runs")
info = widgets.pick_run("circuits", "Circuit run")
if info is None:
    widgets.empty_state("circuit", "harness circuits heads --model MODEL")
else:
    config = info.manifest.get("config") or {}
    st.caption(" · ".join(f"{k}: **{config[k]}**" for k in ("analysis", "model", "task", "sweep", "method", "n")
                          if config.get(k) not in (None, False)))
    figures = sorted(Path(info.path, "figures").glob("*.json"))
    if not figures:
        st.warning(f"run {info.name} has no figures/*.json")
    for f in figures:
        try:
            fig = pio.from_json(data.open_run(info.path).read_text(f"figures/{f.name}"))
        except ValueError as e:
            st.error(f"figure {f.name} of run {info.name} cannot be read: {e}")
            continue
        st.plotly_chart(widgets.integer_ticks(fig), width="stretch", key=f"circ_fig_{f.stem}")
    if data.has(info.path, "summary.json"):
        summary = data.read_json(info.path, "summary.json")
        tops = {k: v for k, v in summary.items() if k.startswith("top") and isinstance(v, list)}
        scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if scalars:
            cols = st.columns(min(4, len(scalars)))
            for i, (k, v) in enumerate(scalars.items()):
                cols[i % len(cols)].metric(k.replace("_", " "), f"{v:.4g}")
        for key, rows in tops.items():
            st.markdown(f"**{key.replace('_', ' ')}**")
            st.dataframe([{"layer": r[0], "head": r[1], "value": r[2]} for r in rows if len(r) == 3],
                         hide_index=True)
        texts = summary.get("texts")
        if texts:
            with st.expander(f"prompts ({len(texts)})"):
                st.write(texts)

st.divider()
st.subheader("Head detectors on a model")
source = widgets.model_picker("Model", "circ_model")
widgets.model_or_stop(source, "Choose a model to score its heads live (previous-token, duplicate-token, induction).")
from probes.circuits.figures import head_heatmap  # noqa: E402  (after the page is drawn: torch is slow to import)

with st.spinner("scoring heads on repeated random tokens..."):
    scores = live.head_scores(source)
detector = st.radio("Detector", list(scores), horizontal=True, key="circ_detector")
fig = head_heatmap(scores[detector], f"{detector.replace('_', ' ')} score per head ({widgets.short(source)})",
                   colorbar="score", diverging=False)
st.plotly_chart(widgets.integer_ticks(fig), width="stretch", key="circ_heads")
st.caption("Mean attention on the position a previous-token / duplicate-token / induction head would attend "
           "to, on [BOS] r r sequences of random tokens (probes.circuits.heads).")
