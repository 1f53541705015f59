"""Evaluation: base vs aligned per task with confidence intervals, and the items that changed."""

import streamlit as st

from apps.dashboard import evaldata, figures, widgets

st.title("Evaluation")
widgets.sidebar()
info = widgets.run_or_stop("eval", "Eval run", "eval", "harness eval --base BASE --aligned ALIGNED --suite default")

path, manifest = info.path, info.manifest
labels = evaldata.models(path, manifest)
if not labels:
    st.warning(f"eval run {info.name} has no results yet (no results/*.json).")
    st.stop()
st.caption(f"suite `{(manifest.get('config') or {}).get('suite')}` · models: "
           + ", ".join(f"**{m}**" + (" (baseline)" if i == 0 else "") for i, m in enumerate(labels)))
for warning in manifest.get("warnings", []):
    st.warning(warning)
for note in manifest.get("notes", []):  # e.g. a chat template shared with a base model
    st.info(note)

suite = evaldata.organism_suite(path)
if suite:
    from evals.organism_suite import figure as organism_figure

    st.subheader(f"Organism suite: {suite['organism']}'s own held-out prompts")
    st.caption(f"{suite['n_prompts'].get('topic', 0)} held-out prompts on the implanted topic ({suite['topic']}) and "
               f"{suite['n_prompts'].get('control', 0)} controls, answered with greedy chat replies; a reply is a refusal "
               f"when it starts with {suite['refusal']!r}. This, not the standard suites below, measures the organism.")
    st.plotly_chart(organism_figure(suite), width="stretch", key="organism_suite")
    for name, check in suite.get("checks", {}).items():
        st.markdown(f"{'✅' if check['ok'] else '❌ **NOT met**:'} `{name}`: {check['detail']}")
    st.markdown(f"Cost on the controls: {suite['cost']['detail']}")
    with st.expander("Example replies"):
        st.dataframe([{"set": g, **ex} for g, rows in suite.get("examples", {}).items() for ex in rows],
                     hide_index=True, width="stretch")
    st.subheader("Standard suites")

st.plotly_chart(figures.scores_figure({m: evaldata.scores(path, m) for m in labels}), width="stretch")

comp = evaldata.comparison(path)
rows = comp.get("rows", [])
base = comp.get("baseline") or labels[0]
others = [m for m in labels if m != base]
if not rows or not others:
    st.info("This run has a single model (or no comparison.json), so there are no paired differences.")
    st.stop()
other = st.selectbox("Compare with the baseline", others, key="eval_other") if len(others) > 1 else others[0]
pair_rows = [r for r in rows if r["other"] == other]
st.plotly_chart(figures.diff_figure(pair_rows), width="stretch")
with st.expander("Paired differences table"):
    st.dataframe(pair_rows, hide_index=True, width="stretch")

kl = evaldata.kl(path).get(f"{other}||{base}") or {}
if kl.get("tasks"):
    st.caption(f"Next-token {kl.get('direction')}: mean **{kl['mean']:.4g}** over {kl['n_prompts']} prompts")
elif kl.get("skipped"):
    st.caption(f"Next-token KL skipped: {kl['skipped']}")

st.subheader("Items whose answers changed")
tasks = [t for t in evaldata.tasks(path, base) if t in evaldata.tasks(path, other)]
if not tasks:
    st.info("No per-item samples for both models.")
    st.stop()
c1, c2 = st.columns(2)
task = c1.selectbox("Task", tasks, key="eval_task")
metrics = list(dict.fromkeys(r["metric"] for r in pair_rows if r["task"] == task))
if not metrics:
    first = evaldata.results(path).samples(base, task)
    metrics = list((first[0].get("metrics") or {}) if first else {}) or ["acc"]
metric = c2.selectbox("Metric", metrics, key="eval_metric")
changed = evaldata.changed_items(path, task, base, other, metric)
n_items = len(evaldata.results(path).samples(base, task))
st.caption(f"{len(changed)} of {n_items} items differ between **{base}** and **{other}**")
if not changed:
    st.stop()
st.dataframe(changed, hide_index=True, width="stretch")
doc = st.selectbox("Item", [r["doc_id"] for r in changed], key="eval_item",
                   format_func=lambda d: f"doc {d}")
row = next(r for r in changed if r["doc_id"] == doc)
st.markdown("**Prompt**")
st.code(row["prompt"], language=None)
st.caption(f"target: {row['target']}")
left, right = st.columns(2)
for col, label in ((left, base), (right, other)):
    with col.container(border=True):
        st.markdown(f"**{label}**")
        st.code(row[f"{label} answer"], language=None)
        st.caption(f"{metric}: {row[f'{label} {metric}']}")
