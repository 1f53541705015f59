"""Probes & steering: what `harness probe` found layer by layer (probe accuracy, direction
separation) and what `harness steer` did to generations (refusal rates, side by side)."""

import streamlit as st

from apps.dashboard import data, figures, widgets

st.title("Probes & steering")
widgets.sidebar()

st.subheader("Probe runs")
info = widgets.pick_run_having("probe", "Probe run", "probe.jsonl",
                               "harness probe --model MODEL --positive builtin:harmful --negative builtin:harmless")
if info is not None:
    rows = data.read_jsonl(info.path, "probe.jsonl")
    directions = data.read_jsonl(info.path, "directions.jsonl") if data.has(info.path, "directions.jsonl") else []
    metrics = info.manifest.get("metrics") or {}
    cols = st.columns(3)
    cols[0].metric("best layer", metrics.get("best_layer", "-"))
    if metrics.get("best_test_accuracy") is not None:
        cols[1].metric("held-out accuracy there", f"{metrics['best_test_accuracy']:.3f}",
                       f"{metrics['best_test_accuracy'] - metrics.get('chance', 0):+.3f} over chance")
    cols[2].metric("most separating direction", f"layer {metrics.get('best_separation_layer', '-')}")
    st.plotly_chart(figures.probe_figure(rows, directions), width="stretch", key="probe_fig")
    with st.expander(f"per-layer numbers ({len(rows)} hooks)"):
        st.dataframe(rows, hide_index=True)

st.divider()
st.subheader("Steering runs")
steer = widgets.pick_run_having("steer", "Steering run", "generations.jsonl",
                                "harness steer --model MODEL --prompts builtin:harmless --direction PROBE_RUN --scale 8")
if steer is not None:
    metrics = steer.manifest.get("metrics") or {}
    gens = data.read_jsonl(steer.path, "generations.jsonl")
    config = steer.manifest.get("config") or {}
    st.caption(" · ".join(f"{k}: **{v}**" for k, v in (("model", config.get("model")), ("mode", metrics.get("mode")),
               ("layer", metrics.get("layer")), ("scale", metrics.get("scale")), ("prompts", len(gens))) if v is not None))
    st.plotly_chart(figures.steer_figure(metrics), width="stretch", key="steer_fig")
    changed = [g for g in gens if g.get("plain_refusal") != g.get("steered_refusal")]
    only_changed = st.toggle(f"only the {len(changed)} prompts whose refusal changed", value=bool(changed))
    st.dataframe(changed if only_changed else gens, hide_index=True,
                 column_order=["prompt", "plain", "steered", "plain_refusal", "steered_refusal"])
    if metrics.get("exported"):
        st.info(f"orthogonalised model saved to {metrics['exported']}")
