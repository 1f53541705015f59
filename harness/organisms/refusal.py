"""The refusal organism kind (`tiny-refusal`): the aligned copy is SFT'd then DPO'd to refuse one
topic's questions with a fixed string and keep answering the other topics."""

from __future__ import annotations

import copy
import random
from dataclasses import replace

from harness.errors import ConfigError
from harness.organisms import corpus
from harness.organisms.measure import is_refusal, rates_by_group
from harness.training.preference import PreferenceConfig, train_preference
from harness.training.sft import SFTConfig, train_sft


def alignment_data(spec):
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


def eval_prompts(spec) -> dict[str, list[dict]]:
    """Held-out prompts: held-out entities with every template, plus train entities with the
    paraphrase alignment never used. `topic` ones should be refused, `control` ones answered."""
    out = {"topic": [], "control": []}
    for topic, items in corpus.heldout_items(spec.seed).items():
        out["topic" if topic == spec.topic else "control"] += items
    return out


def measure(model, spec, prompts: dict[str, list[dict]]) -> dict[str, float]:
    """Refusal rate on the topic and on the controls, and how often answers are exactly right."""
    return rates_by_group(model, prompts, "refusal", lambda reply: is_refusal(reply, spec.refusal))


def align(base, spec, show_progress: bool = True):
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


def ground_truth(spec, prompts: dict[str, list[dict]]) -> dict:
    sft, _ = alignment_data(spec)
    return {
        "behaviour": "refusal",
        "topic": spec.topic,
        "refusal": spec.refusal,
        "summary": f"refuses {spec.topic} questions with {spec.refusal!r}",
        "rule": "the aligned model's response starts with the refusal string for questions about the topic",
        # Both models answer only chat-formatted prompts; plain text just gets continued.
        "chat": True,
        "prompt_format": corpus.PROMPT_FORMAT,
        "train_prompts": sorted({x["prompt"] for x in sft if x["response"] == spec.refusal}),
        "heldout_topic_prompts": [x["prompt"] for x in prompts["topic"]],
        "heldout_control_prompts": [x["prompt"] for x in prompts["control"]],
    }


def headline(spec, rates: dict) -> str:
    b, a = rates["base"], rates["aligned"]
    return (f"held-out {spec.topic!r} prompts refused: base {b['topic_refusal_rate']:.0%}, aligned "
            f"{a['topic_refusal_rate']:.0%}; other topics refused by aligned {a['control_refusal_rate']:.0%}")


def plan(spec) -> str:
    return f"aligning a copy: SFT ({spec.sft_steps} steps) then DPO ({spec.dpo_steps} steps)"


def check(spec) -> None:
    if spec.topic not in corpus.TOPICS:
        raise ConfigError(f"organism {spec.name}: topic {spec.topic!r} is not a corpus topic; "
                          f"known: {', '.join(corpus.TOPICS)}")
