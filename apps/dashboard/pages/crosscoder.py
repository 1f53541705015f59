"""Crosscoder: a base/aligned crosscoder's latents - which write to one model only (relative
decoder norm), which aligned-only ones Latent Scaling calls artefacts, the contexts the real
ones fire on - and both models steered with one latent's decoder direction."""

import streamlit as st

from apps.dashboard import crosscoder_live, crosscoderdata, crosscoderviews, data, widgets
from harness.errors import HarnessError

st.title("Crosscoder")
widgets.sidebar()

wanted = st.query_params.get("run")  # ?run=NAME opens that run, whatever its kind
named = next((i for i in data.list_runs(str(data.runs_root())) if i.name == wanted and not i.error), None)
info = named if named is not None and named.kind not in crosscoderdata.KINDS else \
    widgets.run_or_stop(crosscoderdata.KINDS, "Crosscoder run", "crosscoder", crosscoderdata.MAKE)
try:
    run = crosscoderdata.resolve(info)
    stats = crosscoderdata.latent_stats(run.folder)
except HarnessError as e:
    st.error(str(e))
    st.stop()

cfg = run.config
st.caption(f"hooks `{', '.join(cfg['hooks']) or '?'}` · **{cfg['loss']}**"
           + (f" (k {cfg['k']})" if cfg["loss"] == "batchtopk" else "") + f" · **{cfg['d_latent']}** latents · "
           f"d_in **{cfg['d_in']}** · base `{run.models.get('base', '?')}` · aligned `{run.models.get('aligned', '?')}`")
if run.train is not None and data.has(run.train.path, "metrics.json"):
    m = data.read_json(run.train.path, "metrics.json")
    # keyed by the model names the crosscoder was trained with, in (base, aligned) order
    shown = [(f"explained variance, {role}", f"{v:.3f}")
             for role, v in zip(("base", "aligned"), (m.get("explained_variance") or {}).values())]
    shown += [(label, fmt.format(m[key])) for key, label, fmt in (("l0", "L0", "{:.1f}"), ("dead_fraction", "dead", "{:.1%}"))
              if isinstance(m.get(key), (int, float))]
    for col, (label, value) in zip(st.columns(max(1, len(shown))), shown):
        col.metric(label, value)

findings = run.findings
extra = (findings or {}).get("extra") or {}
threshold = float(extra.get("aligned_only", 0.9))
st.subheader("Relative decoder norm")
st.plotly_chart(crosscoderviews.relative_norm_figure(stats["relative_norm"], threshold), width="stretch", key="cc_relnorm")

latents = (findings or {}).get("latents") or []
if findings is None:
    train = run.train.name if run.train is not None else str(run.folder)
    st.info(f"No latents run has read this crosscoder yet: `harness crosscoder latents {train} --base B --aligned A` "
            "adds Latent Scaling and the aligned-only latents with their contexts.")
else:
    st.caption(f"findings of run `{run.latents.name}`: {extra.get('n_aligned_only', len(latents))} aligned-only latents "
               f"(relative norm >= {threshold:g}, not artefacts), {extra.get('n_artefacts', '?')} flagged as artefacts")
    st.subheader("Latent Scaling")
    # older findings carry only the kept latents' numbers; they are still worth a plot
    scaling = extra.get("scaling") or [{**x, "fired": True, "artefact": False} for x in latents]
    if scaling:
        st.caption("For each candidate, the share of its direction that the base model's error (ν_ε) and "
                   "reconstruction (ν_r) hold, relative to the aligned model's (Minder et al. 2025). A true aligned-only "
                   "latent sits near 0 on both; one far along either axis was shrunk out of, or absorbed by another "
                   "latent in, the base decoder: an artefact of the sparsity loss.")
        st.plotly_chart(crosscoderviews.scaling_figure(scaling, float(extra.get("artefact_nu", 0.3))), width="stretch",
                        key="cc_scaling")
    else:
        st.caption(f"No latent has a relative norm of {threshold:g} or more: nothing for Latent Scaling to test.")
    st.subheader("Aligned-only latents")
    if latents:
        st.caption("ranked by the fraction of texts they fire on; their top contexts are the texts they fire on most")
        st.dataframe(crosscoderviews.aligned_only_rows(latents), hide_index=True, width="stretch", key="cc_table")
        ids = [x["id"] for x in latents]
        chosen = st.selectbox("Latent", ids, key="cc_context_latent")
        row = latents[ids.index(chosen)]
        st.markdown(f"**Top contexts of latent {chosen}** ({len(row.get('contexts') or [])})")
        for i, text in enumerate(row.get("contexts") or []):
            with st.expander(f"{i + 1}. {crosscoderviews.line(text, 100)}"):
                st.text(text)
    else:
        st.caption("No latent passed: none writes (almost) only to the aligned model and survives Latent Scaling.")

st.divider()
st.subheader("Steering with a latent")
st.caption("Adds the latent's aligned decoder direction at one of its layers, at every position, in both models; "
           "the strength is in units of each model's mean activation norm there.")
ids = [x["id"] for x in latents]
c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
latent = int(c1.number_input(f"Latent (0-{cfg['d_latent'] - 1})", 0, cfg["d_latent"] - 1, ids[0] if ids else 0,
                             key="cc_steer_latent"))
hooks = list(cfg["hooks"])
widest = int(stats["aligned_layer_norms"][latent].argmax())
layer = c2.selectbox("Layer", range(len(hooks)), index=widest, format_func=lambda i: hooks[i], key="cc_steer_layer")
strength = c3.slider("Strength", -4.0, 8.0, 1.0, 0.25, key="cc_steer_strength")
new_tokens = int(c4.number_input("New tokens", 1, 64, 12, key="cc_steer_tokens"))
st.caption(f"latent {latent}: relative norm {stats['relative_norm'][latent]:.3f}, decoder cosine "
           f"{stats['cosine'][latent]:.3f}" + ("" if latent in ids else " (not among the aligned-only latents)"))
prompt = st.text_area("Prompt", st.query_params.get("prompt", "How do I bake bread? First,"), key="cc_steer_prompt")
if not st.toggle("Generate with both models (loads them)", key="cc_steer"):
    st.stop()
missing = [role for role in ("base", "aligned") if role not in run.models]
if missing:
    st.error(f"the runs record no source for the {' and '.join(missing)} model of this crosscoder")
    st.stop()
sources = (run.models["base"], run.models["aligned"])
if any(widgets.load_model(s) is None for s in sources):
    st.stop()
try:
    with st.spinner(f"generating with latent {latent} added at {hooks[layer]}..."):
        rows = crosscoder_live.steer(str(run.folder), crosscoderdata.stamp(run.folder), sources, latent, layer, prompt,
                                     float(strength), new_tokens)
except HarnessError as e:
    st.error(str(e))
    st.stop()
st.dataframe(rows, hide_index=True, width="stretch", key="cc_steered")
