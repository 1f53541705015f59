"""Train an SAE with SAELens, on the fly from a HookedLM or from a harness activation cache.

    result = train_sae(model, "blocks.3.hook_resid_post", arch="topk", d_sae=1024, k=32,
                       tokens=200_000, corpus="stdlib-docs", out="my-sae")
    result = train_sae(None, "blocks.3.hook_resid_post", arch="topk", d_sae=1024, k=32,
                       tokens=200_000, cache="runs/my-cache", out="my-sae")
    result.sae, result.run.path, result.history

On the fly, SAELens's LanguageModelSAETrainingRunner drives the model (override_model) over the
corpus packed by the harness (override_dataset). From a cache, SAELens's SAETrainer reads
batches straight from the memory-mapped shards: no model, no forward passes. Both write the
SAE into the run folder's `sae/` in SAELens's format (cfg.json, sae_weights.safetensors,
sparsity.safetensors, runner_cfg.json); SAELens's scratch files go to a temporary folder.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.errors import ConfigError
from probes.sae.configs import sae_config
from probes.sae.io import SAE_SUBDIR, hook_width
from probes.sae.progress import Progress


@dataclass
class TrainResult:
    sae: Any  # the trained sae_lens TrainingSAE
    run: Any  # harness.runs.Run holding sae/ and train_log.jsonl
    history: list[dict] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0

    @property
    def path(self) -> Path:
        """The SAELens folder (what SAE.load_from_disk reads)."""
        return self.run.path / SAE_SUBDIR


def train_sae(model, hook: str, *, arch: str = "topk", d_sae: int, tokens: int, corpus=None, cache=None,
              out=None, runs=None, k: int | None = None, sparsity: float | None = None, lr: float = 3e-4,
              batch_tokens: int = 4096, context_length: int = 128, normalize: str = "expected_average_only_in",
              lr_warm_up_steps: int = 0, lr_decay_steps: int | None = None, seed: int = 0, log_every: int = 50,
              autocast: bool = False, skip_positions: int = 0, max_norm: float | None = None,
              progress: bool = True, extra: dict | None = None, command: str | None = None) -> TrainResult:
    """Train one SAE on `hook` (see the module docstring); give exactly one of corpus / cache.

    skip_positions=n leaves out the first n positions of every context (SAELens's seqpos_slice):
    many models park huge-norm "attention sink" activations at position 0, which would otherwise
    dominate the MSE; evaluation then splices the SAE from position n on (recorded in cfg.json).
    max_norm (cache only) leaves out every activation whose L2 norm exceeds it: the sink
    activations that turn up after position 0 too. Recorded in cfg.json's metadata as
    max_activation_norm; evaluation keeps such activations clean."""
    if (corpus is None) == (cache is None):
        raise ConfigError("give either a corpus (train on the fly) or a cache (train from cached activations), "
                          "not both")
    if tokens < batch_tokens:
        raise ConfigError(f"tokens ({tokens}) must be at least one batch ({batch_tokens} tokens)")
    torch.manual_seed(seed)
    if max_norm is not None and cache is None:
        raise ConfigError("max_norm filters cached activations; train from a cache (--from-cache) to use it")
    source = _CacheSource(cache, hook, max_norm) if cache is not None else \
        _ModelSource(model, hook, corpus, context_length)
    steps = tokens // batch_tokens
    if lr_decay_steps is None:
        lr_decay_steps = steps // 5  # the last fifth anneals: cheap, reliably lowers the final loss
    sae_cfg = sae_config(arch, source.d_in, d_sae, k=k, sparsity=sparsity, normalize=normalize, extra=extra,
                         device=source.device)
    cfg = _runner_config(sae_cfg, source, hook, steps * batch_tokens, batch_tokens, lr, lr_warm_up_steps,
                         lr_decay_steps, seed, autocast, skip_positions)
    config = {"hook": hook, "arch": arch, "d_in": source.d_in, "d_sae": d_sae, "k": k, "sparsity": sparsity,
              "tokens": steps * batch_tokens, "batch_tokens": batch_tokens, "steps": steps, "lr": lr,
              "normalize": normalize, "autocast": autocast, "skip_positions": skip_positions, "max_norm": max_norm,
              "context_length": source.context_length, "source": source.describe(), "extra": extra or {}}
    run = _open_run(out, runs, config, seed, command)
    with run:
        for name, identity in source.models().items():
            run.add_model(name, identity)
        scratch = Path(tempfile.mkdtemp(prefix=".saelens-", dir=run.path))
        try:
            cfg.output_path, cfg.checkpoint_path = str(scratch / "sae"), str(scratch / "checkpoints")
            started = time.perf_counter()
            sae, monitor = source.train(cfg, steps, batch_tokens, log_every, progress)
            seconds = time.perf_counter() - started
            _store(run, scratch / "sae")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        run.write_jsonl("train_log.jsonl", monitor.history)
        run.record_timing("train", seconds)
        final = {f"train/{key}": v for key, v in monitor.last.items() if key not in ("step", "seconds")}
        run.finish("complete", metrics={**final, "train/tokens_per_s": steps * batch_tokens / max(seconds, 1e-9)})
    return TrainResult(sae, run, monitor.history, steps * batch_tokens, seconds)


def _open_run(out, runs, config: dict, seed: int, command: str | None):
    from harness.runs import RunStore

    if out is None:
        return RunStore(runs).create("sae", config=config, seed=seed, command=command)
    text = str(out)
    if "/" in text or text.startswith("."):
        path = Path(text).expanduser()
        return RunStore(path.parent).create("sae", name=path.name, config=config, seed=seed, command=command)
    return RunStore(runs).create("sae", name=text, config=config, seed=seed, command=command)


def _store(run, folder: Path) -> None:
    """Copy SAELens's output into the run through the run's atomic writers."""
    for f in sorted(folder.iterdir()):
        fmt = "safetensors" if f.suffix == ".safetensors" else "json"
        run.write_bytes(f"{SAE_SUBDIR}/{f.name}", f.read_bytes(), fmt)


def _runner_config(sae_cfg, source, hook, tokens, batch_tokens, lr, warm_up, decay, seed, autocast, skip):
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig

    ctx = source.context_length
    store_batch = 8
    # SAELens mixes activations in a buffer of n_batches_in_buffer x context tokens; it must hold
    # at least one training batch, and twice that keeps its shuffling meaningful.
    n_buffer = max(2, math.ceil(2 * batch_tokens / ctx))
    n_norm = min(100, max(4, tokens // batch_tokens // 10))  # batches for the activation-scale estimate
    return LanguageModelSAERunnerConfig(
        sae=sae_cfg, model_name=source.model_name, model_class_name="HookedLM", hook_name=hook,
        dataset_path=source.dataset_path, is_dataset_tokenized=True, streaming=False, context_size=ctx,
        prepend_bos=source.prepend_bos, seqpos_slice=(skip, None) if skip else (None,), training_tokens=tokens,
        train_batch_size_tokens=batch_tokens,
        store_batch_size_prompts=store_batch, n_batches_in_buffer=n_buffer, device=source.device, seed=seed,
        lr=lr, lr_warm_up_steps=warm_up, lr_decay_steps=decay, n_checkpoints=0, autocast=autocast,
        logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=n_norm,
        model_from_pretrained_kwargs={}, verbose=False)


class _ModelSource:
    """Activations made on the fly: SAELens's runner runs the HookedLM over the packed corpus."""

    def __init__(self, model, hook, corpus, context_length):
        from harness.data import load_corpus, resolve_prepend_bos

        if model is None:
            raise ConfigError("training on the fly needs a model; pass one, or train from a cache")
        self.model, self.hook, self.context_length = model, hook, context_length
        self.d_in = hook_width(model, hook)  # also raises HookNameError for a hook the model lacks
        self.corpus = load_corpus(corpus)
        self.prepend_bos = resolve_prepend_bos(model.tokenizer, None) if model.tokenizer is not None else False
        self.device = str(next(model.parameters()).device)
        self.model_name = model.identity.get("name") or model.cfg.family
        self.dataset_path = f"harness:{self.corpus.name}"

    def describe(self) -> dict:
        return {"kind": "model", "corpus": {"name": self.corpus.name, **self.corpus.fingerprint}}

    def models(self) -> dict:
        return {self.model_name: dict(self.model.identity)}

    def _dataset(self, n_tokens: int):
        import itertools

        import numpy as np
        from datasets import Dataset

        from harness.data import pack

        # Enough contexts for the run plus the scaling estimate and the buffer; SAELens loops
        # over the dataset when it runs out, so a short corpus repeats rather than fails.
        n = math.ceil(n_tokens * 1.2 / self.context_length) + 64
        contexts = list(itertools.islice(pack(self.corpus, self.model.tokenizer, self.context_length,
                                              shuffle_buffer=min(4096, n)), n))
        if not contexts:
            raise ConfigError(f"corpus {self.corpus.name!r} yields no context of {self.context_length} tokens")
        return Dataset.from_dict({"input_ids": np.stack(contexts).astype(np.int64)})

    def train(self, cfg, steps, batch_tokens, log_every, progress):
        from sae_lens import LanguageModelSAETrainingRunner

        import warnings

        dataset = self._dataset(cfg.training_tokens)
        with warnings.catch_warnings():
            # SAELens compares the dataset's row count (contexts) with the token count and warns
            # of repeated epochs that will not happen: each row holds context_size tokens.
            warnings.filterwarnings("ignore", message="The training dataset contains fewer samples")
            runner = LanguageModelSAETrainingRunner(cfg, override_model=self.model, override_dataset=dataset)
        monitor = Progress(runner.sae, steps, batch_tokens, log_every, progress)
        return runner.run(), monitor


class _CacheSource:
    """Activations read from a harness cache: SAETrainer fed by memory-mapped batches."""

    def __init__(self, cache, hook, max_norm: float | None = None):
        from harness.caching import CachedActivations

        self.max_norm = max_norm
        self.cache = cache if isinstance(cache, CachedActivations) else CachedActivations(cache)
        self.hook = hook
        first = self.cache.activations(hook, 0)  # raises HookNameError for a hook not cached
        if first.dim() != 3:
            raise ConfigError(f"{hook!r} is cached with shape {tuple(first.shape[1:])} per context; "
                              "SAEs train on [position, d] activations")
        self.d_in = int(first.shape[-1])
        self.context_length = self.cache.context_length
        job = self.cache.job
        self.prepend_bos = bool(job.get("prepend_bos", False))
        self.device = "cpu"
        self.model_name = job.get("model", {}).get("name") or "cached-model"
        self.dataset_path = f"harness-cache:{self.cache.path}"

    def describe(self) -> dict:
        return {"kind": "cache", "path": str(self.cache.path), "rows": self.cache.n_rows(self.hook),
                "corpus": self.cache.job.get("corpus")}

    def models(self) -> dict:
        return {self.model_name: dict(self.cache.job.get("model", {}))}

    def batches(self, batch_tokens: int, seed: int, skip: int = 0):
        if not skip and self.max_norm is None:
            for batch in self.cache.stream(self.hook, batch_tokens, seed=seed):
                yield batch.to(torch.float32)
            return
        # Positions are lost once rows are flattened, so slice (and filter) each shard before
        # shuffling: shard order and rows within a shard are shuffled, as CachedActivations does.
        g = torch.Generator().manual_seed(seed)
        leftover = torch.empty(0, self.d_in)
        while True:
            for s in torch.randperm(self.cache.n_shards, generator=g).tolist():
                rows = self.cache.activations(self.hook, s)[:, skip:].reshape(-1, self.d_in).to(torch.float32)
                if self.max_norm is not None:
                    rows = rows[rows.norm(dim=-1) <= self.max_norm]
                rows = torch.cat([leftover, rows[torch.randperm(len(rows), generator=g)]])
                n_full = len(rows) // batch_tokens * batch_tokens
                for i in range(0, n_full, batch_tokens):
                    yield rows[i:i + batch_tokens]
                leftover = rows[n_full:]

    def train(self, cfg, steps, batch_tokens, log_every, progress):
        from sae_lens import TrainingSAE, TrainingSAEConfig
        from sae_lens.training.sae_trainer import SAETrainer

        skip = cfg.seqpos_slice[0] or 0
        rows = self.cache.n_contexts * (self.context_length - skip)
        if cfg.training_tokens > rows and progress:
            print(f"note: {cfg.training_tokens:,} training tokens from a cache of {rows:,}: "
                  f"{cfg.training_tokens / rows:.1f} epochs")
        sae = TrainingSAE.from_dict(TrainingSAEConfig.from_dict(cfg.get_training_sae_cfg_dict()).to_dict())
        _set_metadata(sae, cfg)
        if self.max_norm is not None:
            sae.cfg.metadata.max_activation_norm = float(self.max_norm)
        monitor = Progress(sae, steps, batch_tokens, log_every, progress)
        trainer = SAETrainer(cfg=cfg.to_sae_trainer_config(), sae=sae,
                             data_provider=self.batches(batch_tokens, cfg.seed, skip))
        sae = trainer.fit()
        _save(sae, cfg, trainer)
        return sae, monitor


def _set_metadata(sae, cfg) -> None:
    # What LanguageModelSAETrainingRunner records, so both paths save the same cfg.json.
    meta = sae.cfg.metadata
    meta.model_name, meta.model_class_name, meta.hook_name = cfg.model_name, cfg.model_class_name, cfg.hook_name
    meta.dataset_path, meta.context_size, meta.prepend_bos = cfg.dataset_path, cfg.context_size, cfg.prepend_bos
    meta.seqpos_slice, meta.model_from_pretrained_kwargs = cfg.seqpos_slice, cfg.model_from_pretrained_kwargs


def _save(sae, cfg, trainer) -> None:
    # The same files LanguageModelSAETrainingRunner.save_final_sae writes.
    import json

    from safetensors.torch import save_file
    from sae_lens.constants import RUNNER_CFG_FILENAME, SPARSITY_FILENAME

    folder = Path(cfg.output_path)
    folder.mkdir(parents=True, exist_ok=True)
    sae.save_inference_model(str(folder))
    save_file({"sparsity": trainer.log_feature_sparsity}, folder / SPARSITY_FILENAME)
    (folder / RUNNER_CFG_FILENAME).write_text(json.dumps(cfg.to_dict()))
