"""LoRA adapters (via peft) on a HookedLM's nn.Linear layers, and merging them back.

    add_lora(model, r=8, alpha=16)        # in place: the projections gain adapters, the rest freezes
    train_sft(model, data, ...)           # any recipe trains just the adapters
    merge_lora(model)                     # W += B A * alpha / r; plain nn.Linear again, saveable

peft's `inject_adapter_in_model` works on any torch module, so HookedLM's hooks and forward
are untouched: an adapted projection is still called where the plain one was.
"""

from __future__ import annotations

from harness.errors import ConfigError

# Every projection of attention and the MLP (the LoRA paper's "all linear layers" setting).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def add_lora(model, r: int = 8, alpha: float = 16, dropout: float = 0.0, targets=DEFAULT_TARGETS, seed: int | None = 0):
    """Add LoRA adapters in place (B starts at zero, so outputs are unchanged until trained)."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    present = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    wanted = [t for t in targets if t in present]
    if not wanted:
        raise ConfigError(f"no LoRA targets {list(targets)} among the model's linear layers {sorted(present)}")
    if seed is not None:
        torch.manual_seed(seed)  # A's random init
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=wanted, bias="none")
    inject_adapter_in_model(config, model)  # freezes everything but the adapters
    model.setup()  # re-index submodules (hook points are unchanged)
    return model


def lora_layers(model) -> list[tuple[str, object]]:
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def merge_lora(model):
    """Fold every adapter into its base weight and put the plain nn.Linear back, in place."""
    layers = lora_layers(model)
    if not layers:
        raise ConfigError("the model has no LoRA adapters to merge")
    for name, layer in layers:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    for p in model.parameters():
        p.requires_grad_(True)
    model.setup()
    return model
