"""cache_pair: a base and an aligned model's activations on the same tokens, in one sharded,
resumable cache (what crosscoders and other diffing methods train from).

    cache_pair(base, aligned, "blocks.2.hook_resid_post", "stdlib-docs", 1_000_000, "runs/pair",
               prompts=["How do I ...?", ...], chat_fraction=0.5)
    pair = PairedActivations("runs/pair")            # reader.py's CachedActivations, per model

The contexts mix two streams, each packed as the single-model cache packs a corpus (BOS when
the tokenizer adds one, documents joined by EOS, contexts of exactly context_length tokens):
pretraining-style text from `corpus`, and `prompts` rendered with the chat template as a user
turn plus the generation prompt (plain text when the tokenizer has no template), reshuffled on
every pass over them. Context i is a chat context iff floor((i+1) f) > floor(i f), f the chat
fraction: a fixed interleaving, so the shard layout stays a pure function of the job and
resuming (job.py) gives the bytes of an uninterrupted run.

Shard s holds, for each hook h: `base/h`, `aligned/h` [contexts, L, d] (the cache dtype) and
`norm/base/h`, `norm/aligned/h` [contexts, L] float32 (each row's L2 norm before the cast: the
outlier rule reads these, not the activations); `flags` [contexts, L] uint8 (outliers.FLAG_*:
the first skip_positions positions, the tokenizer's special tokens, chat contexts) and
`token_ids` [contexts, L] int32. Nothing is left out at caching time: the reader applies the
rules (PairedActivations.exclusion), so one cache serves any choice.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from harness.caching import manifest as mf
from harness.caching.hooks import stop_layer
from harness.caching.job import run_sharded_job
from harness.caching.settings import CacheSettings
from harness.caching.outliers import DEFAULT_SKIP_POSITIONS, position_flags, special_token_ids
from harness.caching.writer import FORMAT, job_inputs, parse_dtype, tokenizer_identity
from harness.compat import check_pair
from harness.data.corpus import CorpusError, load_corpus
from harness.data.packing import pack, pack_tokens, prefetch, resolve_prepend_bos, separator_id
from harness.devices import device_of
from harness.errors import HarnessError, HookNameError

ROLES = ("base", "aligned")


def is_chat(i: int, fraction: float) -> bool:
    """Whether context i of the interleaved stream comes from the chat prompts."""
    return math.floor((i + 1) * fraction) > math.floor(i * fraction)


def prompt_ids(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt as a chat user turn with the generation prompt (the template
    writes its own special tokens), or as plain text when the tokenizer has no template."""
    if getattr(tokenizer, "chat_template", None):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                               tokenize=False) for p in prompts]
    else:
        texts = list(prompts)
    ids = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    empty = [p for p, i in zip(prompts, ids) if not i]
    if empty:
        raise HarnessError(f"prompt {empty[0]!r} has no tokens; drop the empty prompts")
    return ids


def chat_contexts(ids: list[list[int]], context_length: int, bos_id, sep_id, seed: int) -> Iterator[np.ndarray]:
    """Endless packed contexts of the prompts, in a fresh seeded order on every pass."""
    def passes():
        for epoch in itertools.count():
            order = list(range(len(ids)))
            random.Random(f"chat:{seed}:{epoch}").shuffle(order)  # a str seed hashes the same in every process
            for i in order:
                yield ids[i]

    return pack_tokens(passes(), context_length, bos_id, sep_id)


def interleave(text: Iterator[np.ndarray], chat: Iterator[np.ndarray] | None, fraction: float) -> Iterator[np.ndarray]:
    for i in itertools.count():
        if chat is not None and is_chat(i, fraction):
            yield next(chat)
        else:
            x = next(text, None)
            if x is None:
                return
            yield x


@torch.inference_mode()
def _forward(model, tokens: torch.Tensor, hooks: list[str], stop, batch_size: int, dtype: torch.dtype):
    """(activations {hook: [n, L, d] dtype}, norms {hook: [n, L] float32}) on CPU, batch by batch.
    The hooks are added once for all the batches (run_with_cache adds and removes them on every
    call, which walks every hook point: a few percent of a small model's forward)."""
    device = device_of(model)
    acts: dict[str, torch.Tensor] = {}
    norms: dict[str, torch.Tensor] = {}
    rows = slice(0, 0)

    def grab(a, hook):
        name = hook.name
        if name not in acts:
            acts[name] = torch.empty((len(tokens), *a.shape[1:]), dtype=dtype)
            norms[name] = torch.empty((len(tokens), a.shape[1]), dtype=torch.float32)
        norms[name][rows].copy_(a.float().norm(dim=-1))  # on the device: one small copy back
        acts[name][rows].copy_(a.to(dtype))

    with model.hooks(fwd_hooks=[(h, grab) for h in hooks]):
        for i in range(0, len(tokens), batch_size):
            batch = tokens[i:i + batch_size].to(device=device, dtype=torch.long)
            rows = slice(i, i + len(batch))
            model(batch, stop_at_layer=stop)
    return acts, norms


def _check_per_position(model, hooks, first: np.ndarray, stop) -> int:
    """Bytes of one context's activations; HookNameError for a hook that is not [pos, d]."""
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.from_numpy(first[None]).long().to(device_of(model)), names_filter=hooks,
                                        stop_at_layer=stop)
    size = 0
    for h in hooks:
        shape = tuple(cache[h].shape[1:])
        if len(shape) != 2 or shape[0] != len(first):
            raise HookNameError(f"{h!r} gives {list(shape)} per context, not [positions, d]; a paired cache holds "
                                "per-position hooks such as blocks.N.hook_resid_post")
        size += shape[0] * shape[1]
    return size


def cache_pair(base, aligned, hooks, corpus, n_tokens: int, out_dir, settings: CacheSettings | None = None, *,
               prompts: Sequence[str] = (), chat_fraction: float | None = None,
               skip_positions: int = DEFAULT_SKIP_POSITIONS, command: str | None = None, **overrides) -> Path:
    """Cache `hooks` (names or globs) of both models over the same n_tokens (rounded up to whole
    contexts): text from `corpus` mixed with chat-formatted `prompts` (chat_fraction of the
    contexts, default 0.5 when prompts are given). Resumes a matching unfinished job in out_dir;
    returns the folder. PairMismatchError (one line) for models of another architecture or
    tokenizer; HookNameError for a hook or layer the models do not have. `settings` and keyword
    `overrides` as for cache_activations."""
    check_pair(base, aligned, what="a paired cache")
    out = Path(out_dir)
    s, names, tokenizer = job_inputs(base, hooks, settings, overrides)
    context_length, batch_size, seed, split = s.context_length, s.batch_size, s.seed, s.split
    prompts = list(prompts)
    fraction = (0.5 if prompts else 0.0) if chat_fraction is None else float(chat_fraction)
    if not 0 <= fraction < 1:
        raise HarnessError(f"chat fraction must be in [0, 1) (the rest is corpus text), not {chat_fraction}")
    if fraction > 0 and not prompts:
        raise HarnessError(f"chat fraction {fraction} needs prompts; give some, or a chat fraction of 0")
    if n_tokens < 1 or batch_size < 1 or skip_positions < 0:
        raise HarnessError(f"tokens ({n_tokens}) and batch size ({batch_size}) must be positive, "
                           f"skip positions ({skip_positions}) at least 0")
    corpus = load_corpus(corpus)
    dtype = parse_dtype(s.dtype)
    n_contexts = math.ceil(n_tokens / context_length)
    n_chat = sum(is_chat(i, fraction) for i in range(n_contexts))
    bos = resolve_prepend_bos(tokenizer, s.prepend_bos)
    bos_id, sep_id = (tokenizer.bos_token_id if bos else None), separator_id(tokenizer)
    shuffle_buffer = max(1, min(s.shuffle_buffer, n_contexts - n_chat))  # never fill more than the job needs
    text = pack(corpus, tokenizer, context_length, prepend_bos=bos, split=split, heldout_fraction=s.heldout_fraction,
                seed=seed, shuffle_buffer=shuffle_buffer)
    chat = chat_contexts(prompt_ids(tokenizer, prompts), context_length, bos_id, sep_id, seed) if fraction else None
    contexts = interleave(text, chat, fraction)
    first = next(contexts, None)
    if first is None:
        raise CorpusError(f"corpus {corpus.name!r} ({split} split) yields not one context of {context_length} tokens")
    contexts = prefetch(itertools.chain([first], contexts), depth=max(256, 2 * batch_size))
    stop = stop_layer(names, base.cfg.n_layers)
    per_context = 2 * _check_per_position(base, names, first, stop) * dtype.itemsize
    shard_contexts = s.shard_contexts
    if shard_contexts is None:
        fit = int(s.shard_mb * 2**20) // max(per_context, 1)
        shard_contexts = max(batch_size, fit // batch_size * batch_size)
    if shard_contexts % batch_size:
        raise HarnessError(f"shard_contexts ({shard_contexts}) must be a multiple of batch_size ({batch_size})")
    special = special_token_ids(tokenizer)
    digest = hashlib.sha256("\x00".join(prompts).encode("utf-8")).hexdigest()
    identities = {role: mf.model_identity(m) for role, m in zip(ROLES, (base, aligned))}
    job = {"format": FORMAT, "models": identities, "tokenizer": tokenizer_identity(tokenizer), "hooks": names,
           "dtype": str(dtype).removeprefix("torch."), "context_length": context_length, "n_contexts": n_contexts,
           "n_tokens": n_contexts * context_length, "batch_size": batch_size, "shard_contexts": shard_contexts,
           "corpus": {"name": corpus.name, **corpus.fingerprint}, "split": split,
           "heldout_fraction": s.heldout_fraction, "prepend_bos": bos, "seed": seed, "shuffle_buffer": shuffle_buffer,
           "stop_at_layer": stop,
           "chat": {"fraction": fraction, "contexts": n_chat, "prompts": len(prompts), "prompts_sha256": digest,
                    "template": bool(getattr(tokenizer, "chat_template", None))},
           "flags": {"skip_positions": skip_positions, "special_tokens": list(special)}}

    def compute(tokens: torch.Tensor, first_index: int) -> dict:
        out = {}
        for role, model in zip(ROLES, (base, aligned)):
            acts, norms = _forward(model, tokens, names, stop, batch_size, dtype)
            for h in names:
                out[f"{role}/{h}"], out[f"norm/{role}/{h}"] = acts[h], norms[h]
        chat_rows = torch.tensor([is_chat(first_index + i, fraction) for i in range(len(tokens))])
        out["flags"] = position_flags(tokens, skip_positions, special, chat_rows)
        return out

    def ran_out(have: int) -> Exception:
        text_have = have - sum(is_chat(i, fraction) for i in range(have))
        return CorpusError(f"corpus {corpus.name!r} ({split} split) gives only {text_have} contexts of "
                           f"{context_length} tokens; ask for fewer tokens (at most about {have * context_length}) "
                           "and delete this --out folder or use a new one")

    return run_sharded_job(out, mf.PAIRED_KIND, job, identities, contexts, compute, command=command,
                           progress=s.progress, ran_out=ran_out, desc="caching pair")
