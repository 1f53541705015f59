"""Features: browse an SAE run's features - density, top activating contexts, activation
histogram, logit effects - and search features by token. Features analysed by `harness sae
features` are read from the run; any other feature is analysed live with the same code."""

import numpy as np
import streamlit as st

from apps.dashboard import data, sae_live, saeviews, widgets
from harness.errors import HarnessError

st.title("Features")
widgets.sidebar()
info = widgets.run_or_stop("sae", "SAE run", "SAE", "harness sae train ... && harness sae features --sae RUN --model MODEL")
if not data.has(info.path, "sae/cfg.json"):
    st.error(f"SAE run {info.name} has no sae/cfg.json: the SAE was not saved (status {info.status}).")
    st.stop()
sae = sae_live.sae_info(str(info.path))
st.caption(f"hook `{sae['hook']}` · architecture **{sae['arch']}** · **{sae['d_sae']}** features · d_in "
           f"**{sae['d_in']}** · model `{sae['model']}` · corpus `{sae['corpus']}`")
saeviews.quality_summary(info.manifest)
widgets.json_block(info.manifest.get("metrics") or {}, label="training metrics")


def show_feature(row: dict, key: str) -> None:
    """One analysed feature: numbers, activation histogram, logit effects, top contexts."""
    c1, c2, c3 = st.columns(3)
    c1.metric("density", f"{row['density']:.3%}")
    c2.metric("mean activation", f"{row['mean_act']:.3g}")
    c3.metric("top contexts", len(row["top_contexts"]))
    left, right = st.columns(2)
    with left:
        st.plotly_chart(saeviews.feature_histogram(row), width="stretch", key=f"{key}_hist")
    with right:
        st.plotly_chart(saeviews.feature_logits(row), width="stretch", key=f"{key}_logits")
    st.markdown("**Top activating contexts**")
    for c in row["top_contexts"]:
        st.markdown(widgets.coloured_tokens(c["tokens"], c["acts"], f"context {c['context']}: max {c['max']:.3g}"),
                    unsafe_allow_html=True)
    if not row["top_contexts"]:
        st.caption("This feature did not fire on the scanned text.")


# -- density over all features --------------------------------------------------------------------
if data.has(info.path, "features_density.safetensors"):
    density = data.read_tensors(info.path, "features_density.safetensors")[0]["density"]
    log_density, where = np.log10(np.maximum(density, 1e-10)), "on held-out text (harness sae features)"
elif data.has(info.path, "sae/sparsity.safetensors"):
    log_density, where = next(iter(data.read_tensors(info.path, "sae/sparsity.safetensors")[0].values())), "during training"
else:
    log_density = None
if log_density is not None:
    dead = int(np.sum(log_density <= -9.9))
    st.plotly_chart(saeviews.density_figure(log_density[log_density > -9.9],
                                            f"Feature density {where} ({dead} dead features not shown)"),
                    width="stretch", key="feat_density")

# -- the stored analysis --------------------------------------------------------------------------
if data.has(info.path, "features.json"):
    stored = data.read_json(info.path, "features.json")
    rows = stored.get("features") or []
    st.subheader(f"Analysed features ({len(rows)}, hook `{stored.get('hook')}`, {stored.get('n_tokens')} tokens)")
    query = st.text_input("Search analysed features by token", key="feat_stored_search",
                          placeholder="a token, e.g. ' the'").strip().lower()
    if query:
        found = []
        for r in rows:
            promotes = any(query == t.strip().lower() for t, _ in r["logits"]["promoted"])
            fires = any(query == t.strip().lower() and a > 0
                        for c in r["top_contexts"] for t, a in zip(c["tokens"], c["acts"]))
            if promotes or fires:
                found.append({"feature": r["feature"], "promotes it": promotes, "fires on it": fires,
                              "density": r["density"]})
        st.caption(f"{len(found)} analysed features promote or fire on {query!r}")
        if found:
            st.dataframe(found, hide_index=True)
    ids = [r["feature"] for r in rows]
    if ids:
        labels = {r["feature"]: f"feature {r['feature']} (density {r['density']:.3%})" for r in rows}
        chosen = st.selectbox("Feature", ids, key="feat_stored_id", format_func=lambda f, labels=labels: labels.get(f, str(f)))
        show_feature(rows[ids.index(chosen)], "feat_stored")
    browse_live = st.toggle("Browse any feature live (runs the model over the corpus)", key="feat_live")
else:
    st.caption(f"No stored feature analysis; `harness sae features --sae {info.name} --model MODEL` writes one. "
               "Browsing live instead.")
    browse_live = True
if not browse_live:
    st.stop()

# -- live: any feature ----------------------------------------------------------------------------
st.subheader("Live feature browser")
c1, c2 = st.columns([3, 1])
with c1:
    source = widgets.model_picker("Model the SAE reads", "feat_model", default=sae["model"])
n_tokens = c2.select_slider("Tokens to scan", [1024, 2048, 4096, 8192, 16384], value=2048, key="feat_n")
model = widgets.model_or_stop(source, "Choose the model this SAE was trained on to browse its features.")
try:
    effects = sae_live.logit_effects(str(info.path), source)
except (HarnessError, RuntimeError) as e:
    st.error(f"SAE {info.name} does not fit {source}: {e}")
    st.stop()
decode = model.tokenizer.decode

query = st.text_input("Find features by the token they promote", key="feat_search", placeholder="e.g. ' the'")
if query:
    token_ids = model.tokenizer.encode(query, add_special_tokens=False)
    if not token_ids:
        st.warning(f"{query!r} encodes to no tokens")
    else:
        tid = token_ids[0]
        st.caption(f"features whose decoder direction raises the logit of {decode([tid])!r} most")
        st.dataframe([{"feature": int(f), "logit effect": round(float(effects[f, tid]), 4)}
                      for f in np.argsort(-effects[:, tid])[:10]], hide_index=True)

feature = int(st.number_input(f"Feature (0-{effects.shape[0] - 1})", 0, effects.shape[0] - 1, 0, key="feat_id"))
try:
    with st.spinner(f"scanning {n_tokens} tokens of {sae['corpus']} for feature {feature}..."):
        row = sae_live.feature_row(str(info.path), source, sae["corpus"], sae["hook"], sae["context"], n_tokens, feature)
except HarnessError as e:
    st.error(f"cannot analyse feature {feature} of {info.name} with {source}: {e}")
    st.stop()
show_feature(row, "feat_live")
