"""Corpora and packing: sources, BOS handling, held-out split, deterministic shuffle."""

import itertools
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from harness.data import CorpusError, load_corpus, pack, stdlib_docs, tokenizer_adds_bos
from harness.data.packing import is_heldout, pack_tokens, split_documents, tokenize_documents

torch.set_num_threads(1)


def bpe_tokenizer(add_bos: bool) -> PreTrainedTokenizerFast:
    """A small BPE trained on stdlib docs; `add_bos` mimics Llama-style (True) or GPT-2-style tokenizers."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<bos>", "<eos>"], show_progress=False)
    tok.train_from_iterator(itertools.islice(stdlib_docs.documents(), 200), trainer=trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


def word_tokenizer(words) -> PreTrainedTokenizerFast:
    """One id per word: lets a test read off which document a token came from."""
    vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tok_bos():
    return bpe_tokenizer(add_bos=True)


@pytest.fixture(scope="module")
def tok_nobos():
    return bpe_tokenizer(add_bos=False)


def synthetic_docs(n=120):
    # Document i is the word d{i} repeated a varying number of times.
    return [" ".join([f"d{i}"] * (3 + (i * 7) % 40)) for i in range(n)]


# -- corpora ------------------------------------------------------------------------------------

def test_stdlib_docs_is_real_deterministic_text():
    docs = list(stdlib_docs.documents())
    assert len(docs) > 2000 and sum(map(len, docs)) > 1_000_000
    assert len(set(docs)) == len(docs)  # duplicates dropped
    assert docs[:100] == list(itertools.islice(stdlib_docs.documents(), 100))
    text = " ".join(docs[:500]).lower()
    assert all(f" {w} " in text for w in ("the", "return", "and", "of"))
    corpus = load_corpus("stdlib-docs")
    assert corpus.fingerprint["source"] == "stdlib-docs" and next(iter(corpus)) == docs[0]


def test_stdlib_docs_walk_is_stable(tmp_path):
    # The walk itself (not just the cached file) gives the same order every time.
    pkg = tmp_path / "lib"
    (pkg / "b").mkdir(parents=True)
    (pkg / "test").mkdir()
    (pkg / "a.py").write_text('"""Module a docstring, long enough."""\nclass C:\n    """Class C docstring, long enough."""\n'
                              '    def f(self):\n        """Method f docstring, long enough."""\n')
    (pkg / "b" / "notes.rst").write_text("Some reStructuredText notes that are real prose.")
    (pkg / "test" / "t.py").write_text('"""A test module docstring that must be skipped."""')
    docs = [d for d in stdlib_docs.build_documents(pkg) if "long enough" in d or "prose" in d]
    assert docs == ["Module a docstring, long enough.", "Class C docstring, long enough.",
                    "Method f docstring, long enough.", "Some reStructuredText notes that are real prose."]


def test_local_corpora(tmp_path):
    (tmp_path / "one.txt").write_text("a whole file is one document")
    rows = [{"text": "first row"}, {"text": "second row"}, {"other": 1, "text": "third row"}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    import pandas as pd

    pd.DataFrame({"text": ["pq one", "pq two"], "n": [1, 2]}).to_parquet(tmp_path / "t.parquet")
    assert list(load_corpus(tmp_path / "one.txt")) == ["a whole file is one document"]
    assert list(load_corpus(tmp_path / "rows.jsonl")) == ["first row", "second row", "third row"]
    assert list(load_corpus(tmp_path / "t.parquet")) == ["pq one", "pq two"]
    folder = load_corpus(tmp_path)  # sorted: one.txt, rows.jsonl, t.parquet
    assert list(folder) == ["a whole file is one document", "first row", "second row", "third row", "pq one", "pq two"]
    assert folder.fingerprint["files"] == 3


def test_missing_and_malformed_corpora(tmp_path):
    with pytest.raises(CorpusError, match="not found.*stdlib-docs"):
        load_corpus(tmp_path / "nope.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="holds no"):
        load_corpus(tmp_path / "empty")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(CorpusError, match="bad.jsonl:2"):
        list(load_corpus(tmp_path / "bad.jsonl"))
    (tmp_path / "f.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(CorpusError, match="text_field"):
        list(load_corpus(tmp_path / "f.jsonl"))
    assert list(load_corpus(tmp_path / "f.jsonl", text_field="body")) == ["x"]


def test_hf_dataset_offline_is_a_clear_error_not_a_hang():
    code = ("from harness.data import load_corpus\n"
            "try:\n    load_corpus('hf:someone/some-dataset')\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    start = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**_env(), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert time.time() - start < 60
    assert out.stdout.startswith("CorpusError could not load Hugging Face dataset 'someone/some-dataset'"), out.stderr
    assert "offline" in out.stdout.lower() or "OFFLINE" in out.stdout


def _env():
    import os
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


# -- packing and BOS ----------------------------------------------------------------------------

def test_bos_follows_the_tokenizer(tok_bos, tok_nobos):
    assert tokenizer_adds_bos(tok_bos) and not tokenizer_adds_bos(tok_nobos)
    docs = list(itertools.islice(stdlib_docs.documents(), 60))
    for tok, forced, expect in [(tok_bos, None, True), (tok_nobos, None, False), (tok_nobos, True, True),
                                (tok_bos, False, False)]:
        ctxs = list(pack(docs, tok, 16, prepend_bos=forced, shuffle=False, heldout_fraction=0))
        assert len(ctxs) > 20 and all(c.shape == (16,) and c.dtype == np.int32 for c in ctxs)
        starts_with_bos = [c[0] == tok.bos_token_id for c in ctxs]
        assert all(starts_with_bos) if expect else not any(starts_with_bos)
        # The texts come back exactly: BOS only at context starts, EOS between documents.
        body = np.concatenate([c[1:] if expect else c for c in ctxs]).tolist()
        stream = []
        for ids in tokenize_documents(docs, tok):
            stream += ([tok.eos_token_id] if stream else []) + ids
        assert body == stream[:len(body)] and len(stream) - len(body) < (15 if expect else 16)
        assert tok.bos_token_id not in body


def test_pack_tokens_edges():
    ctxs = list(pack_tokens([[5, 6, 7], [8], [9, 10, 11, 12, 13]], 4, bos_id=1, sep_id=2))
    assert [c.tolist() for c in ctxs] == [[1, 5, 6, 7], [1, 2, 8, 2], [1, 9, 10, 11]]  # tail 12, 13 dropped
    assert [c.tolist() for c in pack_tokens([[5, 6, 7, 8, 9]], 2, None, None)] == [[5, 6], [7, 8]]
    long = list(pack_tokens([list(range(100_000))], 1000, None, None))  # one long doc, linear time
    assert len(long) == 100 and long[-1][-1] == 99_999


# -- split and shuffle --------------------------------------------------------------------------

def test_heldout_split_is_disjoint_by_document():
    docs = synthetic_docs()
    docs = docs + docs[:10]  # duplicated documents must land on the same side
    train = list(split_documents(docs, "train", 0.25))
    held = list(split_documents(docs, "heldout", 0.25))
    assert set(train).isdisjoint(held) and sorted(set(train) | set(held)) == sorted(set(docs))
    assert 0.1 < len(set(held)) / len(set(docs)) < 0.4
    # At the token level: no document contributes tokens to both splits' contexts.
    tok = word_tokenizer([f"d{i}" for i in range(120)])
    seen = {}
    for split in ("train", "heldout"):
        ctxs = list(pack(docs, tok, 8, split=split, heldout_fraction=0.25, seed=3))
        seen[split] = set(np.concatenate(ctxs).tolist()) - {tok.bos_token_id, tok.eos_token_id}
    assert seen["train"] and seen["heldout"] and seen["train"].isdisjoint(seen["heldout"])
    # The split does not depend on the shuffle seed.
    assert [is_heldout(d, 0.25) for d in docs] == [d in held for d in docs]


def test_shuffle_is_deterministic_by_seed(tok_nobos):
    docs = list(itertools.islice(stdlib_docs.documents(), 80))

    def run(seed, shuffle=True):
        return [c.tobytes() for c in pack(docs, tok_nobos, 16, seed=seed, shuffle=shuffle, shuffle_buffer=64)]

    a, b, c, plain = run(0), run(0), run(1), run(0, shuffle=False)
    assert a == b and a != c and a != plain
    assert sorted(a) == sorted(c) == sorted(plain)  # same contexts, different order


def test_prefetch_keeps_order_and_errors():
    from harness.data.packing import prefetch

    assert list(prefetch(range(1000), depth=7)) == list(range(1000))

    def broken():
        yield 1
        raise CorpusError("boom")

    it = prefetch(broken())
    assert next(it) == 1
    with pytest.raises(CorpusError, match="boom"):
        next(it)
    early = prefetch(itertools.count())  # an endless producer stops when the consumer does
    assert [next(early) for _ in range(3)] == [0, 1, 2]
    early.close()


# -- datasets objects, save_to_disk folders, undecodable files -----------------------------------

def test_datasets_objects_are_corpora(tmp_path):
    import datasets

    docs = [f"document number {i} about {w}" for i, w in enumerate(["cats", "dogs", "fish", "birds"])]
    ds = datasets.Dataset.from_dict({"text": docs, "n": list(range(4))})
    for spec in (ds, ds.to_iterable_dataset(), ds["text"], datasets.DatasetDict({"train": ds})):
        corpus = load_corpus(spec)
        assert list(corpus) == docs and list(corpus) == docs  # re-iterable, same order
    assert load_corpus(ds).fingerprint["fingerprint"] == ds._fingerprint
    other = datasets.Dataset.from_dict({"body": docs})
    assert list(load_corpus(other, text_field="body")) == docs
    with pytest.raises(CorpusError, match=r"no column 'text' \(columns: body\); pass text_field="):
        load_corpus(other)
    with pytest.raises(CorpusError, match="row 0 is a int, not a string"):
        list(load_corpus(datasets.Dataset.from_dict({"text": ["a", "b"], "n": [1, 2]})["n"]))
    with pytest.raises(CorpusError, match="no split 'train'"):
        load_corpus(datasets.DatasetDict({"test": ds}))
    # a save_to_disk folder, of a Dataset and of a DatasetDict (split=), also through --corpus text
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": ds, "validation": ds.select([0])}).save_to_disk(str(tmp_path / "saved_dict"))
    assert list(load_corpus(str(tmp_path / "saved"))) == docs
    assert load_corpus(tmp_path / "saved").fingerprint["source"] == "datasets-disk"
    assert list(load_corpus(str(tmp_path / "saved_dict"), split="validation")) == docs[:1]
    # packing works on it
    tok = word_tokenizer(" ".join(docs).split())
    assert len(list(pack(load_corpus(ds), tok, 4))) > 0


@pytest.mark.parametrize("name,data,expected", [
    ("bin.txt", b"\x89PNG\r\n\x1a\n\xff\xd8\xff", r"bin\.txt:1: not UTF-8 text \(byte 0x89"),
    ("latin.md", "line one\nline two\ncaf\u00e9\n".encode("latin-1"), r"latin\.md:3: not UTF-8 text \(byte 0xe9"),
    ("nul.txt", b"plain text\n\x00\x00\x00", r"nul\.txt:2: holds a NUL byte"),
    ("rows.jsonl", b'{"text": "fine"}\n{"text": "caf\xe9"}\n', r"rows\.jsonl:2: not UTF-8 text"),
    ("blob.jsonl", bytes(range(256)), r"blob\.jsonl:1: not JSON Lines"),
    ("fake.parquet", b"not a parquet file at all", r"fake\.parquet: not a readable parquet file"),
])
def test_undecodable_corpus_files_name_file_and_line(tmp_path, name, data, expected):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CorpusError, match=expected) as err:
        list(load_corpus(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    # the same through a folder
    with pytest.raises(CorpusError, match=expected):
        list(load_corpus(tmp_path))


def test_cli_binary_corpus_is_one_line(tmp_path, capsys):
    from apps.cli import main as cli_main

    (tmp_path / "c.txt").write_bytes(b"\xff\xfe\x00\x01binary")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["cache", "--model", str(tmp_path / "no-model"), "--corpus", str(tmp_path / "c.txt"),
                  "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
