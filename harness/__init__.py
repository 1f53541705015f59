"""interp-harness core: hooked models, loading, the model zoo, data, caching and the run store."""

from harness.errors import HarnessError

__version__ = "0.1.0"


def load(*args, **kwargs):
    """Load a HookedLM from a zoo name, folder, .gguf file, transformers model or HF id."""
    from harness.loading import load as _load

    return _load(*args, **kwargs)


__all__ = ["load", "HarnessError", "__version__"]
