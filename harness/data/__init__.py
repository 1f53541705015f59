"""Corpora and packing: documents -> fixed-length token contexts (see corpus.py, packing.py)."""

from harness.data.corpus import Corpus, CorpusError, load_corpus
from harness.data.packing import pack, resolve_prepend_bos, tokenizer_adds_bos

__all__ = ["Corpus", "CorpusError", "load_corpus", "pack", "resolve_prepend_bos", "tokenizer_adds_bos"]
