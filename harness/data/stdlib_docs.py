"""The built-in offline corpus "stdlib-docs": real human-written English from Python's standard
library - module, class and function docstrings, the pydoc topic pages, and the .rst/.txt
documents shipped beside the modules. Every machine with Python has it, so tests and examples
need no network.

The walk is deterministic (sorted paths, source order inside a file) and exact duplicates are
dropped (first occurrence wins), so the same Python gives the same documents in the same order.
Parsing ~700 files takes seconds, so the result is kept as JSONL under the harness cache folder,
keyed by the Python version and the stdlib path.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import sysconfig
from pathlib import Path
from typing import Iterator

from harness.runs import atomic_write

# Test suites are code and fixtures, not prose; Grammar files are not prose either.
SKIP_PARTS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
SKIP_NAMES = {"Grammar.txt", "PatternGrammar.txt"}
MIN_CHARS = 20  # "Return self." and the like carry almost no text


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def cache_dir() -> Path:
    root = os.environ.get("INTERP_HARNESS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "interp-harness")
    return Path(root) / "corpora"


def _docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):  # a few stdlib files are templates or py2 samples
        return
    stack: list[ast.AST] = [tree]  # depth-first in source order, unlike ast.walk's BFS
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc
        stack.extend(reversed([c for c in ast.iter_child_nodes(node)
                               if isinstance(c, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]))


def _pydoc_topics() -> Iterator[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        return
    for key in sorted(topics):
        yield topics[key]


def build_documents(root: Path | None = None) -> Iterator[str]:
    """Walk the stdlib and yield each document once, in a fixed order."""
    root = root or stdlib_root()
    seen: set[bytes] = set()

    def fresh(text: str) -> bool:
        text = text.strip()
        digest = hashlib.sha1(text.encode("utf-8")).digest()
        if len(text) < MIN_CHARS or digest in seen:
            return False
        seen.add(digest)
        return True

    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if SKIP_PARTS.intersection(rel.parts) or path.name in SKIP_NAMES or not path.is_file():
            continue
        if path.suffix == ".py":
            for doc in _docstrings(path):
                if fresh(doc):
                    yield doc.strip()
        elif path.suffix in (".rst", ".txt"):
            text = path.read_text(encoding="utf-8", errors="replace")
            if fresh(text):
                yield text.strip()
    for doc in _pydoc_topics():
        if fresh(doc):
            yield doc.strip()


def cache_path() -> Path:
    key = hashlib.sha1(f"{sys.version}|{stdlib_root()}".encode()).hexdigest()[:12]
    return cache_dir() / f"stdlib-docs-py{sys.version_info[0]}{sys.version_info[1]}-{key}.jsonl"


def documents() -> Iterator[str]:
    """The stdlib-docs documents, building the JSONL cache on first use."""
    path = cache_path()
    if not path.is_file():
        lines = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in build_documents())
        atomic_write(path, lambda f: f.write(lines.encode("utf-8")))
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


def fingerprint() -> dict:
    return {"source": "stdlib-docs", "python": sys.version.split()[0], "stdlib": str(stdlib_root())}
