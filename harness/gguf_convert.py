"""GGUF -> Hugging Face folder, once per file.

The real pretrained weights we can get offline ship as GGUF files inside registry packages.
transformers can read them (dequantizing to float32), but that takes 20-60 s and the tokenizer
is rebuilt from GGUF metadata every time. So we convert once into an ordinary HF folder
(config.json + model.safetensors + tokenizer files) kept in a cache keyed by the file's sha256,
and every later load is a plain `from_pretrained(folder)` taking about a second.

    folder = convert_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    model = AutoModelForCausalLM.from_pretrained(folder)
"""

import json
import math
import os
import shutil
import struct
import sys
import time
from pathlib import Path

from harness.errors import CheckpointError, UnsupportedArchitectureError
from harness.identity import file_sha256 as file_sha256_uncached
from harness.paths import cache_root

GGUF_MAGIC = b"GGUF"


# -----------------------------------------------------------------------------
# hashing, with a sidecar so a 100+ MB file is read once, not on every load

def _sidecar(cache_dir) -> Path:
    return cache_root(cache_dir) / "gguf" / "sha256.json"


def _write_json_atomic(path: Path, obj) -> None:
    from harness.runs import atomic_write

    text = json.dumps(obj, indent=1).encode("utf-8")
    atomic_write(path, lambda f: f.write(text))


def _file_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cached_sha256(path, cache_dir=None) -> str | None:
    """The digest recorded for this (path, size, mtime), or None; never reads the file."""
    path = Path(path).resolve()
    try:
        table = json.loads(_sidecar(cache_dir).read_text())
        entry = table[str(path)]
        return entry["sha256"] if entry["key"] == _file_key(path) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no sidecar yet, a corrupt one, or a changed file: all mean "hash it"


def file_sha256(path, cache_dir=None) -> str:
    """sha256 of a file, streamed, remembered per (path, size, mtime) in the cache's sidecar."""
    path = Path(path).resolve()
    digest = cached_sha256(path, cache_dir)
    if digest is None:
        digest = file_sha256_uncached(path)
        sidecar = _sidecar(cache_dir)
        try:
            table = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            table = {}
        table[str(path)] = {"key": _file_key(path), "sha256": digest}
        # a concurrent writer may drop our entry; the cost is one re-hash later, never a wrong digest
        _write_json_atomic(sidecar, table)
    return digest


# -----------------------------------------------------------------------------
# checking and loading the GGUF

# GGUF value types (gguf.GGUFValueType) -> struct format; 8 is a string, 9 an array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_tensor_index(path) -> dict[str, tuple[int, tuple, int, int]]:
    """name -> (ggml type, dims, absolute byte offset, byte size) for every tensor, from the header alone.

    gguf.GGUFReader would tell us too, but it builds a numpy view per vocabulary string and takes
    10-40 s on a 262k-token vocabulary; skipping over them with struct takes a fraction of a second.
    """
    import mmap

    import gguf

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        pos = 0

        def take(fmt):
            nonlocal pos
            values = struct.unpack_from("<" + fmt, m, pos)
            pos += struct.calcsize("<" + fmt)
            return values

        def skip(vtype):
            nonlocal pos
            if vtype == 8:
                (n,) = take("Q")  # not `pos += take(...)`: that would add to the old pos
                pos += n
            elif vtype == 9:
                etype, n = take("IQ")
                if etype in _SCALARS:
                    pos += n * struct.calcsize(_SCALARS[etype])
                else:
                    for _ in range(n):
                        skip(etype)
            else:
                pos += struct.calcsize(_SCALARS[vtype])

        _, version, n_tensors, n_kv = take("4sIQQ")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} (only 2 and 3, little-endian, are read)")
        alignment = 32
        for _ in range(n_kv):
            (n,) = take("Q")
            key, pos = m[pos : pos + n], pos + n
            (vtype,) = take("I")
            if key == b"general.alignment":
                alignment = struct.unpack_from("<I", m, pos)[0]
            skip(vtype)
        index = {}
        for _ in range(n_tensors):
            (n,) = take("Q")
            name, pos = m[pos : pos + n].decode(), pos + n
            (n_dims,) = take("I")
            dims = take(f"{n_dims}Q")
            ttype, offset = take("IQ")
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
            index[name] = (ttype, dims, offset, math.prod(dims) // block * type_size)
    data_start = -(-pos // alignment) * alignment  # tensor data starts at the next aligned offset
    return {name: (t, dims, data_start + off, size) for name, (t, dims, off, size) in index.items()}


def check_gguf(path) -> None:
    """Raise CheckpointError unless `path` is a complete GGUF file (header and all tensor data)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"GGUF file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise CheckpointError(f"{path} is not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
    try:
        needed = max((offset + size for _, _, offset, size in gguf_tensor_index(path).values()), default=0)
    except (struct.error, ValueError, KeyError, IndexError, RecursionError) as e:
        raise CheckpointError(f"{path} is a corrupt or truncated GGUF file (bad header: {e})") from None
    size = path.stat().st_size
    if size < needed:
        raise CheckpointError(f"{path} is a corrupt or truncated GGUF file ({size} bytes, its header says {needed})")


def load_gguf(gguf_path):
    """(model, tokenizer) straight from a GGUF file: float32, weights dequantized, on CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_path = Path(gguf_path).resolve()
    folder, name = gguf_path.parent, gguf_path.name
    try:
        # dequantize=True: we want dense float weights to save, even if a GGUF matmul kernel is installed
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except ValueError as e:
        if "not supported" in str(e):
            raise UnsupportedArchitectureError(f"{gguf_path.name}: {e}") from None
        raise CheckpointError(f"could not load {gguf_path}: {e}") from None
    except (OSError, KeyError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"could not load {gguf_path}: {type(e).__name__}: {e}") from None
    model.eval()
    # the GGUF tokenizer comes with an "unlimited" max length; the model's context is the honest one
    tokenizer.model_max_length = model.config.max_position_embeddings
    return model, tokenizer


def _strip_quantizer(model) -> None:
    """Make a GGUF-loaded (already dequantized) model look like an ordinary float model.

    transformers marks it quantized (model.hf_quantizer, config.quantization_config) and
    save_pretrained refuses a GGUF quantizer; the weights themselves are plain float tensors.
    """
    model.hf_quantizer = None
    text_config = model.config.get_text_config()
    for config in [model.config] if text_config is model.config else [model.config, text_config]:
        if hasattr(config, "quantization_config"):
            del config.quantization_config
    # the GGUF loader leaves `architectures` empty, and AutoModelForCausalLM needs it to pick the class
    model.config.architectures = [type(model).__name__]


# -----------------------------------------------------------------------------
# the conversion

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_tmp(parent: Path) -> None:
    """Delete temp folders left by conversions that were killed (their process is gone)."""
    for tmp in parent.glob(".*.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def converted_dir(digest: str, cache_dir=None) -> Path:
    return cache_root(cache_dir) / "gguf" / digest[:16]


def is_converted(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def convert_gguf(gguf_path, cache_dir=None, verbose=True) -> Path:
    """HF-format folder for a GGUF file, converting it on first use. Returns the folder."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise CheckpointError(f"GGUF file not found: {gguf_path}")
    digest = file_sha256(gguf_path, cache_dir)
    target = converted_dir(digest, cache_dir)
    if is_converted(target):
        return target

    check_gguf(gguf_path)
    t0 = time.time()
    if verbose:
        print(f"converting {gguf_path.name} to safetensors (once) -> {target}", file=sys.stderr, flush=True)
    model, tokenizer = load_gguf(gguf_path)
    _strip_quantizer(model)

    # build next to the target and rename: a killed conversion leaves no half-written folder
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(target.parent)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size="20GB")
        tokenizer.save_pretrained(tmp)
        _write_json_atomic(tmp / "gguf_source.json", {"gguf_file": gguf_path.name, "sha256": digest})
        if target.exists() and not is_converted(target):
            shutil.rmtree(target)  # a folder broken by hand; complete ones only ever appear by rename
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_converted(target):  # someone else won the race only if the target is complete
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f"converted {gguf_path.name} in {time.time() - t0:.1f}s", file=sys.stderr, flush=True)
    return target
