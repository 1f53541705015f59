"""SAELens training configs by architecture name, with the arguments each one needs.

    sae_config("topk", d_in=576, d_sae=4608, k=32)
    sae_config("standard", d_in=64, d_sae=256, sparsity=5.0)     # sparsity = l1_coefficient
    sae_config("jumprelu", d_in=64, d_sae=256, k=32)             # k = target L0, sparsity = l0_coefficient

`k` is the L0 target of the top-k family and of JumpReLU (its quadratic L0 penalty, and the
thresholds' starting point: see jumprelu_init.py), and the iteration cap of matching pursuit;
`sparsity` is the penalty coefficient of the penalised ones. Anything else goes to the config
class as is (`extra`), after checking it names a real field.
"""

from __future__ import annotations

import dataclasses

from harness.errors import ConfigError

ARCHITECTURES = ("standard", "gated", "topk", "abstopk", "jumprelu", "batchtopk", "matryoshka_batchtopk",
                 "matching_pursuit")
TOPK_FAMILY = ("topk", "abstopk", "batchtopk", "matryoshka_batchtopk")
PENALISED = {"standard": "l1_coefficient", "gated": "l1_coefficient", "jumprelu": "l0_coefficient"}
TARGET_L0 = {"matching_pursuit": "max_iterations", "jumprelu": "target_l0"}  # what k sets besides top-k
DEFAULT_K = 32
DEFAULT_SPARSITY = {"standard": 5.0, "gated": 5.0, "jumprelu": 1.0}


def config_class(arch: str):
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    import sae_lens  # noqa: F401  (registers the built-in architectures)

    if arch not in ARCHITECTURES or arch not in SAE_TRAINING_CLASS_REGISTRY:
        raise ConfigError(f"unknown SAE architecture {arch!r}; use one of {', '.join(ARCHITECTURES)}")
    return SAE_TRAINING_CLASS_REGISTRY[arch][1]


def sae_config(arch: str, d_in: int, d_sae: int, *, k: int | None = None, sparsity: float | None = None,
               normalize: str = "none", extra: dict | None = None, device: str = "cpu", steps: int | None = None):
    """A SAELens TrainingSAEConfig for `arch` (see the module docstring). `steps`, the run's
    length, sets how fast BatchTopK's saved threshold follows training (see below)."""
    cls = config_class(arch)
    if d_in < 1 or d_sae < 1:
        raise ConfigError(f"d_in ({d_in}) and d_sae ({d_sae}) must be positive")
    kwargs: dict = dict(d_in=d_in, d_sae=d_sae, normalize_activations=normalize, device=device)
    if arch in TOPK_FAMILY or arch in TARGET_L0:
        k = DEFAULT_K if k is None else int(k)
        if not 0 < k <= d_sae:
            raise ConfigError(f"k ({k}) must be between 1 and d_sae ({d_sae})")
        kwargs[TARGET_L0.get(arch, "k")] = k
    elif k is not None:
        raise ConfigError(f"{arch} SAEs have no k; set their L1 penalty with sparsity= (--sparsity) instead")
    if arch == "jumprelu":
        # Gemma Scope 2's quadratic penalty around a target L0 (k): the L0 the run asks for, not
        # whatever an L0 coefficient happens to give; extra= can still choose "step" or "tanh".
        kwargs["jumprelu_sparsity_loss_mode"] = "quadratic"
        # The penalty's gradient reaches the encoder too (Anthropic's setup), not the thresholds
        # alone: otherwise the reconstruction loss grows every pre-activation far faster than
        # Adam moves a threshold (SmolLM2, 200k tokens: L0 2,000 of 2,304 instead of 39).
        kwargs["jumprelu_ste_to_input"] = True
    if arch in PENALISED:
        kwargs[PENALISED[arch]] = DEFAULT_SPARSITY[arch] if sparsity is None else float(sparsity)
    elif sparsity is not None:
        raise ConfigError(f"{arch} SAEs take k, not a sparsity penalty")
    if arch == "matryoshka_batchtopk":
        # Nested prefixes of the dictionary, each trained to reconstruct on its own.
        kwargs["matryoshka_widths"] = sorted({max(1, d_sae // 8), max(1, d_sae // 4), max(1, d_sae // 2), d_sae})
    if arch == "matching_pursuit":
        kwargs["decoder_init_norm"] = 1.0  # required by SAELens for this architecture
    fields = {f.name for f in dataclasses.fields(cls)}
    if "topk_threshold_lr" in fields and steps and "topk_threshold_lr" not in (extra or {}):
        # SAELens saves BatchTopK as JumpReLU with a threshold it averages during training, from
        # 0, at 1% a step: a run of a few hundred steps saves it far too low, and the loaded SAE
        # fires several times k features. Averaging at 5/steps leaves e^-5 of that start.
        kwargs["topk_threshold_lr"] = max(0.01, min(0.5, 5.0 / steps))
    for key in extra or {}:
        if key not in fields:
            raise ConfigError(f"{arch} SAE config has no field {key!r}; fields: {', '.join(sorted(fields))}")
    kwargs.update(extra or {})
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad {arch} SAE config: {str(e).splitlines()[0]}") from None
