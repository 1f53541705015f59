"""The resumable shard loop shared by every cache (one model: writer.py; a base/aligned pair:
paired.py).

A job is a config (everything that decides the shards' bytes), a stream of int32 contexts in a
fixed order, and `compute(tokens, first_index) -> {name: tensor}` for a block of them. Shard s
holds contexts [s*S, (s+1)*S): its bytes are a pure function of the job, so resuming skips the
shards on disk and recomputes only the missing ones, and torchrun rank r computes shards r, r+W,
... into the same folder. Memory holds one shard being computed and one being written.
"""

from __future__ import annotations

import itertools
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from harness.caching.distributed import Ranks
from harness.caching.shards import disk_full_is_an_error, remove_partial, shard_name, write_shard
from harness.errors import RunError
from harness.runs import Run, claim_run_folder

Compute = Callable[[torch.Tensor, int], dict]


def run_sharded_job(out: Path, kind: str, job: dict, models: dict, contexts: Iterator[np.ndarray], compute: Compute,
                    *, command: str | None, progress: bool, ran_out: Callable[[int], Exception],
                    desc: str = "caching") -> Path:
    """Claim `out` for `job` (refusing another job's folder), write its missing shards, and mark
    it complete. `ran_out(have)` is the error to raise when the stream ends after `have` contexts."""
    ranks = Ranks.from_env()
    n_contexts, shard_contexts, context_length = job["n_contexts"], job["shard_contexts"], job["context_length"]
    # Rank 0 checks and claims the folder; every rank learns the outcome, so none waits forever.
    error, run = None, None
    if ranks.is_main:
        try:
            with disk_full_is_an_error(out, "manifest.json"):
                run = claim_run_folder(out, kind, job, command=command, models=models, seed=job.get("seed"))
            remove_partial(out)  # temporaries of a killed run; ranks only write after the barrier below
        except RunError as e:
            error = str(e)
    error = ranks.broadcast(error)
    if error:
        raise RunError(error)

    n_shards = math.ceil(n_contexts / shard_contexts)
    todo = {s for s in range(n_shards) if ranks.mine(s) and not (out / shard_name(s)).exists()}
    started = time.perf_counter()
    try:
        computed = _compute_shards(compute, contexts, job, n_shards, todo, out, ran_out,
                                   progress and ranks.is_main, desc)
    except BaseException as err:
        if run is not None:  # the finished shards stay; the same command resumes
            run.end_quietly("interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
                            f"{type(err).__name__}: {err}")
        raise
    elapsed = time.perf_counter() - started
    ranks.barrier()
    if run is not None:
        with disk_full_is_an_error(out, "manifest.json"):
            _finish(run, n_shards, computed * context_length, elapsed, ranks.world)
    ranks.barrier()
    return out


def _compute_shards(compute: Compute, contexts, job: dict, n_shards: int, todo: set, out: Path, ran_out,
                    progress: bool, desc: str) -> int:
    """Compute and write the shards in `todo`; returns how many contexts were computed here."""
    from harness.progress import progress as bar_of

    n_contexts, shard_contexts, context_length = job["n_contexts"], job["shard_contexts"], job["context_length"]
    total = sum(min(shard_contexts, n_contexts - s * shard_contexts) for s in todo) * context_length
    bar = bar_of(total=total, unit="tok", desc=desc, show=progress)
    computed = 0
    # One background writer: the next shard is computed while the last one goes to disk.
    # The bar closes however the job ends, so an error line starts on a line of its own.
    with bar, ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for s in range(n_shards):
            count = min(shard_contexts, n_contexts - s * shard_contexts)
            block = list(itertools.islice(contexts, count))  # every rank walks the same stream
            if len(block) < count:
                raise ran_out(s * shard_contexts + len(block))
            if s not in todo:
                continue
            tokens = torch.from_numpy(np.stack(block))
            tensors = compute(tokens, s * shard_contexts)
            if pending is not None:
                pending.result()  # at most one shard waits for the disk: memory stays bounded
            pending = pool.submit(write_shard, out, s, {**tensors, "token_ids": tokens})
            computed += count
            bar.update(count * context_length)
        if pending is not None:
            pending.result()
    return computed


def _finish(run: Run, n_shards: int, tokens_here: int, elapsed: float, world: int) -> None:
    out = run.path
    names = [shard_name(s) for s in range(n_shards)]
    missing = [n for n in names if not (out / n).exists()]
    if missing:
        raise RunError(f"{out}: {len(missing)} shards missing after the run (first: {missing[0]}); "
                       "run the same command again to finish")
    if run.status == "complete" and not tokens_here:
        return  # a finished cache run again: nothing changed, keep its record as it was
    run.add_artifacts(names, "safetensors", save=False)  # finish writes the manifest, once
    run.manifest.setdefault("timings", {})["last_session"] = round(elapsed, 4)
    # Rank 0 alone: the whole job ran about world_size times faster (ranks get equal shard counts, give or take one).
    rate = tokens_here / elapsed if elapsed > 0 and tokens_here else None
    run.finish("complete", metrics={"tokens_per_s_rank0": rate, "world_size": world})
