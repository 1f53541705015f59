"""What an SAE training run is asked to do, as one object (the CLI, benchmarks and notebooks
build it; train_sae reads it). Keyword overrides go through `TrainSettings.of`, so
`train_sae(model, hook, arch="topk", d_sae=1024, k=32, tokens=200_000, ...)` still reads as
before, and a misspelt setting is one ConfigError naming the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import ConfigError
from harness.settings import with_overrides
from probes.sae.outliers import DEFAULT_SKIP_POSITIONS, NORM_RATIO


@dataclass(frozen=True)
class TrainSettings:
    d_sae: int = 0  # latents (required)
    tokens: int = 0  # training tokens (required)
    arch: str = "topk"  # probes.sae.configs.ARCHITECTURES
    k: int | None = None  # the top-k family's k, JumpReLU's target L0, matching pursuit's cap
    sparsity: float | None = None  # L1 (standard, gated) or L0-penalty (JumpReLU) coefficient
    # lr 1e-3: at the few hundred steps a CPU budget allows, 3e-4 leaves a SmolLM2 BatchTopK SAE
    # undertrained (400k tokens: CE recovered 0.55, L0 455 at inference) where 1e-3 reaches 0.90.
    lr: float = 1e-3
    batch_tokens: int = 4096
    context_length: int = 128  # on the fly; a cache has its own
    normalize: str = "expected_average_only_in"  # SAELens's normalize_activations
    lr_warm_up_steps: int = 0
    lr_decay_steps: int | None = None  # default: the last fifth of the run
    seed: int = 0
    log_every: int = 50
    autocast: bool = False
    # Exclusion (probes.sae.outliers): the first positions of every context, the tokenizer's
    # special tokens (True; or a list of ids; False: none), tokens whose norm is >= norm_ratio x
    # the median (None: no norm rule) or above max_norm when that is given.
    skip_positions: int = DEFAULT_SKIP_POSITIONS
    exclude_special: bool | tuple = True
    norm_ratio: float | None = NORM_RATIO
    max_norm: float | None = None
    checkpoint_every: int | None = None  # steps between checkpoints from a cache (default: a tenth)
    progress: bool = True
    extra: dict | None = None  # more SAELens config fields, checked against the config class

    @classmethod
    def of(cls, settings: "TrainSettings | None" = None, overrides: dict | None = None) -> "TrainSettings":
        settings = with_overrides(cls, settings, overrides, "SAE training")
        if settings.d_sae < 1 or settings.tokens < 1:
            raise ConfigError(f"d_sae ({settings.d_sae}) and tokens ({settings.tokens}) must both be given and positive")
        return settings
