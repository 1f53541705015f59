"""Save a HookedLM as a Hugging Face folder that `harness.load` (and transformers) read back.

    save_checkpoint(model, folder, metadata={"behaviour": ...}, description="...")
    harness.load(folder)             # the normal loading path, nothing special
    read_metadata(folder)            # the sidecar: ground truth, training settings

Layout: config.json, model.safetensors in HF key names, the tokenizer (save_pretrained),
harness.json (our metadata) and zoo.json (what `harness models` shows). A model loaded from a
transformers checkpoint is written back in its own family's layout (its config and original key
names, kept by `harness.load`), so a fine-tuned Gemma 3 or an edited Mixtral saves as what it
was; a model built from scratch is written as a Llama (`LlamaConfig`). The folder is written
beside its target and renamed into place, so a killed save leaves the old checkpoint or the new
one, never half of one.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from harness.errors import CheckpointError

METADATA_FILE = "harness.json"

# Our parameter names -> Hugging Face Llama names (the inverse of families.hf_common.LLAMA_RULES).
_TOP = {"embed.weight": "model.embed_tokens.weight", "ln_final.w": "model.norm.weight", "unembed.weight": "lm_head.weight"}
_BLOCK = {"ln1.w": "input_layernorm.weight", "ln2.w": "post_attention_layernorm.weight"}


def hf_key(name: str) -> str:
    if name in _TOP:
        return _TOP[name]
    _, layer, rest = name.split(".", 2)  # blocks.{i}.<rest>
    if rest in _BLOCK:
        rest = _BLOCK[rest]
    elif rest.startswith("attn."):
        rest = "self_attn." + rest[len("attn."):]
    elif not rest.startswith("mlp."):
        raise CheckpointError(f"cannot save weight {name!r} in the Llama layout")
    return f"model.layers.{layer}.{rest}"


def hf_config(cfg) -> Any:
    """A transformers LlamaConfig equivalent to our ModelConfig (family llama only)."""
    from transformers import LlamaConfig

    if cfg.family != "llama" or not cfg.gated_mlp or cfg.norm != "rmsnorm" or cfg.positional != "rotary":
        raise CheckpointError(
            f"cannot save this {cfg.family!r} model: saving writes either the layout of the transformers checkpoint "
            "a model was loaded from (when its weights were only renamed on the way in) or, for a model built "
            "from scratch, a Llama-style layout")
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta, **(cfg.rope_scaling or {})}
    return LlamaConfig(
        vocab_size=cfg.d_vocab, hidden_size=cfg.d_model, intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.d_head, max_position_embeddings=cfg.n_ctx, rms_norm_eps=cfg.norm_eps,
        hidden_act=cfg.act_fn, attention_bias=cfg.attn_bias, mlp_bias=cfg.mlp_bias,
        tie_word_embeddings=cfg.tie_embeddings, rope_parameters=rope,
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
        architectures=["LlamaForCausalLM"],
    )


def _source_layout(model, names: list[str]):
    """(config, our name -> HF key) from the checkpoint the model was loaded from, if every
    weight was only renamed on the way in; else None."""
    layout = getattr(model, "hf_layout", None)
    if layout is None or any(n not in layout.names for n in names):
        return None
    config = copy.deepcopy(layout.config)
    config.dtype = torch.float32  # what save_checkpoint writes
    return config, layout.names


def save_checkpoint(model, folder, metadata: dict | None = None, description: str = "", tokenizer=None) -> Path:
    """Write `model` (a HookedLM) to `folder` atomically; returns the folder."""
    from safetensors.torch import save_file

    folder = Path(folder).expanduser()
    state = {name: t for name, t in model.state_dict().items()
             if not (name == "unembed.weight" and model.cfg.tie_embeddings)}  # transformers re-ties lm_head
    adapters = [name for name in state if ".lora_" in name or ".base_layer." in name]
    if adapters:
        raise CheckpointError(f"the model still has LoRA adapters ({adapters[0]}, ...); fold them in with "
                              "harness.training.merge_lora(model) before saving")
    source = _source_layout(model, list(state))
    config, key = (source[0], source[1].__getitem__) if source else (hf_config(model.cfg), hf_key)
    weights = {key(name): t.detach().to("cpu", torch.float32).contiguous().clone() for name, t in state.items()}

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        config.save_pretrained(tmp)
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tok = tokenizer if tokenizer is not None else model.tokenizer
        if tok is not None:
            tok.save_pretrained(tmp)
        (tmp / METADATA_FILE).write_text(json.dumps(metadata or {}, indent=2, sort_keys=True))
        zoo = {"family": model.cfg.family, "description": description or "checkpoint saved by the harness"}
        (tmp / "zoo.json").write_text(json.dumps(zoo, indent=2))
        old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
        if folder.exists():
            folder.rename(old)  # two renames: the window without a folder is tiny, never a half folder
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_metadata(folder) -> dict:
    """The metadata saved with a checkpoint ({} for a folder without any)."""
    path = Path(folder).expanduser() / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise CheckpointError(f"corrupt checkpoint metadata {path}: {err}; rebuild the checkpoint") from None
