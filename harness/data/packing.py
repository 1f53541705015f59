"""Tokenise documents and pack them into fixed-length contexts.

Documents are tokenised without special tokens and joined into one stream, separated by the
tokenizer's EOS (or BOS when it has no EOS). The stream is cut into contexts of exactly
`context_length` tokens; when BOS is prepended each context is [BOS] + the next
context_length - 1 stream tokens, so every context starts the way the model saw text in
training. Whether to prepend follows the tokenizer: `prepend_bos=None` prepends iff the
tokenizer's own encode adds a BOS (Llama, Gemma yes; GPT-2, SmolLM2 no); True/False overrides.

The held-out split is by document content: a document is held out iff a hash of its text falls
below `heldout_fraction`, so train and held-out contexts never share a document (duplicates
included), and the split does not change with the shuffle seed. Shuffling is a seeded streaming
shuffle buffer: deterministic for a seed, bounded in memory whatever the corpus size.
"""

from __future__ import annotations

import hashlib
import queue
import random
import threading
from typing import Iterable, Iterator

import numpy as np

from harness.errors import HarnessError

SPLITS = ("train", "heldout", "all")


def tokenizer_adds_bos(tokenizer) -> bool:
    """True when tokenizer("...") with its defaults starts with its BOS token."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("hello world", add_special_tokens=True)["input_ids"]
    return len(ids) > 0 and ids[0] == bos


def resolve_prepend_bos(tokenizer, prepend_bos: bool | None) -> bool:
    if prepend_bos is None:
        return tokenizer_adds_bos(tokenizer)
    if prepend_bos and getattr(tokenizer, "bos_token_id", None) is None:
        raise HarnessError("prepend_bos=True but the tokenizer has no BOS token; use prepend_bos=False or None")
    return bool(prepend_bos)


def separator_id(tokenizer) -> int | None:
    for attr in ("eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return None


def is_heldout(text: str, fraction: float) -> bool:
    if fraction <= 0:
        return False
    # A fixed salt, not the seed: the split must stay put when the shuffle seed changes.
    h = int.from_bytes(hashlib.sha1(b"heldout:" + text.encode("utf-8")).digest()[:8], "big")
    return h / 2**64 < fraction


def split_documents(documents: Iterable[str], split: str = "train", heldout_fraction: float = 0.0) -> Iterator[str]:
    if split not in SPLITS:
        raise HarnessError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    for doc in documents:
        if split == "all" or is_heldout(doc, heldout_fraction) == (split == "heldout"):
            yield doc


def tokenize_documents(documents: Iterable[str], tokenizer, batch_docs: int = 128) -> Iterator[list[int]]:
    """Token ids of each document, without special tokens; batched for the fast tokenizers."""
    batch: list[str] = []
    for doc in documents:
        batch.append(doc)
        if len(batch) == batch_docs:
            yield from _encode(tokenizer, batch)
            batch = []
    if batch:
        yield from _encode(tokenizer, batch)


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and getattr(tokenizer, "is_fast", False) and backend.truncation is None \
            and backend.padding is None:
        # The Rust tokenizer directly: the same ids as tokenizer(...), about twice as fast.
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    # verbose=False: long documents are fine here, they get cut into contexts afterwards.
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def pack_tokens(token_docs: Iterable[list[int]], context_length: int, bos_id: int | None,
                sep_id: int | None) -> Iterator[np.ndarray]:
    """Cut the separator-joined token stream into int32 contexts of exactly context_length tokens."""
    body = context_length - (1 if bos_id is not None else 0)
    if body < 1:
        raise HarnessError(f"context_length {context_length} leaves no room for text; use at least 2")
    buf: list[int] = []
    first = True
    for ids in token_docs:
        if not first and sep_id is not None:
            buf.append(sep_id)
        first = False
        buf.extend(ids)
        start = 0  # walk an offset instead of re-slicing: long documents stay linear time
        while len(buf) - start >= body:
            chunk = buf[start:start + body]
            start += body
            if bos_id is not None:
                chunk = [bos_id] + chunk
            yield np.asarray(chunk, dtype=np.int32)
        del buf[:start]
    # The last partial context is dropped: padding would put fake tokens in the cache.


def shuffle_stream(items: Iterable, seed: int, buffer_size: int) -> Iterator:
    """Seeded streaming shuffle: keep `buffer_size` items, emit a random one per new arrival."""
    rng = random.Random(seed)
    buf: list = []
    for item in items:
        if len(buf) < buffer_size:
            buf.append(item)
            continue
        j = rng.randrange(buffer_size)
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


def pack(corpus, tokenizer, context_length: int, *, prepend_bos: bool | None = None, split: str = "train",
         heldout_fraction: float = 0.05, seed: int = 0, shuffle: bool = True,
         shuffle_buffer: int = 4096) -> Iterator[np.ndarray]:
    """The contexts of a corpus split, as int32 arrays of length context_length, in a fixed order
    for a given (corpus, tokenizer, settings, seed)."""
    from harness.data.corpus import load_corpus

    corpus = load_corpus(corpus)
    if tokenizer is None:
        raise HarnessError("packing needs a tokenizer; the model has none (pass tokenizer= when loading it)")
    bos_id = tokenizer.bos_token_id if resolve_prepend_bos(tokenizer, prepend_bos) else None
    docs = split_documents(corpus.documents(), split, heldout_fraction)
    contexts = pack_tokens(tokenize_documents(docs, tokenizer), context_length, bos_id, separator_id(tokenizer))
    return shuffle_stream(contexts, seed, shuffle_buffer) if shuffle else contexts


def prefetch(items: Iterable, depth: int = 1024) -> Iterator:
    """Produce `items` in a background thread, at most `depth` ahead: tokenising (Rust, which
    releases the GIL) overlaps the model's forward. Same order, same items; errors re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for x in items:
                if not put((None, x)):
                    return
            put((None, end))
        except BaseException as e:  # handed to the consumer, raised there
            put((e, None))

    threading.Thread(target=work, daemon=True, name="prefetch").start()
    try:
        while True:
            err, x = q.get()
            if err is not None:
                raise err
            if x is end:
                return
            yield x
    finally:
        stop.set()  # the consumer stopped early: let the producer exit
