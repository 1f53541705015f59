"""Corpora: where documents come from. A Corpus is a named, re-iterable stream of documents
(strings) plus a fingerprint that identifies its contents for manifests.

    load_corpus("stdlib-docs")            built-in, offline: Python's own documentation
    load_corpus("notes/")                 a folder: every .txt/.md/.rst/.jsonl/.json/.parquet file in it, sorted
    load_corpus("data.jsonl")             one document per line, field "text" (text_field=...)
    load_corpus("data.parquet")           one document per row, column "text"
    load_corpus("book.txt")               the whole file is one document
    load_corpus(["doc one", "doc two"])   documents already in memory
    load_corpus(dataset)                  a datasets.Dataset or IterableDataset (column "text")
    load_corpus(dataset["text"])          a datasets column (or any sequence of strings)
    load_corpus("saved/")                 a folder written by Dataset.save_to_disk (or a DatasetDict's; split=)
    load_corpus("hf:roneneldan/TinyStories")  a Hugging Face dataset (streamed; needs a network)
    load_corpus("roneneldan/TinyStories")     the same, when no such local path exists

Everything streams: no source is read whole into memory (except one .txt file, one document).
Files must be UTF-8: a binary or otherwise undecodable file is a CorpusError naming the file and line.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from harness.data.jsonl import jsonl_rows
from harness.errors import HarnessError

TEXT_SUFFIXES = (".txt", ".md", ".rst")
JSON_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
SUFFIXES = TEXT_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES
HF_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


class CorpusError(HarnessError):
    """A corpus that cannot be found or read."""


@dataclass
class Corpus:
    name: str
    fingerprint: dict
    _documents: Callable[[], Iterator[str]] = field(repr=False)

    def documents(self) -> Iterator[str]:
        """A fresh pass over the documents, always in the same order."""
        return self._documents()

    def __iter__(self) -> Iterator[str]:
        return self.documents()


def load_corpus(spec: "str | os.PathLike | Corpus", text_field: str = "text", split: str = "train") -> Corpus:
    if isinstance(spec, Corpus):
        return spec
    if isinstance(spec, (list, tuple)):
        return _memory_corpus(list(spec))
    if _is_datasets_object(spec):
        return _datasets_corpus(spec, text_field, split)
    if not isinstance(spec, (str, os.PathLike)):
        if hasattr(spec, "__iter__") and hasattr(spec, "__len__"):  # a datasets Column, a pandas Series, ...
            return _memory_corpus(list(spec))
        raise CorpusError(f"cannot read a corpus from a {type(spec).__name__}: give a path, 'stdlib-docs', 'hf:NAME', "
                          "a list of strings, or a datasets Dataset / IterableDataset / column")
    text = str(spec)
    if text == "stdlib-docs":
        from harness.data import stdlib_docs

        return Corpus("stdlib-docs", stdlib_docs.fingerprint(), stdlib_docs.documents)
    if text.startswith("hf:"):
        return _hf_corpus(text[3:], text_field, split)
    path = Path(text).expanduser()
    if path.is_dir() and _is_saved_dataset(path):
        return _saved_dataset_corpus(path, text_field, split)
    if path.exists():
        return _local_corpus(path, text_field)
    if HF_NAME.match(text) and not text.endswith(SUFFIXES):
        return _hf_corpus(text, text_field, split)
    raise CorpusError(f"corpus {text!r} not found: give an existing file or folder ({', '.join(SUFFIXES)}), "
                      "'stdlib-docs' (built in), or 'hf:OWNER/NAME' for a Hugging Face dataset")


def _memory_corpus(docs: list) -> Corpus:
    bad = next((i for i, d in enumerate(docs) if not isinstance(d, str)), None)
    if bad is not None:
        raise CorpusError(f"an in-memory corpus must be strings; item {bad} is a {type(docs[bad]).__name__}")
    digest = _sha1("\x00".join(docs))
    return Corpus(f"memory:{digest[:12]}", {"source": "memory", "documents": len(docs), "sha1": digest},
                  lambda: iter(docs))


# -- local files ------------------------------------------------------------------------------

def _local_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise CorpusError(f"corpus folder {str(path)!r} holds no {', '.join(SUFFIXES)} files")
    return files


def _local_corpus(path: Path, text_field: str) -> Corpus:
    files = _local_files(path)
    for f in files:
        if f.suffix not in SUFFIXES:
            raise CorpusError(f"corpus file {str(f)!r} has an unknown type; use one of {', '.join(SUFFIXES)}")
    # Size and mtime identify the contents well enough without hashing gigabytes.
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    fingerprint = {"source": "local", "path": str(path.resolve()), "text_field": text_field,
                   "files": len(files), "bytes": sum(s[1] for s in stats),
                   "stat_sha1": _sha1(json.dumps(stats))}

    def documents() -> Iterator[str]:
        for f in files:
            yield from _read_file(f, text_field)

    return Corpus(str(path), fingerprint, documents)


def _not_utf8(path: Path, data: bytes, err: UnicodeDecodeError, line: int | None = None) -> CorpusError:
    line = line if line is not None else data.count(b"\n", 0, err.start) + 1
    return CorpusError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}; a binary file?); "
                       "corpus files must be UTF-8")


def _read_file(path: Path, text_field: str) -> Iterator[str]:
    if path.suffix in TEXT_SUFFIXES:
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _not_utf8(path, data, err) from None
        if "\x00" in text:
            raise CorpusError(f"{path}:{text.count(chr(10), 0, text.index(chr(0))) + 1}: holds a NUL byte "
                              "(a binary file?); corpus files must be UTF-8 text")
        yield text
    elif path.suffix in JSON_SUFFIXES:
        for lineno, row in jsonl_rows(path, CorpusError, "corpus files"):
            yield _field(row, text_field, f"{path}:{lineno}")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as err:
            raise CorpusError(f"{path}: not a readable parquet file ({(str(err).splitlines() or [''])[0]})") from None
        if text_field not in pf.schema_arrow.names:
            raise CorpusError(f"{path}: no column {text_field!r} (columns: {', '.join(pf.schema_arrow.names)}); "
                              "pass text_field=")
        for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
            for value in batch.column(0).to_pylist():
                if value:
                    yield value


def _field(row, text_field: str, where: str) -> str:
    if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
        raise CorpusError(f"{where}: expected an object with a string field {text_field!r}; pass text_field=")
    return row[text_field]


def _sha1(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()


# -- Hugging Face datasets ----------------------------------------------------------------------

def _hf_corpus(name: str, text_field: str, split: str) -> Corpus:
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
                  for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
    repo, _, config = name.partition(":")  # hf:owner/name:config
    try:
        import datasets

        ds = datasets.load_dataset(repo, config or None, split=split, streaming=True)
    except Exception as e:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        why = "HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set and it is not cached" if offline else \
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise CorpusError(f"could not load Hugging Face dataset {repo!r} ({why}); with no network use a "
                          "local file or folder or the built-in 'stdlib-docs'") from None
    fingerprint = {"source": "hf", "name": repo, "config": config or None, "split": split, "text_field": text_field}

    def documents() -> Iterator[str]:
        for i, row in enumerate(ds):
            yield _field(row, text_field, f"{repo} row {i}")

    return Corpus(f"hf:{name}", fingerprint, documents)


# -- datasets objects and save_to_disk folders -------------------------------------------------

def _is_datasets_object(obj) -> bool:
    module = type(obj).__module__ or ""
    return module.startswith("datasets.") and type(obj).__name__ in ("Dataset", "IterableDataset", "DatasetDict",
                                                                      "IterableDatasetDict", "Column", "IterableColumn")


def _datasets_corpus(ds, text_field: str, split: str, name: str | None = None) -> Corpus:
    kind = type(ds).__name__
    if kind in ("DatasetDict", "IterableDatasetDict"):
        if split not in ds:
            raise CorpusError(f"the dataset has no split {split!r} (splits: {', '.join(ds)}); pass split=")
        return _datasets_corpus(ds[split], text_field, split, name)
    if kind in ("Column", "IterableColumn"):
        column = ds

        def documents() -> Iterator[str]:
            for i, value in enumerate(column):
                if not isinstance(value, str):
                    raise CorpusError(f"the datasets column's row {i} is a {type(value).__name__}, not a string")
                yield value

        fp = {"source": "datasets-column", "type": kind, "rows": len(column) if hasattr(column, "__len__") else None}
        return Corpus(name or f"datasets-column:{kind}", fp, documents)
    columns = list(ds.column_names or []) if getattr(ds, "column_names", None) is not None else None
    if columns is not None and text_field not in columns:
        raise CorpusError(f"the dataset has no column {text_field!r} (columns: {', '.join(columns)}); pass text_field=")
    fingerprint = {"source": "datasets", "type": kind, "text_field": text_field,
                   "fingerprint": getattr(ds, "_fingerprint", None),
                   "rows": len(ds) if kind == "Dataset" else None}
    where = name or f"datasets:{getattr(ds, '_fingerprint', None) or kind}"

    def documents() -> Iterator[str]:
        rows = ds.select_columns([text_field]) if kind == "Dataset" else ds
        for i, row in enumerate(rows):
            yield _field(row, text_field, f"{where} row {i}")

    return Corpus(where, fingerprint, documents)


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or ((path / "state.json").is_file()
                                                        and (path / "dataset_info.json").is_file())


def _saved_dataset_corpus(path: Path, text_field: str, split: str) -> Corpus:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as err:  # datasets raises many types on a damaged folder
        raise CorpusError(f"{path}: not a readable save_to_disk folder ({type(err).__name__}: "
                          f"{(str(err).splitlines() or [''])[0]})") from None
    corpus = _datasets_corpus(ds, text_field, split, name=str(path))
    corpus.fingerprint.update(source="datasets-disk", path=str(path.resolve()))
    return corpus
