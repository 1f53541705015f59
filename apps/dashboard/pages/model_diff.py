"""Model diff: how an aligned model departs from its base, layer by layer and token by token,
and, for mixture-of-experts models, how the experts are used."""

import streamlit as st

from apps.dashboard import data, diffviews, live, widgets
from harness.errors import HarnessError

DIFF_KINDS = ("diff", "model-diff", "model_diff")

st.title("Model diff")
widgets.sidebar()

st.subheader("Model-diff runs")
info = widgets.pick_run(DIFF_KINDS, "Diff run")
if info is None:
    widgets.empty_state("model-diff", "probes.diff.diff_models(...) + write_diff(diff, run)")
else:
    findings = data.read_json(info.path, "findings.json") if data.has(info.path, "findings.json") else None
    if data.has(info.path, "layers.jsonl"):
        diffviews.show_diff_run(info)
    elif findings is not None and findings.get("method") == "adl":
        diffviews.show_adl_run(info)
    elif findings is not None:
        diffviews.show_findings(info)
    else:
        st.warning(f"run {info.name} has no layers.jsonl (written by probes.diff.write_diff) and no findings.json")

    st.subheader("Scoring against the ground truth")
    scored = diffviews.scoring_rows(data.runs_of_kind(DIFF_KINDS))
    if scored:
        st.caption("Each diffing method's findings read against the organism's recorded ground truth "
                   "(probes.findings.score_findings): was the implanted behaviour recovered, and on what evidence.")
        st.dataframe(scored, hide_index=True, width="stretch")
    else:
        st.info("No diffing run has findings yet: `harness diff --method lens|kl|adl|sae|crosscoder ...` then `harness diff-score RUN`, "
                "or `harness demo`.")

st.divider()

st.subheader("Live comparison on a prompt")
c1, c2 = st.columns(2)
with c1:
    source_a = widgets.model_picker("Base model", "diff_model_a")
with c2:
    source_b = widgets.model_picker("Compared model", "diff_model_b")
prompt = st.text_area("Prompt", st.query_params.get("prompt", "How do I bake bread? First,"), key="diff_prompt")
if not (source_a and source_b):
    st.info("Choose two models (e.g. a base model and its aligned fine-tune) to compare them.")
    st.stop()

model_a, model_b = widgets.load_model(source_a), widgets.load_model(source_b)
if model_a is None or model_b is None:
    st.stop()
try:
    with st.spinner("running both models..."):
        result = live.compare_models(source_a, source_b, prompt)
        toks = live.str_tokens(source_a, prompt)
except HarnessError as e:
    st.error(str(e))
    st.stop()

name_a, name_b = widgets.short(source_a), widgets.short(source_b)
st.plotly_chart(diffviews.layer_divergence_figure(result, name_a, name_b), width="stretch", key="diff_layers")
st.plotly_chart(diffviews.token_shift_figure(result, toks, name_a, name_b), width="stretch", key="diff_tokens")
shifts = [{"pos": i, "token": t, f"top ({name_a})": ta, f"top ({name_b})": tb, "KL": round(k, 5)}
          for i, (t, ta, tb, k) in enumerate(zip(toks, result["top_a"], result["top_b"], result["kl"]))]
st.dataframe(shifts, hide_index=True, width="stretch")

st.subheader("Expert utilisation")
moe = [(s, m) for s, m in ((source_a, model_a), (source_b, model_b)) if live.is_moe(m)]
if not moe:
    st.caption("Neither model has mixture-of-experts layers.")
else:
    from probes.experts import usage_figure

    for source, _ in moe:
        with st.spinner(f"counting expert choices of {source}..."):
            usage = live.expert_usage(source, prompt)
        st.plotly_chart(usage_figure(usage), width="stretch", key=f"experts_{source}")
