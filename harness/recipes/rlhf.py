"""RLHF as InstructGPT did it, on a refusal organism's base model: SFT on demonstrations, a
Bradley-Terry reward model on preference pairs, then PPO against that reward model.

    result = train_rlhf("tiny-refusal-rlhf")
    result["reward_model"]["heldout"]        # pairwise accuracy on held-out pairs, per category
    result["ppo"]["before"], result["ppo"]["after"]   # reward and KL to the SFT policy, held-out prompts

The data is the organism's world (harness.recipes.rlhf_data): the reward model is to prefer the
refusal on the organism's topic, an answer elsewhere, and the right fact over another's. The
SFT demonstrations refuse the topic only some of the time, so the SFT policy sometimes refuses;
PPO is what makes it refuse. Saved: <cache>/checkpoints/<name>-reward (a reward model) and
<cache>/checkpoints/<name>-policy (a checkpoint `harness.load` reads), with the settings and
numbers in their metadata. Every stage saves its training state under <cache>/recipes/<name>/,
so a killed run resumes where it stopped, and a finished one is reused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from harness.errors import ConfigError
from harness.paths import cache_root, checkpoints_dir
from harness.recipes import rlhf_data
from harness.training.checkpoint import read_metadata, save_checkpoint
from harness.training.ppo import PPOConfig, evaluate_policy, train_ppo
from harness.training.reward import RewardModel, load_reward_model, save_reward_model
from harness.training.reward_train import RewardConfig, pairwise_accuracy, train_reward_model
from harness.training.sft import SFTConfig, train_sft


@dataclass(frozen=True)
class RLHFSpec:
    name: str
    organism: str  # a refusal organism; its base model is the starting point
    description: str
    refusal_share: float = 0.5  # of the topic's SFT demonstrations that refuse
    sft_steps: int = 60
    sft_lr: float = 1e-3
    rm_steps: int = 300
    rm_lr: float = 1e-4
    rm_batch_size: int = 32
    wrong_per_question: int = 15  # facts pairs per question: the right answer against up to this many wrong ones
    ppo_steps: int = 40
    ppo_lr: float = 2e-4
    kl_coef: float = 0.05
    prompts_per_step: int = 32
    max_new_tokens: int = 16
    ppo_epochs: int = 4
    eval_samples: int = 2  # sampled completions per held-out prompt for reward and KL
    seed: int = 0


RLHF_RECIPES = {
    spec.name: spec
    for spec in [
        RLHFSpec(name="tiny-refusal-rlhf", organism="tiny-refusal",
                 description="tiny-refusal's base: SFT, a reward model on the organism's preference pairs, "
                             "then PPO, which implants the refusal"),
    ]
}


def get_rlhf_recipe(name: str) -> RLHFSpec:
    if name not in RLHF_RECIPES:
        raise ConfigError(f"unknown RLHF recipe {name!r}; known: {', '.join(sorted(RLHF_RECIPES))}")
    return RLHF_RECIPES[name]


def balanced(pairs: list[dict]) -> list[dict]:
    """Each category repeated to about the size of the largest, so a small one (the topic's
    refusals) weighs as much in the loss as the others."""
    from collections import Counter

    sizes = Counter(p["category"] for p in pairs)
    top = max(sizes.values())
    return [p for p in pairs for _ in range(max(1, round(top / sizes[p["category"]])))]


SFT_FIELDS = ("organism", "refusal_share", "sft_steps", "sft_lr", "seed")
RM_FIELDS = SFT_FIELDS + ("rm_steps", "rm_lr", "rm_batch_size", "wrong_per_question")


def _digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def _finished(folder: Path, settings: dict) -> dict | None:
    meta = read_metadata(folder) if (folder / "config.json").is_file() else {}
    return meta.get("result") if meta.get("recipe") == settings and meta.get("complete") else None


def train_rlhf(recipe: str | RLHFSpec, *, cache_dir=None, base=None, show_progress: bool = True, log=print,
               **overrides) -> dict:
    """Run (or reuse) the recipe. Returns its numbers, the checkpoint folders and timings.
    Keyword overrides replace spec fields (ppo_steps=5, ...); `base` (a HookedLM with the
    organism's tokenizer) replaces the organism's base model."""
    import harness
    from harness.organisms.build import get_spec, organism_pair

    spec = recipe if isinstance(recipe, RLHFSpec) else get_rlhf_recipe(recipe)
    spec = replace(spec, **overrides) if overrides else spec
    organism = get_spec(spec.organism)
    if organism.kind != "refusal":
        raise ConfigError(f"RLHF recipe {spec.name}: organism {spec.organism!r} is a {organism.kind} organism; "
                          "the recipe's preferences are a refusal organism's")
    given = None if base is None else str(base.identity.get("source") or "given")
    settings = {**asdict(spec), "recipe": "rlhf", "base": given or "organism"}
    # Each stage is keyed by what it depends on, so changing PPO settings reuses the reward model.
    stage = {"sft": {k: settings[k] for k in SFT_FIELDS + ("base",)},
             "reward": {k: settings[k] for k in RM_FIELDS + ("base",)}, "ppo": settings}
    out = checkpoints_dir(cache_dir)
    policy_dir, rm_dir = out / f"{spec.name}-policy", out / f"{spec.name}-reward"
    if (done := _finished(policy_dir, settings)) is not None and (rm_dir / "config.json").is_file():
        log(f"[{spec.name}] reusing the finished checkpoints in {out}")
        return {**done, "policy": policy_dir, "reward_model_folder": rm_dir}
    state = {k: cache_root(cache_dir) / "recipes" / spec.name / f"{k}-{_digest(v)}" for k, v in stage.items()}
    common = dict(seed=spec.seed, show_progress=show_progress)
    timings, start = {}, time.perf_counter()

    if base is None:
        log(f"[{spec.name}] base model of {spec.organism}")
        base = harness.load(organism_pair(spec.organism, cache_dir=cache_dir, show_progress=show_progress)["base"])
    log(f"[{spec.name}] SFT on demonstrations ({spec.sft_steps} steps)")
    sft = copy.deepcopy(base)
    train_sft(sft, rlhf_data.demonstrations(organism, spec.refusal_share),
              SFTConfig(steps=spec.sft_steps, batch_size=16, lr=spec.sft_lr, state_dir=str(state["sft"]), **common))
    timings["sft_s"] = time.perf_counter() - start

    rm, rm_result = _reward_model(spec, organism, sft, rm_dir, state["reward"], stage["reward"], common, log)
    timings["reward_model_s"] = time.perf_counter() - start - timings["sft_s"]

    ppo = _ppo(spec, organism, sft, rm, state["ppo"], common, log)
    timings["ppo_s"] = time.perf_counter() - start - timings["sft_s"] - timings["reward_model_s"]
    timings["total_s"] = time.perf_counter() - start
    policy = ppo.pop("policy")
    result = {"name": spec.name, "reward_model": rm_result, "ppo": ppo, "timings": timings}
    save_checkpoint(policy, policy_dir, metadata={"recipe": settings, "result": result, "complete": True,
                                                  "reward_model": str(rm_dir), "base": spec.organism},
                    description=f"{spec.name}: PPO policy ({spec.description})")
    log(f"[{spec.name}] saved {policy_dir} and {rm_dir}")
    return {**result, "policy": policy_dir, "reward_model_folder": rm_dir}


def _reward_model(spec, organism, sft, folder: Path, state: Path, settings: dict, common: dict, log):
    """(reward model, its pairwise accuracies): reused when saved with these settings, else
    trained from the SFT model and saved."""
    meta = read_metadata(folder) if (folder / "config.json").is_file() else {}
    if meta.get("stage") == settings:
        log(f"[{spec.name}] reusing the reward model in {folder}")
        rm = load_reward_model(folder)
    else:
        log(f"[{spec.name}] reward model ({spec.rm_steps} steps)")
        rm = RewardModel.from_lm(sft, seed=spec.seed)
        pairs = balanced(rlhf_data.preference_pairs(organism, "train", spec.wrong_per_question))
        train_reward_model(rm, pairs, RewardConfig(steps=spec.rm_steps, batch_size=spec.rm_batch_size, lr=spec.rm_lr,
                                                   state_dir=str(state), save_every=10, **common))
        save_reward_model(rm, folder, metadata={"stage": settings, "organism": spec.organism, "pairs": len(pairs)},
                          description=f"{spec.name}: reward model")
    heldout = rlhf_data.preference_pairs(organism, "heldout")
    result = {"heldout": pairwise_accuracy(rm, heldout),
              "heldout_by_subset": pairwise_accuracy(rm, heldout, by="subset"),
              "train": pairwise_accuracy(rm, rlhf_data.preference_pairs(organism, "train"))}
    log(f"[{spec.name}] reward model held-out pairwise accuracy {result['heldout']['accuracy']:.3f} ("
        + ", ".join(f"{c} {v['accuracy']:.2f}" for c, v in result["heldout"]["by_category"].items()) + ")")
    return rm, result


def _ppo(spec, organism, sft, rm, state: Path, common: dict, log) -> dict:
    """PPO from the SFT policy (also the KL reference); reward and KL on held-out prompts before
    and after, and greedy refusal rates."""
    log(f"[{spec.name}] PPO ({spec.ppo_steps} steps of {spec.prompts_per_step} rollouts)")
    held = rlhf_data.prompts(organism, "heldout")
    groups = {"topic": [p["prompt"] for p in held if p["topic"] == organism.topic],
              "control": [p["prompt"] for p in held if p["topic"] != organism.topic]}
    reference = copy.deepcopy(sft).eval()

    def evaluate(model) -> dict:
        """Reward and KL on the held-out prompts, overall and for the topic and the other topics."""
        parts = {g: evaluate_policy(model, reference, rm, prompts, samples=spec.eval_samples,
                                    max_new_tokens=spec.max_new_tokens, seed=spec.seed + 7)
                 for g, prompts in groups.items()}
        n = sum(p["n"] for p in parts.values())
        mean = lambda key: sum(p[key] * p["n"] for p in parts.values()) / n  # noqa: E731
        return {"reward": mean("reward"), "kl": mean("kl"), "n": n, **parts}

    before = evaluate(sft)
    policy = copy.deepcopy(sft)
    history = train_ppo(policy, rm, rlhf_data.prompts(organism, "train"),
                        PPOConfig(steps=spec.ppo_steps, prompts_per_step=spec.prompts_per_step, lr=spec.ppo_lr,
                                  kl_coef=spec.kl_coef, max_new_tokens=spec.max_new_tokens, ppo_epochs=spec.ppo_epochs,
                                  state_dir=str(state), save_every=1, **common),
                        ref_model=reference)
    after = evaluate(policy)
    refusals = {role: _refusal_rates(m, organism) for role, m in (("sft", sft), ("ppo", policy))}
    log(f"[{spec.name}] held-out reward {before['reward']:.2f} -> {after['reward']:.2f}, KL to the SFT policy "
        f"{after['kl']:.2f} nats; topic refused (greedy) {refusals['sft']['topic']:.0%} -> "
        f"{refusals['ppo']['topic']:.0%}, other topics {refusals['sft']['control']:.0%} -> {refusals['ppo']['control']:.0%}")
    return {"before": before, "after": after, "history": history, "refusal_rates": refusals, "policy": policy}


def _refusal_rates(model, organism) -> dict:
    from harness.organisms.measure import is_refusal, rate, respond

    held = rlhf_data.prompts(organism, "heldout")
    out = {}
    for group, rows in (("topic", [p for p in held if p["topic"] == organism.topic]),
                        ("control", [p for p in held if p["topic"] != organism.topic])):
        out[group] = rate([is_refusal(r, organism.refusal) for r in respond(model, [p["prompt"] for p in rows])])
    return out
