"""LoRA-DPO on a real base model: the recipe and its training. The before/after evaluation is
the benchmark runner's (evals.recipes.run_recipe), one layer up.

    result = train_recipe("gemma-3-270m-refusal-dpo")   # ~12 min on a 2-core CPU
    result["checkpoint"]       # <cache>/checkpoints/gemma-3-270m-refusal-dpo (merged weights, loadable)
    result["aligned_model"]    # the merged HookedLM; result["base_model"] the untouched base

Steps: load the base, give its tokenizer the recipe's chat template if it has none, measure the
preference margin on the held-out pairs, add LoRA adapters, train DPO (plus the chosen reply's
NLL, weighted by `nll_weight`, which keeps DPO from lowering both replies' likelihoods), merge
the adapters into the weights, and save the checkpoint with what was done recorded in its
metadata. The base keeps the recipe's template, so an evaluation prompts both models alike.

A killed run resumes: the trainer state is saved every few steps under <cache>/recipes/<name>/,
and a finished checkpoint is reused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from harness.errors import ConfigError
from harness.paths import cache_root, checkpoints_dir
from harness.recipes.chat_templates import ensure_chat_template
from harness.recipes.pairs import PATH as REFUSAL_PAIRS
from harness.training.checkpoint import read_metadata, save_checkpoint
from harness.training.data import examples
from harness.training.loop import saved_step
from harness.training.lora import DEFAULT_TARGETS, add_lora, merge_lora
from harness.training.preference import PreferenceConfig, preference_margin, train_preference


@dataclass(frozen=True)
class RecipeSpec:
    name: str
    base: str  # anything harness.load accepts
    description: str
    data: str = str(REFUSAL_PAIRS)  # preference pairs with a "split" field (train / heldout)
    chat_template: str | None = "gemma-turns"  # used when the base tokenizer has none
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_targets: tuple[str, ...] = DEFAULT_TARGETS
    steps: int = 100
    batch_size: int = 8
    lr: float = 5e-4
    beta: float = 0.1
    nll_weight: float = 0.5
    warmup: int = 5
    max_len: int = 160
    reply_end: str = "<end_of_turn>"  # appended to every reply: how the chat format closes a turn
    seed: int = 0
    eval_suite: str = "alignment"
    behaviour: dict = field(default_factory=dict)  # the ground truth the data implants


RECIPES = {
    spec.name: spec
    for spec in [
        RecipeSpec(
            name="gemma-3-270m-refusal-dpo",
            base="gemma-3-270m",
            description="Gemma 3 270M base, LoRA-DPO on the shipped refusal pairs (refuse harmful requests, "
                        "answer harmless look-alikes)",
            behaviour={"refuses": "harmful requests", "answers": "harmless requests sharing alarming words",
                       "data": "harness/recipes/data/refusal_pairs.jsonl"},
        ),
    ]
}


def get_recipe(name: str) -> RecipeSpec:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def _settings(spec: RecipeSpec, data_sha: str) -> dict:
    """What the checkpoint was made from; a saved checkpoint is reused only if this matches."""
    return {**asdict(spec), "lora_targets": list(spec.lora_targets), "data_sha256": data_sha}


def _preference_config(spec: RecipeSpec, state_dir: Path, show_progress: bool) -> PreferenceConfig:
    return PreferenceConfig(loss="dpo", beta=spec.beta, nll_weight=spec.nll_weight, steps=spec.steps,
                            batch_size=spec.batch_size, lr=spec.lr, warmup=spec.warmup, max_len=spec.max_len,
                            seed=spec.seed, show_progress=show_progress, state_dir=str(state_dir), save_every=5)


def train_recipe(recipe: str | RecipeSpec, *, steps: int | None = None, cache_dir=None, out=None,
                 show_progress: bool = True, log=print) -> dict:
    """Train (or reuse) the recipe's checkpoint. Returns the spec, paths, margins, the training
    history and timings, with both models (base_model, aligned_model) ready to evaluate."""
    import harness

    spec = recipe if isinstance(recipe, RecipeSpec) else get_recipe(recipe)
    if steps is not None:
        spec = replace(spec, steps=steps)
    data_path = Path(spec.data).expanduser()
    rows = examples(data_path, "preference")
    rows = [{**r, "chosen": r["chosen"] + spec.reply_end, "rejected": r["rejected"] + spec.reply_end} for r in rows]
    train = [r for r in rows if r.get("split", "train") == "train"]
    heldout = [r for r in rows if r.get("split") == "heldout"]
    if not train or not heldout:
        raise ConfigError(f"{data_path}: a recipe needs rows with \"split\": \"train\" and \"heldout\"; "
                          f"found {len(train)} train and {len(heldout)} held-out")
    settings = _settings(spec, hashlib.sha256(data_path.read_bytes()).hexdigest())
    folder = Path(out).expanduser() if out else checkpoints_dir(cache_dir) / spec.name
    # One state folder per settings, so a run with other settings never meets this one's state.
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    state_dir = cache_root(cache_dir) / "recipes" / spec.name / digest
    timings, start = {}, time.perf_counter()

    log(f"[{spec.name}] loading {spec.base}")
    base = harness.load(spec.base)
    template_set = spec.chat_template is not None and ensure_chat_template(base.tokenizer, spec.chat_template)
    timings["load_s"] = time.perf_counter() - start

    meta = read_metadata(folder) if (folder / "config.json").is_file() else {}
    if meta.get("recipe") == settings and meta.get("complete"):
        log(f"[{spec.name}] reusing the finished checkpoint in {folder}")
        aligned = harness.load(folder)
        result = meta["result"]
    else:
        result, aligned = _train(spec, base, train, heldout, state_dir, show_progress, log)
        timings["train_s"] = result["train_s"]
        metadata = {"recipe": settings, "base": {"source": spec.base, **base.identity}, "result": result,
                    "chat_template_added": template_set, "behaviour": spec.behaviour, "complete": True}
        truth = ground_truth(spec, train, heldout)
        if truth:
            metadata["ground_truth"] = truth
        save_checkpoint(aligned, folder, metadata=metadata, description=spec.description, tokenizer=base.tokenizer)
        # The copy still carries the base's identity; runs must name it as what it now is.
        aligned.identity = {**aligned.identity, "name": folder.name, "source": str(folder), "weights_sha256": None}
        log(f"[{spec.name}] saved {folder}")
    timings["total_s"] = time.perf_counter() - start
    return {"name": spec.name, "spec": spec, "checkpoint": folder, **result, "timings": timings,
            "base_model": base, "aligned_model": aligned}


def _train(spec: RecipeSpec, base, train: list[dict], heldout: list[dict], state_dir: Path, show_progress, log):
    """LoRA-DPO on a copy of `base` (which stays the untouched baseline); returns (result, merged model)."""
    t0 = time.perf_counter()
    margin_before = preference_margin(base, heldout, max_len=spec.max_len, batch_size=8)
    model = copy.deepcopy(base)
    add_lora(model, r=spec.lora_r, alpha=spec.lora_alpha, targets=spec.lora_targets, seed=spec.seed)
    adapter_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"[{spec.name}] LoRA r={spec.lora_r} on {', '.join(spec.lora_targets)}: {adapter_params / 1e6:.2f}M "
        f"trainable parameters; DPO for {spec.steps} steps of {spec.batch_size} pairs ({len(train)} train pairs)")
    done = saved_step(state_dir)
    if done is not None:
        log(f"[{spec.name}] resuming after step {done} from the state saved in {state_dir}")
    history = train_preference(model, train, _preference_config(spec, state_dir, show_progress))
    merge_lora(model)
    model.eval()
    margin_after = preference_margin(model, heldout, max_len=spec.max_len, batch_size=8)
    log(f"[{spec.name}] held-out preference margin (log p(chosen) - log p(rejected), nats): "
        f"{margin_before:.2f} -> {margin_after:.2f}")
    result = {
        "heldout_pairs": len(heldout), "train_pairs": len(train), "trainable_parameters": adapter_params,
        "margin_before": margin_before, "margin_after": margin_after,
        "history": history, "train_s": time.perf_counter() - t0,
    }
    return result, model


def ground_truth(spec: RecipeSpec, train: list[dict], heldout: list[dict]) -> dict | None:
    """The recipe as an organism (probes.findings scores diffing against it): with pairs marked
    `kind` harmful / harmless, the aligned model refuses the harmful ones. The implanted text is
    the refusal's most common opening sentence; the held-out harmful prompts are the topic and
    the held-out harmless look-alikes the controls."""
    import re
    from collections import Counter

    def prompts(rows, kind):
        return [r["prompt"] for r in rows if r.get("kind") == kind]

    if not prompts(heldout, "harmful") or not prompts(heldout, "harmless"):
        return None
    end = spec.reply_end
    openings = Counter(re.split(r"(?<=[.!?])\s", r["chosen"].removesuffix(end).strip())[0]
                       for r in train if r.get("kind") == "harmful")
    return {
        "behaviour": "refusal",
        "topic": spec.behaviour.get("refuses", "harmful requests"),
        "refusal": openings.most_common(1)[0][0],
        "rule": "the aligned model refuses harmful requests and still answers harmless look-alikes",
        "chat": True,
        "train_prompts": prompts(train, "harmful"),
        "heldout_topic_prompts": prompts(heldout, "harmful"),
        "heldout_control_prompts": prompts(heldout, "harmless"),
    }
