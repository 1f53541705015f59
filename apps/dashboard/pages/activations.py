"""Activations: type a prompt, pick a model (or a pair), and look inside: tokens coloured by a
hook's activation, the logit lens, an attention head's pattern, and top SAE features per token."""

import numpy as np
import streamlit as st

from apps.dashboard import data, figures, live, widgets
from harness.errors import HarnessError
from probes.circuits.figures import attention_pattern

st.title("Activations")
widgets.sidebar()

c1, c2 = st.columns(2)
with c1:
    source_a = widgets.model_picker("Model", "act_model")
with c2:
    pair = st.checkbox("Compare with a second model", key="act_pair")
    source_b = widgets.model_picker("Second model", "act_model_b") if pair else None
prompt = st.text_area("Prompt", st.query_params.get("prompt", "The capital of France is Paris. The capital of Japan is"),
                      key="act_prompt")
if not source_a:
    st.info("Choose a model to start; it loads once and stays loaded for this session.")
    st.stop()

sources = [s for s in dict.fromkeys([source_a, source_b]) if s]
models = {s: widgets.load_model(s) for s in sources}
if any(m is None for m in models.values()):
    st.stop()
for source, model in models.items():
    try:
        live.tokens_for(model, prompt)
    except HarnessError as e:  # an empty prompt, or one longer than the model's context
        st.error(f"{widgets.short(source)}: {e}")
        st.stop()

first = models[sources[0]]
c1, c2, c3, c4 = st.columns(4)
hooks = live.hook_names(first)
default_hook = f"blocks.{first.cfg.n_layers // 2}.hook_resid_post"
hook = c1.selectbox("Colour tokens by hook", hooks, index=hooks.index(default_hook) if default_hook in hooks else 0,
                    key="act_hook")
value_kind = c2.selectbox("Value", ["L2 norm", "one dimension"], key="act_value")
layer = c3.selectbox("Attention layer", list(range(first.cfg.n_layers)), key="act_layer")
head = c4.selectbox("Head", list(range(first.cfg.n_heads)), key="act_head")
dim = st.number_input("Dimension", 0, 10**6, 0, key="act_dim") if value_kind == "one dimension" else None
sae_runs = data.runs_of_kind("sae")
sae_run = None
if sae_runs:
    names = ["(none)"] + [i.name for i in sae_runs]
    # preselect an SAE trained on the chosen model
    fits = [i.name for i in sae_runs if source_a in data.model_sources(i.manifest)]
    pick = st.selectbox("SAE for top features per token", names, index=names.index(fits[0]) if fits else 0,
                        key="act_sae")
    sae_run = next((i for i in sae_runs if i.name == pick), None)


def show(source: str) -> None:
    model = models[source]
    progress = st.progress(0.0, text="tokenising")
    toks = live.str_tokens(source, prompt)
    if hook not in model.hook_dict:
        st.warning(f"{source} has no hook {hook}")
    else:
        progress.progress(0.2, text=f"running to {hook}")
        acts = live.hook_activations(source, prompt, hook)
        if dim is None:
            values = np.linalg.norm(acts, axis=-1)
        elif dim < acts.shape[-1]:
            values = acts[:, int(dim)]
        else:
            st.warning(f"{hook} has {acts.shape[-1]} dimensions; showing the L2 norm")
            values = np.linalg.norm(acts, axis=-1)
        st.markdown(widgets.coloured_tokens(toks, [float(v) for v in values],
                                            f"{hook} ({'norm' if dim is None else f'dim {dim}'})"),
                    unsafe_allow_html=True)
    progress.progress(0.4, text="logit lens")
    lens = live.logit_lens(source, prompt)
    st.plotly_chart(figures.lens_figure(lens["probs"], lens["top"], toks, lens["layers"],
                                        f"Logit lens: top token after each layer ({widgets.short(source)})"),
                    width="stretch", key=f"lens_{source}")
    progress.progress(0.7, text="attention")
    if layer < model.cfg.n_layers and head < model.cfg.n_heads:
        pattern = live.attention(source, prompt, int(layer))[int(head)]
        st.plotly_chart(attention_pattern(pattern, toks, f"Attention pattern, layer {layer} head {head}"),
                        width="stretch", key=f"attn_{source}")
    if sae_run is not None:
        progress.progress(0.85, text="SAE features")
        try:
            feats = live.sae_features(source, prompt, str(sae_run.path))
        except HarnessError as e:
            st.warning(f"SAE {sae_run.name} does not fit {source}: {e}")
        else:
            st.markdown(f"**Top SAE features per token** ({sae_run.name}, `{feats['hook']}`)")
            st.dataframe([{"pos": i, "token": t, **{f"#{j + 1}": f"{int(f)} ({v:.2f})" for j, (f, v) in
                                                     enumerate(zip(feats["ids"][i], feats["values"][i])) if v > 0}}
                          for i, t in enumerate(toks)], hide_index=True, width="stretch")
    progress.empty()


if len(sources) == 1:
    show(sources[0])
else:
    for tab, source in zip(st.tabs([widgets.short(s) for s in sources]), sources):
        with tab:
            show(source)
