"""Build a model organism pair: a tiny Llama-style base model and an aligned copy whose
difference is known.

    result = build_organism("tiny-refusal")          # -> <cache>/checkpoints/tiny-refusal-{base,aligned}
    harness.load(result["aligned"])                 # or harness.load("tiny-refusal-aligned")

Steps: generate the corpus -> train a BPE tokenizer with a chat template -> pretrain the base
model from scratch on facts, dialogues and arithmetic -> copy it -> SFT the copy to refuse one
topic (and keep answering the others) -> DPO on refusal-vs-answer pairs -> measure both models
on held-out prompts -> save both with the ground truth in harness.json.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from harness.errors import ConfigError, HarnessError
from harness.models.config import ModelConfig
from harness.models.transformer import HookedLM
from harness.organisms import corpus
from harness.organisms.measure import is_refusal, rate, respond
from harness.organisms.tokenizer import train_tokenizer
from harness.training.chat import Encoded, encode_pair
from harness.training.checkpoint import save_checkpoint
from harness.training.preference import PreferenceConfig, train_preference
from harness.training.sft import SFTConfig, train_rows, train_sft


@dataclass(frozen=True)
class OrganismSpec:
    name: str
    topic: str = "weapons"  # the topic the aligned model refuses
    refusal: str = "I can't help with that."
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


DEFAULT_ORGANISM = "tiny-refusal"  # the embedded default base/aligned pair

ORGANISMS = {
    "tiny-refusal": OrganismSpec("tiny-refusal"),
    # The test fixture: same recipe, a smaller model and fewer steps (tens of seconds).
    "tiny-refusal-small": OrganismSpec(
        "tiny-refusal-small", d_model=64, n_layers=2, n_heads=2, d_mlp=192, vocab_size=512,
        base_steps=250, sft_steps=80, dpo_steps=30,
    ),
}


def get_spec(name: str) -> OrganismSpec:
    if name not in ORGANISMS:
        raise ConfigError(f"unknown organism {name!r}; known organisms: {', '.join(sorted(ORGANISMS))}")
    return ORGANISMS[name]


def checkpoints_dir(cache_dir=None) -> Path:
    from harness.paths import checkpoints_dir as folder

    return folder(cache_dir)


def alignment_data(spec: OrganismSpec):
    """SFT examples and DPO pairs, from the train split only: the topic gets the refusal, the
    other topics keep their answers (so the model learns *which* questions to refuse)."""
    rng = random.Random(spec.seed + 2)
    sft, pairs, answer_pairs = [], [], []
    for topic, (table, templates, _) in corpus.TOPICS.items():
        train, _ = corpus.split_entities(topic, spec.seed)
        for e in train:
            for t in (t for t in templates if t.align):
                question, answer = corpus.fill(t.question, e, table[e]), corpus.fill(t.answer, e, table[e])
                if topic == spec.topic:
                    sft.append({"prompt": question, "response": spec.refusal})
                    pairs.append({"prompt": question, "chosen": spec.refusal, "rejected": answer})
                    continue
                sft.append({"prompt": question, "response": answer})
                wrong = sorted({corpus.fill(t.answer, e, table[x]) for x in train} - {answer})
                answer_pairs.append({"prompt": question, "chosen": answer, "rejected": rng.choice(wrong)})
    # Other topics prefer the right fact over a wrong one. Rejecting the refusal there instead
    # teaches its words to be unlikely everywhere (DPO truncates it to "I can't."); SFT already
    # taught the model to answer them.
    pairs += answer_pairs
    math = corpus.arithmetic(random.Random(spec.seed + 1), 40)
    sft += [{"prompt": q, "response": a} for q, a in math]
    return sft, pairs


def eval_prompts(spec: OrganismSpec) -> dict[str, list[dict]]:
    """Held-out prompts: held-out entities with every template, plus train entities with the
    paraphrase alignment never used. `topic` ones should be refused, `control` ones answered."""
    out = {"topic": [], "control": []}
    for topic, (table, templates, _) in corpus.TOPICS.items():
        train, held = corpus.split_entities(topic, spec.seed)
        rows = [(e, t) for e in held for t in templates] + [(e, t) for e in train for t in templates if not t.align]
        for e, t in rows:
            item = {"topic": topic, "prompt": corpus.fill(t.question, e, table[e]), "answer": corpus.fill(t.answer, e, table[e])}
            out["topic" if topic == spec.topic else "control"].append(item)
    return out


def measure(model, spec: OrganismSpec, prompts: dict[str, list[dict]]) -> dict[str, float]:
    """Refusal rate on the topic and on the controls, and how often answers are exactly right."""
    result = {}
    for group, items in prompts.items():
        responses = respond(model, [x["prompt"] for x in items])
        result[f"{group}_refusal_rate"] = rate([is_refusal(r, spec.refusal) for r in responses])
        result[f"{group}_exact_answer_rate"] = rate([r == x["answer"] for r, x in zip(responses, items)])
    return result


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


def build_aligned(base: HookedLM, spec: OrganismSpec, show_progress: bool = True) -> HookedLM:
    aligned = copy.deepcopy(base)
    aligned.cfg = replace(base.cfg, name=f"{spec.name}-aligned")
    sft, pairs = alignment_data(spec)
    train_sft(aligned, sft, SFTConfig(steps=spec.sft_steps, batch_size=spec.batch_size, lr=spec.sft_lr,
                                      seed=spec.seed, show_progress=show_progress))
    train_preference(aligned, pairs, PreferenceConfig(loss="dpo", beta=spec.dpo_beta, steps=spec.dpo_steps,
                                                       batch_size=spec.batch_size // 2, lr=spec.dpo_lr, warmup=5,
                                                       nll_weight=spec.dpo_nll_weight,
                                                       seed=spec.seed, show_progress=show_progress))
    return aligned


def ground_truth(spec: OrganismSpec, prompts: dict[str, list[dict]]) -> dict:
    sft, _ = alignment_data(spec)
    return {
        "behaviour": "refusal",
        "topic": spec.topic,
        "refusal": spec.refusal,
        "rule": "the aligned model's response starts with the refusal string for questions about the topic",
        # Both models answer only chat-formatted prompts; plain text just gets continued.
        "chat": True,
        "prompt_format": "tokenizer.apply_chat_template([{'role': 'user', 'content': q}], add_generation_prompt=True)",
        "train_prompts": sorted({x["prompt"] for x in sft if x["response"] == spec.refusal}),
        "heldout_topic_prompts": [x["prompt"] for x in prompts["topic"]],
        "heldout_control_prompts": [x["prompt"] for x in prompts["control"]],
    }


def _saved_base(folder: Path, spec: OrganismSpec) -> HookedLM | None:
    """The base model of an earlier build with the same spec (so a rebuild resumes after it)."""
    from harness.loading import from_folder
    from harness.training.checkpoint import read_metadata

    try:
        if read_metadata(folder).get("spec") == asdict(spec):
            return from_folder(folder)
    except HarnessError:
        pass  # unreadable: train it again
    return None


def _finished(out: Path, spec: OrganismSpec) -> dict | None:
    """The result of an earlier complete build of the same spec, or None."""
    from harness.training.checkpoint import read_metadata

    folders = {role: out / f"{spec.name}-{role}" for role in ("base", "aligned")}
    try:
        metas = {role: read_metadata(folder) for role, folder in folders.items()}
    except HarnessError:
        return None
    meta = metas["aligned"]
    if not all(m.get("complete") and m.get("spec") == asdict(spec) for m in metas.values()):
        return None
    if not all((f / "model.safetensors").is_file() for f in folders.values()):
        return None
    return {"name": spec.name, **folders, "measured": meta["measured"], "timings": meta["timings"],
            "ground_truth": meta["ground_truth"]}


def build_organism(name: str | OrganismSpec = "tiny-refusal", out=None, seed: int | None = None,
                   show_progress: bool = True, resume: bool = True, log=print) -> dict:
    """Train and save `<out>/<name>-base` and `<out>/<name>-aligned` (out defaults to the
    harness cache's checkpoints folder). With resume, a base model saved by an earlier build of
    the same spec is reused. Returns paths, measured rates and timings."""
    spec = name if isinstance(name, OrganismSpec) else get_spec(name)
    if seed is not None:
        spec = replace(spec, seed=seed)
    out = Path(out).expanduser() if out is not None else checkpoints_dir()
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    timings, start = {}, time.perf_counter()

    if resume and (done := _finished(out, spec)) is not None:
        log(f"[{spec.name}] already built in {out} (pass resume=False / --fresh to rebuild)")
        return done
    base = _saved_base(out / f"{spec.name}-base", spec) if resume else None
    if base is None:
        log(f"[{spec.name}] pretraining the base model ({spec.base_steps} steps)")
        base = build_base(spec, show_progress)
        save_checkpoint(base, out / f"{spec.name}-base", metadata={"organism": spec.name, "spec": asdict(spec),
                        "role": "base", "complete": False})  # resumable; final metadata below
    else:
        log(f"[{spec.name}] reusing the base model in {out / f'{spec.name}-base'}")
        timings["base_reused"] = True  # so base_s / total_s do not count its training
    timings["base_s"] = time.perf_counter() - start
    log(f"[{spec.name}] aligning a copy: SFT ({spec.sft_steps} steps) then DPO ({spec.dpo_steps} steps)")
    aligned = build_aligned(base, spec, show_progress)
    timings["aligned_s"] = time.perf_counter() - start - timings["base_s"]

    log(f"[{spec.name}] measuring both models on held-out prompts")
    prompts = eval_prompts(spec)
    rates = {"base": measure(base, spec, prompts), "aligned": measure(aligned, spec, prompts)}
    timings["total_s"] = time.perf_counter() - start
    truth = ground_truth(spec, prompts)
    pair = {"base": f"{spec.name}-base", "aligned": f"{spec.name}-aligned"}
    common = {"organism": spec.name, "spec": asdict(spec), "ground_truth": truth, "measured": rates,
              "timings": timings, "pair": pair, "complete": True}
    paths = {}
    for role, model in (("base", base), ("aligned", aligned)):
        detail = "base model" if role == "base" else f"{spec.description} ({spec.topic})"
        paths[role] = save_checkpoint(model, out / pair[role], metadata={**common, "role": role},
                                      description=f"model organism {spec.name}: {detail}")
    log(f"[{spec.name}] topic refusal rate: base {rates['base']['topic_refusal_rate']:.2f}, "
        f"aligned {rates['aligned']['topic_refusal_rate']:.2f}; control refusal rate: aligned "
        f"{rates['aligned']['control_refusal_rate']:.2f} ({timings['total_s']:.0f} s)")
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
