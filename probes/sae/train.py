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

Defaults are sink- and outlier-aware (probes.sae.outliers): the first position of every context,
the tokenizer's special tokens, and tokens whose norm is >= norm_ratio (10) x the median are left
out of training; the threshold and the counts go into the run's manifest (`exclusion`,
`excluded`) and the rules into the SAE's cfg.json, which evaluation and feature analysis follow.
Activations are normalised as SAELens does (`normalize`, one of its `normalize_activations`
options, default "expected_average_only_in"); SAELens folds an estimated scale into the weights
at the end, so the saved SAE applies to raw activations, and cfg.json's metadata records which
normalisation training used and the factor (`trained_normalize_activations`, `norm_scaling_factor`).

Resuming: rerunning with the same `out` and the same settings continues a run that was killed or
failed, instead of refusing. From a cache, training checkpoints atomically every
`checkpoint_every` steps (probes.sae.checkpoint) and resumes from the newest checkpoint to the
same weights an uninterrupted run ends with; a damaged checkpoint is refused. On the fly (SAELens's
runner, whose activation buffer cannot be restored exactly) the rerun restarts cleanly in the same
run folder. A complete run, or one with other settings, is refused.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.devices import device_of
from harness.errors import ConfigError, RunError
from probes.sae.checkpoint import Checkpoints
from probes.sae.configs import sae_config
from probes.sae.jumprelu_init import start_thresholds_at_target_l0
from probes.sae.io import SAE_SUBDIR, hook_width
from probes.sae.outliers import Exclusion, check_settings, choose, special_token_ids
from probes.sae.progress import Progress
from probes.sae.settings import TrainSettings

NORM_SAMPLE_CONTEXTS = 64  # contexts the outlier threshold (norm_ratio x median norm) is measured on


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


def train_sae(model, hook: str, settings: TrainSettings | None = None, *, corpus=None, cache=None, out=None,
              runs=None, command: str | None = None, **overrides) -> TrainResult:
    """Train one SAE on `hook` (see the module docstring); give exactly one of corpus / cache.
    `settings` (probes.sae.settings.TrainSettings) says what to train; keyword `overrides` replace
    its fields (`d_sae=`, `tokens=`, `arch=`, ...). Evaluation keeps left-out positions clean."""
    s = TrainSettings.of(settings, overrides)
    if (corpus is None) == (cache is None):
        raise ConfigError("give either a corpus (train on the fly) or a cache (train from cached activations), "
                          "not both")
    if s.tokens < s.batch_tokens:
        raise ConfigError(f"tokens ({s.tokens}) must be at least one batch ({s.batch_tokens} tokens)")
    check_settings(s.skip_positions, s.norm_ratio, s.max_norm)
    torch.manual_seed(s.seed)
    source = _CacheSource(cache, hook, model) if cache is not None else \
        _ModelSource(model, hook, corpus, s.context_length, s.tokens // s.batch_tokens * s.batch_tokens)
    if s.skip_positions >= source.context_length:
        raise ConfigError(f"skip_positions ({s.skip_positions}) leaves nothing of a {source.context_length}-token context")
    if s.exclude_special is True:
        special = special_token_ids(source.tokenizer)
    elif s.exclude_special:
        special = tuple(sorted(int(t) for t in s.exclude_special))
    else:
        special = ()
    steps = s.tokens // s.batch_tokens
    # the last fifth anneals: cheap, reliably lowers the final loss
    lr_decay_steps = steps // 5 if s.lr_decay_steps is None else s.lr_decay_steps
    checkpoint_every = max(1, steps // 10) if s.checkpoint_every is None else s.checkpoint_every
    sae_cfg = sae_config(s.arch, source.d_in, s.d_sae, k=s.k, sparsity=s.sparsity, normalize=s.normalize, extra=s.extra,
                         device=source.device, steps=steps)
    config = {"hook": hook, "arch": s.arch, "d_in": source.d_in, "d_sae": s.d_sae, "k": s.k, "sparsity": s.sparsity,
              "tokens": steps * s.batch_tokens, "batch_tokens": s.batch_tokens, "steps": steps, "lr": s.lr,
              "lr_warm_up_steps": s.lr_warm_up_steps, "lr_decay_steps": lr_decay_steps,
              "normalize": s.normalize, "autocast": s.autocast, "skip_positions": s.skip_positions,
              "exclude_special": list(special), "norm_ratio": s.norm_ratio, "max_norm": s.max_norm,
              "context_length": source.context_length, "source": source.describe(), "extra": s.extra or {}}
    run, resumed = _open_run(out, runs, config, s.seed, command)
    with run:
        for name, identity in source.models().items():
            run.add_model(name, identity)
        for stale in run.path.glob(".saelens-*"):  # a killed attempt's SAELens scratch
            shutil.rmtree(stale, ignore_errors=True)
        exclusion = source.exclusion(s.skip_positions, special, s.norm_ratio, s.max_norm)
        cfg = _runner_config(sae_cfg, source, hook, steps * s.batch_tokens, s.batch_tokens, s.lr, s.lr_warm_up_steps,
                             lr_decay_steps, s.seed, s.autocast, exclusion)
        run.record("exclusion", {**exclusion.describe(), "why": _why(exclusion, source.tokenizer is None)})
        checkpoints = Checkpoints(run.path, checkpoint_every)
        scratch = Path(tempfile.mkdtemp(prefix=".saelens-", dir=run.path))
        try:
            cfg.output_path, cfg.checkpoint_path = str(scratch / "sae"), str(scratch / "checkpoints")
            started = time.perf_counter()
            sae, monitor, counts, resumed_at = source.train(cfg, steps, s.batch_tokens, s.log_every, s.progress, exclusion,
                                                            s.normalize, checkpoints)
            seconds = time.perf_counter() - started
            _store(run, scratch / "sae")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        run.write_jsonl("train_log.jsonl", monitor.history)
        run.record_timing("train", seconds)
        run.record("excluded", counts, save=False)  # the next manifest write (the note's) saves it
        if resumed:
            run.record("resumes", [*run.manifest["resumes"][:-1], {**run.manifest["resumes"][-1], "from_step": resumed_at}],
                       save=False)
        run.add_note(_excluded_note(counts, exclusion))
        checkpoints.remove_all()  # training state is only kept while a run can still resume
        final = {f"train/{key}": v for key, v in monitor.last.items() if key not in ("step", "seconds")}
        run.finish("complete", metrics={**final, "train/tokens_per_s": steps * s.batch_tokens / max(seconds, 1e-9)})
    return TrainResult(sae, run, monitor.history, steps * s.batch_tokens, seconds)


def _why(ex: Exclusion, no_tokenizer: bool) -> dict:
    why = {"position": f"the first {ex.skip_positions} position(s) of each context: attention sinks with massive "
                       "norms" if ex.skip_positions else "no positions skipped",
           "special": f"special tokens {list(ex.special_tokens)} (BOS/EOS/PAD, as SAELens's exclude_special_tokens)"
                      if ex.special_tokens else ("no tokenizer to name special tokens" if no_tokenizer
                                                 else "special tokens kept")}
    if ex.max_norm is None:
        why["norm"] = "no norm threshold"
    elif ex.norm_ratio is not None:
        why["norm"] = (f"activation norm > {ex.norm_ratio:g} x the median norm {ex.median_norm:.4g} "
                       f"= {ex.max_norm:.4g} (massive activations)")
    else:
        why["norm"] = f"activation norm > {ex.max_norm:.4g} (given)"
    return why


def _excluded_note(counts: dict, ex: Exclusion) -> str:
    if "note" in counts:  # on the fly: SAELens drops position / special-token rows before we see them
        thr = f" (threshold {ex.max_norm:.4g})" if ex.max_norm is not None else ""
        return (f"left out of training: the first {ex.skip_positions} position(s) and special tokens "
                f"{list(ex.special_tokens)} (inside SAELens's activation store, not counted), and "
                f"{counts.get('norm', 0):,} activations by norm{thr}; {counts.get('kept', 0):,} trained on")
    total = sum(counts.get(k, 0) for k in ("position", "special", "norm", "kept")) or 1
    parts = [f"{counts.get(k, 0):,} by {k}" for k in ("position", "special", "norm")]
    thr = f", norm threshold {ex.max_norm:.4g}" if ex.max_norm is not None else ""
    return (f"left out of training: {', '.join(parts)} of {total:,} activations read "
            f"({1 - counts.get('kept', 0) / total:.2%}){thr}")


def _open_run(out, runs, config: dict, seed: int, command: str | None):
    """(run, resumed): a new run, or the unfinished run of the same name and settings reopened."""
    from harness.runs import RunStore, dumps, now_iso

    if out is None:
        return RunStore(runs).create("sae", config=config, seed=seed, command=command), False
    text = str(out)
    if "/" in text or text.startswith("."):
        path = Path(text).expanduser()
        store, name = RunStore(path.parent), path.name
    else:
        store, name = RunStore(runs), text
    folder = store.path_of(name)  # a name only: never outside the runs folder, symlinks resolved
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()  # a job killed between making the folder and writing its manifest
    if not folder.exists():
        return store.create("sae", name=name, config=config, seed=seed, command=command), False
    try:
        run = store.open(folder)
    except RunError:
        raise RunError(f"{folder} exists and is not a run (no readable manifest.json); pick another --out") from None
    manifest = run.manifest
    if manifest.get("kind") != "sae":
        raise RunError(f"a {manifest.get('kind')!r} run named {name!r} already exists in {store.root}; "
                       "pick another --out")
    if manifest.get("status") == "complete":
        raise RunError(f"SAE run {name!r} in {store.root} is already complete; pick another --out to train again")
    wanted = json.loads(dumps(config))
    if manifest.get("config") != wanted or manifest.get("seed") != seed:
        old = manifest.get("config") or {}
        differ = sorted(k for k in set(old) | set(wanted) if old.get(k) != wanted.get(k))
        if manifest.get("seed") != seed:
            differ.append("seed")
        raise RunError(f"unfinished SAE run {name!r} in {store.root} has other settings ({', '.join(differ)}); "
                       "rerun its own command to resume it, or pick another --out")
    manifest.setdefault("resumes", []).append({"at": now_iso(), "previous_status": manifest.get("status"),
                                               "previous_error": manifest.get("error")})
    return run.resume(), True


def _store(run, folder: Path) -> None:
    """Copy SAELens's output into the run through the run's atomic writers."""
    for f in sorted(folder.iterdir()):
        fmt = "safetensors" if f.suffix == ".safetensors" else "json"
        run.write_bytes(f"{SAE_SUBDIR}/{f.name}", f.read_bytes(), fmt)


def _runner_config(sae_cfg, source, hook, tokens, batch_tokens, lr, warm_up, decay, seed, autocast,
                   ex: Exclusion):
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig

    ctx = source.context_length
    store_batch = 8
    # SAELens mixes activations in a buffer of n_batches_in_buffer x context tokens; it must hold
    # at least one training batch, and twice that keeps its shuffling meaningful.
    n_buffer = max(2, math.ceil(2 * batch_tokens / (ctx - ex.skip_positions)))
    n_norm = min(100, max(4, tokens // batch_tokens // 10))  # batches for the activation-scale estimate
    return LanguageModelSAERunnerConfig(
        sae=sae_cfg, model_name=source.model_name, model_class_name="HookedLM", hook_name=hook,
        dataset_path=source.dataset_path, is_dataset_tokenized=True, streaming=False, context_size=ctx,
        prepend_bos=source.prepend_bos, seqpos_slice=(ex.skip_positions, None) if ex.skip_positions else (None,),
        exclude_special_tokens=list(ex.special_tokens) if ex.special_tokens else False,
        training_tokens=tokens, train_batch_size_tokens=batch_tokens,
        store_batch_size_prompts=store_batch, n_batches_in_buffer=n_buffer, device=source.device, seed=seed,
        lr=lr, lr_warm_up_steps=warm_up, lr_decay_steps=decay, n_checkpoints=0, autocast=autocast,
        logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=n_norm,
        model_from_pretrained_kwargs={}, verbose=False)


def _record_normalisation(sae, normalize: str) -> None:
    """Note in the SAE's metadata how training normalised activations and, when SAELens folds the
    estimated scale into the weights at the end (expected_average_only_in), the factor it folded."""
    sae.cfg.metadata.trained_normalize_activations = normalize
    fold = sae.fold_activation_norm_scaling_factor

    def fold_and_record(scaling_factor):
        sae.cfg.metadata.norm_scaling_factor = float(scaling_factor)
        fold(scaling_factor)

    sae.fold_activation_norm_scaling_factor = fold_and_record


class _ModelSource:
    """Activations made on the fly: SAELens's runner runs the HookedLM over the packed corpus."""

    def __init__(self, model, hook, corpus, context_length, n_tokens: int):
        from harness.data import load_corpus, resolve_prepend_bos

        if model is None:
            raise ConfigError("training on the fly needs a model; pass one, or train from a cache")
        self.model, self.hook, self.context_length = model, hook, context_length
        self.tokenizer = model.tokenizer
        self.d_in = hook_width(model, hook)  # also raises HookNameError for a hook the model lacks
        self.corpus = load_corpus(corpus)
        self.prepend_bos = resolve_prepend_bos(model.tokenizer, None) if model.tokenizer is not None else False
        self.device = str(device_of(model))
        self.model_name = model.identity.get("name") or model.cfg.family
        self.dataset_path = f"harness:{self.corpus.name}"
        self.n_tokens = n_tokens
        self._data = None

    def describe(self) -> dict:
        return {"kind": "model", "corpus": {"name": self.corpus.name, **self.corpus.fingerprint}}

    def models(self) -> dict:
        return {self.model_name: dict(self.model.identity)}

    def _dataset(self):
        """The packed training contexts (made once: the outlier threshold is measured on their start)."""
        import itertools

        import numpy as np
        from datasets import Dataset

        from harness.data import pack

        if self._data is None:
            # Enough contexts for the run plus the scaling estimate and the buffer; SAELens loops
            # over the dataset when it runs out, so a short corpus repeats rather than fails.
            n = math.ceil(self.n_tokens * 1.2 / self.context_length) + 64
            contexts = list(itertools.islice(pack(self.corpus, self.model.tokenizer, self.context_length,
                                                  shuffle_buffer=min(4096, n)), n))
            if not contexts:
                raise ConfigError(f"corpus {self.corpus.name!r} yields no context of {self.context_length} tokens")
            self._data = np.stack(contexts).astype(np.int64)
        return Dataset.from_dict({"input_ids": self._data})

    def exclusion(self, skip, special, norm_ratio, max_norm) -> Exclusion:
        from harness.caching.hooks import stop_layer

        if norm_ratio is None or max_norm is not None:
            return choose(torch.zeros(1, 1, 1), None, skip_positions=skip, special_tokens=special,
                          norm_ratio=None, max_norm=max_norm)
        self._dataset()
        ids = torch.from_numpy(self._data[:NORM_SAMPLE_CONTEXTS]).to(self.device)
        xs = []
        with torch.inference_mode():
            for i in range(0, len(ids), 8):
                _, c = self.model.run_with_cache(ids[i:i + 8], names_filter=[self.hook],
                                                 stop_at_layer=stop_layer([self.hook], self.model.cfg.n_layers))
                xs.append(c[self.hook].float().cpu())
        return choose(torch.cat(xs), ids.cpu(), skip_positions=skip, special_tokens=special, norm_ratio=norm_ratio,
                      max_norm=None)

    def train(self, cfg, steps, batch_tokens, log_every, progress, ex, normalize, checkpoints):
        from sae_lens import LanguageModelSAETrainingRunner

        import warnings

        checkpoints.remove_all()  # on the fly a rerun restarts cleanly: no checkpoints to resume from
        dataset = self._dataset()
        with warnings.catch_warnings():
            # SAELens compares the dataset's row count (contexts) with the token count and warns
            # of repeated epochs that will not happen: each row holds context_size tokens.
            warnings.filterwarnings("ignore", message="The training dataset contains fewer samples")
            runner = LanguageModelSAETrainingRunner(cfg, override_model=self.model, override_dataset=dataset)
        ex.record(runner.sae)
        _record_normalisation(runner.sae, normalize)
        _start_thresholds(runner.sae)
        counts = {"position": 0, "special": 0, "norm": 0, "kept": 0}
        runner.activations_store = _NormFilter(runner.activations_store, ex.max_norm, batch_tokens, counts)
        monitor = Progress(runner.sae, steps, batch_tokens, log_every, progress)
        sae = runner.run()
        counts["note"] = ("position and special-token rows are dropped inside SAELens's activation store and "
                          "not counted here; norm and kept are exact")
        return sae, monitor, counts, 0


class _NormFilter:
    """SAELens's activation store with rows above max_norm dropped (and re-batched to full
    batches); everything else is the store's own."""

    def __init__(self, store, max_norm: float | None, batch_tokens: int, counts: dict):
        self.store, self.max_norm, self.batch_tokens, self.counts = store, max_norm, batch_tokens, counts
        self.pending = None

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        parts, have = ([self.pending] if self.pending is not None else []), 0
        have = len(self.pending) if self.pending is not None else 0
        while have < self.batch_tokens:
            batch = next(self.store)
            if self.max_norm is not None:
                keep = batch.float().norm(dim=-1) <= self.max_norm
                self.counts["norm"] += int((~keep).sum())
                batch = batch[keep]
            self.counts["kept"] += len(batch)
            parts.append(batch)
            have += len(batch)
        rows = torch.cat(parts)
        self.pending = rows[self.batch_tokens:] if len(rows) > self.batch_tokens else None
        return rows[:self.batch_tokens]

    def __getattr__(self, name):
        return getattr(self.store, name)


class _Provider:
    """The cache's batches for SAELens's SAETrainer, counting what it served; `before_batch` runs
    before each batch is handed out, i.e. between two complete training steps."""

    def __init__(self, batches):
        self.batches, self.served, self.before_batch = batches, 0, None

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        if self.before_batch is not None:
            self.before_batch()
        self.served += 1
        return next(self.batches)

    def fast_forward(self, n: int) -> None:
        for _ in range(n - self.served):
            next(self.batches)
        self.served = n


class _CacheSource:
    """Activations read from a harness cache: SAETrainer fed by memory-mapped batches."""

    def __init__(self, cache, hook, model=None):
        from harness.caching import CachedActivations

        self.cache = cache if isinstance(cache, CachedActivations) else CachedActivations(cache)
        self.hook = hook
        self.tokenizer = getattr(model, "tokenizer", None)
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

    def exclusion(self, skip, special, norm_ratio, max_norm) -> Exclusion:
        n = NORM_SAMPLE_CONTEXTS
        x = self.cache.activations(self.hook, 0)[:n].float()
        return choose(x, self.cache.token_ids(0)[:n], skip_positions=skip, special_tokens=special,
                      norm_ratio=norm_ratio, max_norm=max_norm)

    def train(self, cfg, steps, batch_tokens, log_every, progress, ex, normalize, checkpoints):
        from sae_lens import TrainingSAE, TrainingSAEConfig
        from sae_lens.training.sae_trainer import SAETrainer

        rows = self.cache.n_contexts * (self.context_length - ex.skip_positions)
        if cfg.training_tokens > rows and progress:
            print(f"note: {cfg.training_tokens:,} training tokens from a cache of {rows:,}: "
                  f"{cfg.training_tokens / rows:.1f} epochs")
        sae = TrainingSAE.from_dict(TrainingSAEConfig.from_dict(cfg.get_training_sae_cfg_dict()).to_dict())
        _set_metadata(sae, cfg)
        ex.record(sae)
        _record_normalisation(sae, normalize)
        counts = {"position": 0, "special": 0, "norm": 0, "kept": 0}
        provider = _Provider(self.cache.stream(self.hook, batch_tokens, seed=cfg.seed,
                                               skip_positions=ex.skip_positions, exclude_tokens=ex.special_tokens,
                                               max_norm=ex.max_norm, counts=counts))
        trainer = SAETrainer(cfg=cfg.to_sae_trainer_config(), sae=sae, data_provider=provider)
        monitor = Progress(sae, steps, batch_tokens, log_every, progress)
        checkpoints.clean_staging()
        resumed_at = 0
        latest = checkpoints.latest()  # verified; a damaged one raises
        if latest is not None:
            state = checkpoints.restore(latest, trainer)
            provider.fast_forward(state["served"])
            monitor.step, monitor.history = state["step"], state["history"]
            resumed_at = state["step"]
            if progress:
                print(f"resuming from checkpoint at step {resumed_at}/{steps}")
        else:
            _start_thresholds(sae)  # a resumed run's thresholds come from its checkpoint

        def maybe_checkpoint():
            done = trainer.n_training_steps
            if 0 < done < steps and done % checkpoints.every == 0 and done != resumed_at:
                checkpoints.save(trainer, {"served": provider.served, "history": monitor.history})

        provider.before_batch = maybe_checkpoint
        sae = trainer.fit()
        _save(sae, cfg, trainer)
        return sae, monitor, counts, resumed_at


def _start_thresholds(sae) -> None:
    """JumpReLU: every latent's threshold starts at its target-L0 quantile (see jumprelu_init)."""
    target = getattr(sae.cfg, "target_l0", None)
    if hasattr(sae, "threshold") and target:
        start_thresholds_at_target_l0(sae, target)


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
