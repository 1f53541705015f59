"""The crosscoder's shape and its training settings, as plain dataclasses saved to JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from harness.errors import HarnessError

LOSSES = ("l1", "batchtopk")


class CrosscoderError(HarnessError):
    """A crosscoder folder, config or input that does not fit what it is used with."""


@dataclass
class CrosscoderConfig:
    d_in: int  # width of one hooked activation (d_model for the residual stream)
    d_latent: int
    n_layers: int = 1  # hooked layers per model, concatenated into the shared encoder's input
    n_models: int = 2  # (base, aligned)
    loss: str = "batchtopk"
    k: int = 16  # BatchTopK: mean active latents per row
    l1_coeff: float = 1.0  # L1: weight of sum_j f_j * sum_m ||d_j^m||
    aux_k: int = 0  # BatchTopK aux loss: dead latents used to model the residual (0 = d_in // 2)
    aux_coeff: float = 1 / 32
    dead_after: int = 200  # steps without firing before a latent counts as dead
    hooks: tuple = ()  # hook names read in each model (for splicing and for the CLI)
    models: tuple = ("base", "aligned")
    seed: int = 0

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise CrosscoderError(f"crosscoder loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        for name in ("d_in", "d_latent", "n_layers", "n_models"):
            if int(getattr(self, name)) < 1:
                raise CrosscoderError(f"crosscoder {name} must be at least 1; got {getattr(self, name)}")
        if self.loss == "batchtopk" and not 0 < self.k <= self.d_latent:
            raise CrosscoderError(f"BatchTopK k must be in 1..d_latent ({self.d_latent}); got {self.k}")
        self.hooks, self.models = tuple(self.hooks), tuple(self.models)
        if self.hooks and len(self.hooks) != self.n_layers:
            raise CrosscoderError(f"{len(self.hooks)} hooks given for a crosscoder over {self.n_layers} layers")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CrosscoderConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise CrosscoderError(f"crosscoder config has unknown fields {sorted(unknown)}; was it written by another tool?")
        return cls(**d)


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 256  # activation rows per step
    lr: float = 1e-3
    warmup: int = 20
    l1_warmup: int = 0  # L1: ramp the sparsity weight from 0 over this many steps (Anthropic)
    save_every: int = 100  # steps between resumable saves (and at the end)
    log_every: int = 50
    show_progress: bool = True
    normalize: bool = True  # scale each (model, layer) so its mean row norm is sqrt(d_in)

    def to_dict(self) -> dict:
        return asdict(self)
