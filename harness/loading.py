"""`harness.load`: any source of weights -> a HookedLM with its tokenizer.

Sources: a zoo name, a local Hugging Face folder (config.json + safetensors), a .gguf file, an
in-memory `transformers` model, or an HF id (users with a network). Everything funnels into
`from_state_dict(hf_config, state_dict)`, so every source is converted by the same code.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.errors import CheckpointError, HarnessError, UnknownModelError
from harness.families import family_for
from harness.models.components import rope_inv_freq
from harness.models.transformer import HookedLM


def load(
    source: Any,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    tokenizer: Any = None,
) -> HookedLM:
    """Load a model. See the module docstring for what `source` may be."""
    if not isinstance(source, (str, os.PathLike)):
        return from_hf_model(source, tokenizer=tokenizer, device=device, dtype=dtype)
    text = str(source)
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        from harness import gguf_convert

        if not path.is_file():
            raise CheckpointError(f"GGUF file {path} does not exist")
        return from_folder(gguf_convert.convert_gguf(path), device, dtype, tokenizer, name=path.name)
    if path.is_dir():
        return from_folder(path, device, dtype, tokenizer)
    from harness import zoo

    if text in zoo.known_names():
        return from_folder(zoo.resolve(text), device, dtype, tokenizer, name=text)
    if path.exists() or text.startswith((".", "/", "~")):
        raise CheckpointError(f"{path} is not a model folder (expected config.json and *.safetensors)")
    return from_folder(_download(text, zoo.known_names()), device, dtype, tokenizer, name=text)


def _download(repo_id: str, zoo_names: list[str]) -> Path:
    """Fetch an HF id's safetensors and tokenizer (never pickled weights, never remote code)."""
    not_found = (
        f"{repo_id!r} is not a zoo model, a local folder, or a reachable Hugging Face id; "
        f"zoo models: {', '.join(zoo_names)}"
    )
    if repo_id.count("/") != 1 or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UnknownModelError(not_found)
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model"])
    except Exception as err:  # network, auth, or no such repo: all mean the same to the user
        raise UnknownModelError(f"{not_found} ({type(err).__name__})") from None
    return Path(folder)


def from_folder(
    folder: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    tokenizer: Any = None,
    name: str | None = None,
) -> HookedLM:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} has no config.json; expected a Hugging Face model folder")
    try:
        hf_config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except Exception as err:  # transformers' and huggingface_hub's own validation errors included: bad input
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"cannot read {folder / 'config.json'}: {first}") from None
    family = family_for(hf_config)  # fail on an unsupported architecture before reading weights
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder} holds no *.safetensors weights (pickled .bin files are not loaded)")
    state_dict: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state_dict.update(load_file(file))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"corrupt weights file {file}: {err}; re-download or re-save it") from None
    if tokenizer is None:
        tokenizer = _folder_tokenizer(folder)
    model = from_state_dict(hf_config, state_dict, tokenizer, device, dtype, family=family)
    model.identity.update(name=name or folder.name, source=str(folder))
    return model


def _folder_tokenizer(folder: Path):
    if not any((folder / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception as err:  # a truncated or hand-edited tokenizer file is bad input, not a bug
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"cannot read the tokenizer in {folder}: {type(err).__name__}: {first}; "
                              "re-save it with save_pretrained") from None


def from_hf_model(hf_model, tokenizer=None, device="cpu", dtype=torch.float32) -> HookedLM:
    """Convert an in-memory transformers model (its weights are copied)."""
    config = getattr(hf_model, "config", None)
    if config is None or not hasattr(hf_model, "state_dict"):
        raise HarnessError(
            f"cannot load a {type(hf_model).__name__}; pass a zoo name, a folder, a .gguf path or a transformers model"
        )
    # Clone: sharing storage would let training (or editing) one model silently change the other.
    state_dict = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    model = from_state_dict(config, state_dict, tokenizer, device, dtype)
    model.identity.update(name=getattr(config, "_name_or_path", "") or type(hf_model).__name__, source="in-memory")
    return model


@dataclass
class HFLayout:
    """Where a model's weights came from: the transformers config and, for every weight that was
    only renamed on the way in, its original key."""

    config: Any
    names: dict[str, str]


def from_state_dict(hf_config, state_dict, tokenizer=None, device="cpu", dtype=torch.float32, family=None) -> HookedLM:
    family = family or family_for(hf_config)
    cfg = family.config_from_hf(hf_config)
    hf_name = {id(tensor): key for key, tensor in state_dict.items()}
    weights = family.convert_state_dict(state_dict, cfg)
    # Weights that were only renamed (not split, fused or transposed) can be saved back under
    # their original names; harness.training.save_checkpoint uses this to write any such family.
    renamed = {ours: hf_name[id(tensor)] for ours, tensor in weights.items() if id(tensor) in hf_name}
    builder = getattr(family, "build_model", HookedLM)
    with torch.device("meta"):
        model = builder(cfg, tokenizer)  # no random init: every weight comes from the checkpoint
    expected = set(model.state_dict())
    if cfg.tie_embeddings:
        weights.pop("unembed.weight", None)
        expected.discard("unembed.weight")
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not fit the {cfg.family} config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, value in weights.items():
        want = model.state_dict()[key].shape
        if value.shape != want:
            raise CheckpointError(f"weight {key} has shape {tuple(value.shape)}, config implies {tuple(want)}")
    # DeepSeek's routing bias only ranks experts; like transformers, keep it in float32 so a
    # bf16 load does not turn near-ties into different expert choices.
    cast = {k: v if k.endswith("router.bias") else v.to(dtype) for k, v in weights.items()}
    model.load_state_dict(cast, strict=False, assign=True)
    if cfg.tie_embeddings:
        model.unembed.weight = model.embed.weight
    _rebuild_buffers(model)
    model.setup()  # re-index modules after the weights were assigned
    model.identity["weights_sha256"] = None  # computed when a run records it (harness.identity)
    model.hf_layout = HFLayout(copy.deepcopy(hf_config), renamed)
    return model.to(device).eval()


def _rebuild_buffers(model: HookedLM) -> None:
    """Non-persistent buffers (rotary frequencies) were created on the meta device; recompute them."""
    cfg = model.cfg
    for kind, rotary in getattr(model, "rotary", {}).items():
        sliding = kind == "sliding" and cfg.rope_theta_sliding is not None
        theta = cfg.rope_theta_sliding if sliding else cfg.rope_theta
        scaling = cfg.rope_scaling_sliding if sliding else cfg.rope_scaling
        rotary.inv_freq, rotary.attention_factor = rope_inv_freq(cfg.rotary_dim or cfg.d_head, theta, scaling)
