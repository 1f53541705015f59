"""Runs: every run with its kind, models, date and headline metrics; filter, then open one."""

import streamlit as st

from apps.dashboard import data, figures, widgets

PAGE_OF_KIND = {"eval": "evaluation.py", "sae": "features.py", "circuits": "circuits.py",
                "circuit": "circuits.py", "patching": "circuits.py", "heads": "circuits.py",
                "diff": "model_diff.py", "model-diff": "model_diff.py", "experts": "model_diff.py",
                "crosscoder": "crosscoder.py", "crosscoder-latents": "crosscoder.py"}

st.title("Runs")
widgets.sidebar()
runs = data.list_runs(str(data.runs_root()))
if not runs:
    st.info(f"No runs in `{data.runs_root()}` yet - make one with `harness demo` or `harness eval`, "
            "or point the app at another folder with `harness app --runs DIR`.")
    st.stop()

kinds = sorted({i.kind for i in runs if i.kind})
c1, c2, c3 = st.columns([2, 2, 3])
chosen_kinds = c1.multiselect("Kind", kinds, default=kinds, key="filter_kinds")
statuses = sorted({i.status for i in runs if i.status})
chosen_status = c2.multiselect("Status", statuses, default=statuses, key="filter_status")
text = c3.text_input("Search (name, model, command)", key="filter_text").strip().lower()


def keep(info) -> bool:
    if info.error:  # unreadable runs are always listed, so the problem is visible
        return not text or text in info.name.lower()
    hay = " ".join([info.name, " ".join(info.models), str(info.manifest.get("command") or "")]).lower()
    return info.kind in chosen_kinds and info.status in chosen_status and (not text or text in hay)


shown = [i for i in runs if keep(i)]
st.caption(f"{len(shown)} of {len(runs)} runs in `{data.runs_root()}`")
for info in shown:
    widgets.run_card(info)

readable = [i for i in shown if not i.error]
if not readable:
    st.stop()
st.divider()
st.subheader("Open a run")
names = [i.name for i in readable]
wanted = st.query_params.get("run")  # ?run=NAME opens that run
name = st.selectbox("Run", names, index=names.index(wanted) if wanted in names else 0, key="open_select")
info = readable[names.index(name)]
m = info.manifest
c1, c2, c3, c4 = st.columns(4)
c1.metric("kind", info.kind or "-")
c2.metric("status", info.status or "-")
c3.metric("artifacts", len(m.get("artifacts") or []))
c4.metric("total time", f"{(m.get('timings') or {}).get('total', 0):.1f} s")
if m.get("command"):
    st.code(m["command"], language="bash")
page = PAGE_OF_KIND.get(info.kind)
if page and st.button(f"Open in the {page.removesuffix('.py').replace('_', ' ')} page", key="open_page"):
    st.session_state["open_run"] = info.name
    st.switch_page(f"pages/{page}")
metrics = widgets.headline(m.get("metrics") or {}, limit=40)
if metrics:
    st.dataframe([{"metric": k, "value": v} for k, v in metrics], hide_index=True, width="stretch")
if info.kind == "demo" and data.has(info.path, "metrics.json"):
    st.plotly_chart(figures.demo_norms_figure(data.read_json(info.path, "metrics.json")), width="stretch",
                    key="demo_norms")
    if data.has(info.path, "generations.jsonl"):
        st.dataframe([{k: r.get(k) for k in ("model", "prompt", "completion", "n_new_tokens")}
                      for r in data.read_jsonl(info.path, "generations.jsonl")], hide_index=True, width="stretch")
st.markdown("**Models**")
st.dataframe([{"label": k, **{f: str(v.get(f, "")) for f in ("name", "family", "source", "weights_sha256")}}
              for k, v in (m.get("models") or {}).items() if isinstance(v, dict)], hide_index=True)
st.markdown("**Artifacts**")
st.dataframe(m.get("artifacts") or [], hide_index=True, width="stretch")
widgets.json_block(m.get("config") or {}, label="config")
widgets.json_block({"timings": m.get("timings"), "versions": m.get("versions"), "compute": m.get("compute"),
                    "seed": m.get("seed")}, label="timings, versions and compute settings")
