"""Analyses of a typed prompt on a live model, cached per (model, prompt, choice) so that
re-running a page after a widget change does not re-run the model.

Every function takes the model's source string (how data.load_model finds it) rather than the
model, so st.cache_data can key on it; results are numpy arrays and lists (copyable)."""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from apps.dashboard import data
from harness.errors import HarnessError

PER_TOKEN_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")


class PromptTooLong(HarnessError):
    """The prompt has more tokens than the model's context."""


def tokens_for(model, prompt: str) -> torch.Tensor:
    """[1, pos] tokens of the prompt as the model's tokenizer encodes it; PromptTooLong past n_ctx."""
    if not prompt.strip():
        raise HarnessError("type a prompt first")
    tokens = model.to_tokens(prompt, truncate=False, prepend_bos=model.cfg.tokenizer_prepends_bos)
    n, n_ctx = tokens.shape[1], model.cfg.n_ctx
    if n > n_ctx:
        raise PromptTooLong(f"the prompt is {n} tokens but this model's context is {n_ctx} tokens; "
                            f"shorten it by at least {n - n_ctx} tokens")
    return tokens


def hook_names(model) -> list[str]:
    """Hooks with one vector per token, that exist in this model (layer by layer)."""
    names = [f"blocks.{i}.{h}" for i in range(model.cfg.n_layers) for h in PER_TOKEN_HOOKS]
    return [n for n in names if n in model.hook_dict]


@st.cache_data(show_spinner=False, max_entries=64)
def str_tokens(source: str, prompt: str) -> list[str]:
    model = data.load_model(source)
    return [model.tokenizer.decode([t]) for t in tokens_for(model, prompt)[0].tolist()]


@st.cache_data(show_spinner=False, max_entries=64)
def hook_activations(source: str, prompt: str, hook: str) -> np.ndarray:
    """[pos, d] activations of `hook` on the prompt."""
    model = data.load_model(source)
    tokens = tokens_for(model, prompt)
    layer = int(hook.split(".")[1]) if hook.startswith("blocks.") else 0
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=[hook], stop_at_layer=layer + 1)
    act = cache[hook][0].float()
    return act.reshape(act.shape[0], -1).numpy()


@st.cache_data(show_spinner=False, max_entries=32)
def logit_lens(source: str, prompt: str) -> dict:
    """Each layer's residual stream read through the final norm and unembedding: the probability
    and text of its top token at every position ([layers, pos]); the last row is the model's output."""
    model = data.load_model(source)
    tokens = tokens_for(model, prompt)
    names = [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=names)
        probs, top = [], []
        for name in names:
            p = model.unembed_residual(cache[name]).float().softmax(-1)[0]  # [pos, vocab]
            value, index = p.max(-1)
            probs.append(value.numpy())
            top.append([model.tokenizer.decode([i]) for i in index.tolist()])
    return {"probs": np.stack(probs), "top": top, "layers": [f"layer {i}" for i in range(len(names))]}


@st.cache_data(show_spinner=False, max_entries=32)
def attention(source: str, prompt: str, layer: int) -> np.ndarray:
    """[heads, query pos, key pos] attention pattern of `layer`."""
    model = data.load_model(source)
    tokens = tokens_for(model, prompt)
    name = f"blocks.{layer}.attn.hook_pattern"
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=[name], stop_at_layer=layer + 1)
    return cache[name][0].float().numpy()


@st.cache_resource(show_spinner=False, max_entries=4)
def load_sae(folder: str):
    from probes.sae.io import load_sae as _load

    return _load(folder)


@st.cache_data(show_spinner=False, max_entries=32)
def sae_features(source: str, prompt: str, sae_folder: str, top_k: int = 5) -> dict:
    """Top SAE features per token: ids [pos, k] and activations [pos, k], and the hook read."""
    from probes.sae.io import check_fits

    model = data.load_model(source)
    sae = load_sae(sae_folder)
    hook = check_fits(sae, model)
    acts = torch.from_numpy(hook_activations(source, prompt, hook))
    with torch.inference_mode():
        feats = sae.encode(acts.to(sae.W_enc.dtype))
    values, ids = feats.topk(min(top_k, feats.shape[-1]), dim=-1)
    return {"hook": hook, "ids": ids.numpy(), "values": values.float().numpy()}


@st.cache_data(show_spinner=False, max_entries=16)
def compare_models(source_a: str, source_b: str, prompt: str) -> dict:
    """How model b's computation on the prompt departs from model a's, layer by layer and token by
    token: per-layer cosine distance and relative L2 difference of the residual stream (mean over
    positions), per-position next-token KL(b || a), and each model's top next token."""
    from evals.compare import same_tokenizer

    a, b = data.load_model(source_a), data.load_model(source_b)
    if not same_tokenizer(a.tokenizer, b.tokenizer):
        raise HarnessError(f"{source_a} and {source_b} have different tokenizers; a per-token diff needs a shared one")
    if a.cfg.n_layers != b.cfg.n_layers or a.cfg.d_model != b.cfg.d_model:
        raise HarnessError(f"{source_a} and {source_b} differ in shape ({a.cfg.n_layers}x{a.cfg.d_model} vs "
                           f"{b.cfg.n_layers}x{b.cfg.d_model}); compare a base model with its fine-tune")
    tokens = tokens_for(a, prompt)
    tokens_for(b, prompt)
    names = [f"blocks.{i}.hook_resid_post" for i in range(a.cfg.n_layers)]
    with torch.inference_mode():
        la, ca = a.run_with_cache(tokens, names_filter=names)
        lb, cb = b.run_with_cache(tokens.to(b.device), names_filter=names)
        cos, rel = [], []
        for n in names:
            x, y = ca[n][0].float(), cb[n][0].float().to(ca[n].device)
            cos.append(float((1 - torch.nn.functional.cosine_similarity(x, y, dim=-1)).mean()))
            rel.append(float(((x - y).norm(dim=-1) / x.norm(dim=-1).clamp(min=1e-6)).mean()))
        lpa, lpb = la[0].float().log_softmax(-1), lb[0].float().log_softmax(-1)
        kl = (lpb.exp() * (lpb - lpa)).sum(-1).clamp(min=0)
    decode = a.tokenizer.decode
    return {"cosine_distance": cos, "relative_l2": rel, "kl": kl.tolist(),
            "top_a": [decode([i]) for i in lpa.argmax(-1).tolist()],
            "top_b": [decode([i]) for i in lpb.argmax(-1).tolist()]}


def is_moe(model) -> bool:
    check = getattr(model.cfg, "is_moe_layer", None)
    return bool(check) and any(check(i) for i in range(model.cfg.n_layers))


@st.cache_resource(show_spinner=False, max_entries=16)
def expert_usage(source: str, prompt: str):
    """probes.experts.ExpertUsage of the model on the prompt (MoE models only)."""
    from probes.experts import expert_usage as usage

    model = data.load_model(source)
    return usage(model, tokens_for(model, prompt))


@st.cache_data(show_spinner=False, max_entries=16)
def head_scores(source: str, n: int = 8, seq_len: int = 20) -> dict:
    """probes.circuits.heads.head_scores as numpy: {detector: [n_layers, n_heads]}."""
    from probes.circuits.heads import head_scores as scores

    model = data.load_model(source)
    seq_len = max(2, min(seq_len, (model.cfg.n_ctx - 1) // 2))
    with torch.inference_mode():
        return {k: v.float().numpy() for k, v in scores(model, n=n, seq_len=seq_len).items()}
