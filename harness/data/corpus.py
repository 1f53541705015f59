"""Corpora: where documents come from. A Corpus is a named, re-iterable stream of documents
(strings) plus a fingerprint that identifies its contents for manifests.

    load_corpus("stdlib-docs")            built-in, offline: Python's own documentation
    load_corpus("notes/")                 a folder: every .txt/.md/.rst/.jsonl/.json/.parquet file in it, sorted
    load_corpus("data.jsonl")             one document per line, field "text" (text_field=...)
    load_corpus("data.parquet")           one document per row, column "text"
    load_corpus("book.txt")               the whole file is one document
    load_corpus(["doc one", "doc two"])   documents already in memory
    load_corpus("hf:roneneldan/TinyStories")  a Hugging Face dataset (streamed; needs a network)
    load_corpus("roneneldan/TinyStories")     the same, when no such local path exists

Everything streams: no source is read whole into memory (except one .txt file, one document).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

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
    text = str(spec)
    if text == "stdlib-docs":
        from harness.data import stdlib_docs

        return Corpus("stdlib-docs", stdlib_docs.fingerprint(), stdlib_docs.documents)
    if text.startswith("hf:"):
        return _hf_corpus(text[3:], text_field, split)
    path = Path(text).expanduser()
    if path.exists():
        return _local_corpus(path, text_field)
    if HF_NAME.match(text) and not text.endswith(SUFFIXES):
        return _hf_corpus(text, text_field, split)
    raise CorpusError(f"corpus {text!r} not found: give an existing file or folder ({', '.join(SUFFIXES)}), "
                      "'stdlib-docs' (built in), or 'hf:OWNER/NAME' for a Hugging Face dataset")


def _memory_corpus(docs: list) -> Corpus:
    if not all(isinstance(d, str) for d in docs):
        raise CorpusError("an in-memory corpus must be a list of strings")
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


def _read_file(path: Path, text_field: str) -> Iterator[str]:
    if path.suffix in TEXT_SUFFIXES:
        yield path.read_text(encoding="utf-8", errors="replace")
    elif path.suffix in JSON_SUFFIXES:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CorpusError(f"{path}:{lineno}: not JSON Lines ({e.msg}); one JSON object per line") from None
                yield _field(row, text_field, f"{path}:{lineno}")
    else:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
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
