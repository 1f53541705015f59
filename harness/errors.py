"""Typed errors. Each one's message is a single line saying what was wrong and how to fix it;
the CLI prints that line and exits non-zero instead of showing a traceback."""


class HarnessError(Exception):
    """Base class for every error the harness raises on bad input."""


class UnknownModelError(HarnessError):
    """A model name that is neither in the zoo nor a path nor a reachable HF id."""


class ModelNotInstalledError(HarnessError):
    """A zoo model whose registry package is not installed."""


class CheckpointError(HarnessError):
    """A checkpoint that is missing, truncated or not what its config says."""


class UnsupportedArchitectureError(HarnessError):
    """A config naming an architecture the harness does not reproduce."""


class ConfigError(HarnessError):
    """A model config whose values contradict each other."""


class UnknownMixerError(ConfigError):
    """A layer pattern naming a token mixer that is not registered (harness.models.mixers)."""


class HookNameError(HarnessError, KeyError):
    """A hook name the model does not have (the message suggests the nearest ones)."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class ShapeError(HarnessError, ValueError):
    """Tensors whose shapes do not fit together."""


class RunError(HarnessError):
    """A run folder that is missing, corrupt, or whose name would escape the runs folder."""
