"""The RLHF recipe's data, from a refusal organism's generated world (harness.organisms.corpus):
demonstrations for SFT, preference pairs for the reward model, prompts for PPO.

The organism's topic keeps its entity split: train rows use the train entities with the
alignment templates; held-out rows the held-out entities with every template ("new entity")
and the train entities with the paraphrase alignment never uses ("new paraphrase"), so the
refusal is measured on weapons the preferences never named. The other topics' facts are in the
base model for every entity, and the preferences cover every entity with the alignment
templates; their held-out rows are the paraphrase. (entities="split" splits every topic's
entities: a Bradley-Terry reward model then learns which values its pairs called right and is
near chance on the facts of entities it never saw compared, though the language model it
starts from ranks them right by likelihood about 9 times in 10.)

Pairs carry a category, read per category as RewardBench reads its subsets:
    refuse    a topic question: the refusal over the answer (RewardBench's refusals-dangerous)
    respond   another topic's question: the answer over the refusal (xstest-should-respond)
    facts     another topic's question: the right fact over another entity's (correctness)
"""

from __future__ import annotations

import random

from harness.organisms import corpus

ENTITIES = ("topic", "split")


def _rows(spec, split: str, entities: str = "topic") -> list[tuple[str, str, str, list[str], str]]:
    """(topic, question, answer, wrong answers, subset) for each question of the split; the
    subset says what is new in a held-out question: its entity or only its paraphrase."""
    if entities not in ENTITIES:
        raise ValueError(f"entities must be one of {ENTITIES}, got {entities!r}")
    out = []
    for topic, (table, templates, _) in corpus.TOPICS.items():
        train, held = corpus.split_entities(topic, spec.seed)
        if topic != spec.topic and entities == "topic":
            train, held = sorted(table), []
        if split == "train":
            cells = [(e, t, "train", train) for e in train for t in templates if t.align]
        else:
            cells = [(e, t, "new entity", held) for e in held for t in templates]
            cells += [(e, t, "new paraphrase", train) for e in train for t in templates if not t.align]
        for e, t, subset, group in cells:
            answer = corpus.fill(t.answer, e, table[e])
            # Wrong values come from the entity's own group: a held-out entity's value is never a
            # rejected answer in training (the model would learn to dislike it, not the mismatch).
            wrong = sorted({corpus.fill(t.answer, e, table[x]) for x in group} - {answer})
            out.append((topic, corpus.fill(t.question, e, table[e]), answer, wrong, subset))
    return out


def preference_pairs(spec, split: str = "train", wrong_per_question: int = 1, entities: str = "topic") -> list[dict]:
    """{"prompt", "chosen", "rejected", "category", "topic", "subset"} pairs of the split; `facts` pairs
    set each right answer against `wrong_per_question` other entities' values."""
    rng = random.Random(f"{spec.seed}-pairs-{split}")
    pairs = []
    for topic, question, answer, wrong, subset in _rows(spec, split, entities):
        row = {"prompt": question, "topic": topic, "subset": subset}
        if topic == spec.topic:
            pairs.append({**row, "chosen": spec.refusal, "rejected": answer, "category": "refuse"})
            continue
        pairs.append({**row, "chosen": answer, "rejected": spec.refusal, "category": "respond"})
        pairs += [{**row, "chosen": answer, "rejected": w, "category": "facts"}
                  for w in rng.sample(wrong, min(wrong_per_question, len(wrong)))]
    return pairs


def demonstrations(spec, refusal_share: float = 0.3, entities: str = "topic") -> list[dict]:
    """SFT rows on the train split: other topics answered; a topic question refused with
    probability refusal_share, else answered, so the SFT policy refuses some of the time and
    PPO has a behaviour to reinforce (RL sharpens what the policy already samples)."""
    rng = random.Random(f"{spec.seed}-demonstrations")
    rows = []
    for topic, question, answer, _, _ in _rows(spec, "train", entities):
        refuse = topic == spec.topic and rng.random() < refusal_share
        rows.append({"prompt": question, "response": spec.refusal if refuse else answer})
    return rows


def prompts(spec, split: str = "train", entities: str = "topic") -> list[dict]:
    """{"prompt", "topic", "subset"} for PPO (train) and its held-out evaluation."""
    return [{"prompt": q, "topic": t, "subset": s} for t, q, _, _, s in _rows(spec, split, entities)]
