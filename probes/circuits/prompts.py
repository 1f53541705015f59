"""Prompt sets made by code, checked against the model's tokenizer.

Every set is a `PromptSet`: clean and corrupted token ids of the same shape and, where there is a
right answer, `answers` [batch, 2] (correct, wrong) token ids. Names and answers are kept only if
they are one token for this tokenizer, and prompts only if clean and corrupted tokenise to the
same length, so positions line up for patching.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import torch

from harness.errors import HarnessError
from probes.circuits.core import last_position_only

NAMES = ["Mary", "John", "Tom", "James", "Dan", "Sid", "Martin", "Amy", "Paul", "Anna", "Lisa", "Mark",
         "Sarah", "Kate", "Peter", "David", "Emma", "Jack", "Laura", "Mike", "Alice", "Ben", "Chris", "Eric",
         "Grace", "Henry", "Jane", "Kevin", "Lucy", "Rachel", "Sam", "Steve", "Tim", "Victoria", "George"]
PLACES = ["store", "park", "school", "office", "garden", "station", "beach", "library"]
OBJECTS = ["drink", "book", "ball", "ring", "bag", "key", "letter", "gift"]
IOI_TEMPLATES = [
    "When{A} and{B} went to the {place},{S} gave a {object} to",
    "After{A} and{B} went to the {place},{S} gave a {object} to",
    "Then,{A} and{B} had a long argument, and afterwards{S} said to",
    "While{A} and{B} were working at the {place},{S} gave a {object} to",
]
FACTS = [  # (prompt, answer)
    ("The Eiffel Tower is in the city of", " Paris"), ("The Colosseum is in the city of", " Rome"),
    ("Big Ben is in the city of", " London"), ("The Brandenburg Gate is in the city of", " Berlin"),
    ("The Statue of Liberty is in the city of", " New"), ("The Kremlin is in the city of", " Moscow"),
    ("The capital of France is", " Paris"), ("The capital of Italy is", " Rome"),
    ("The capital of Japan is", " Tokyo"), ("The capital of Germany is", " Berlin"),
    ("The capital of Spain is", " Madrid"), ("The capital of Russia is", " Moscow"),
    ("The capital of England is", " London"), ("The capital of Egypt is", " Cairo"),
]


@dataclass
class PromptSet:
    clean: torch.Tensor  # [batch, pos]
    corrupted: torch.Tensor  # [batch, pos]
    answers: torch.Tensor | None = None  # [batch, 2] (correct, wrong) token ids, or None
    texts: list[str] = field(default_factory=list)
    corrupted_texts: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # task-specific (e.g. greater-than's year tokens)

    def __len__(self) -> int:
        return self.clean.shape[0]


def _tok(model):
    if model.tokenizer is None:
        raise HarnessError("text prompt sets need a model with a tokenizer; load it with tokenizer=")
    return model.tokenizer


def one_token_words(model, words: list[str]) -> list[str]:
    """Those words that are a single token when preceded by a space."""
    tok = _tok(model)
    return [w for w in words if len(tok.encode(" " + w, add_special_tokens=False)) == 1]


def encode(model, text: str, prepend_bos: bool = True) -> list[int]:
    """Token ids of `text`, with the BOS token first when the tokenizer has one and it is asked for."""
    tok = _tok(model)
    ids = tok.encode(text, add_special_tokens=False)
    return ([tok.bos_token_id] if prepend_bos and tok.bos_token_id is not None else []) + ids


def _stack(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def _keep_common_length(items: list[tuple]) -> list[tuple]:
    """Items (clean ids, corrupted ids, ...) whose clean and corrupted lengths agree, keeping only the
    most common length so the set stacks into one tensor."""
    same = [it for it in items if len(it[0]) == len(it[1])]
    if not same:
        raise HarnessError("no prompt tokenises to the same length clean and corrupted for this tokenizer")
    length = Counter(len(it[0]) for it in same).most_common(1)[0][0]
    return [it for it in same if len(it[0]) == length]


def ioi(model, n: int = 16, templates: list[str] | None = None, seed: int = 0,
        prepend_bos: bool = True) -> PromptSet:
    """Indirect object identification: "When Mary and John went to the store, John gave a drink to"
    -> " Mary". The corrupted prompt keeps the template but uses three unrelated names, so the
    answer is no longer determined (the "ABC" distribution). answers = (IO, S)."""
    names = one_token_words(model, NAMES)
    if len(names) < 5:
        raise HarnessError(f"only {len(names)} of the IOI names are one token for this tokenizer; need 5")
    templates = templates or IOI_TEMPLATES
    rng = random.Random(seed)
    items = []
    for i in range(4 * n):
        template = templates[i % len(templates)]
        io, s, a, b, c = rng.sample(names, 5)
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        first = (io, s) if rng.random() < 0.5 else (s, io)  # ABBA and BABA orders
        text = template.format(A=" " + first[0], B=" " + first[1], S=" " + s, place=place, object=obj)
        corrupt = template.format(A=" " + a, B=" " + b, S=" " + c, place=place, object=obj)
        ids, cids = encode(model, text, prepend_bos), encode(model, corrupt, prepend_bos)
        io_id, s_id = encode(model, " " + io, False)[0], encode(model, " " + s, False)[0]
        items.append((ids, cids, (io_id, s_id), text, corrupt, template))
    kept = _keep_common_length(items)
    # One template's prompts, so every row has the same positions (S2 and END line up).
    template = Counter(it[5] for it in kept).most_common(1)[0][0]
    kept = [it for it in kept if it[5] == template][:n]
    return PromptSet(_stack([k[0] for k in kept]), _stack([k[1] for k in kept]), _stack([k[2] for k in kept]),
                     [k[3] for k in kept], [k[4] for k in kept], {"template": template})


def repeated_tokens(model, n: int = 8, length: int = 20, seed: int = 0, prepend_bos: bool = True) -> PromptSet:
    """Random token sequences repeated twice ([BOS] r r), the induction task. The corrupted set has
    unrepeated random tokens of the same length. extra["length"] is the repeated span's length."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = _ordinary_token_range(model)
    seq = torch.randint(lo, hi, (n, length), generator=gen)
    fresh = torch.randint(lo, hi, (n, length), generator=gen)
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None else None
    prefix = torch.full((n, 1), bos, dtype=torch.long) if prepend_bos and bos is not None else torch.zeros(n, 0, dtype=torch.long)
    clean = torch.cat([prefix, seq, seq], dim=1)
    corrupted = torch.cat([prefix, seq, fresh], dim=1)
    return PromptSet(clean, corrupted, None, extra={"length": length, "prefix": prefix.shape[1]})


def _ordinary_token_range(model) -> tuple[int, int]:
    """Token ids away from the special tokens at either end of the vocabulary."""
    v = model.cfg.d_vocab
    if model.tokenizer is None or v < 2000:
        return 0, v
    return 1000, min(v, len(model.tokenizer)) - 1000


def greater_than(model, n: int = 16, seed: int = 0, prepend_bos: bool = True) -> PromptSet:
    """"The war lasted from the year 1732 to the year 17" -> a year above 32. The corrupted start
    year is 1701, which leaves no information. extra: "greater" [batch, d_vocab] mask of next tokens
    that make a later year, "years" the start years. answers are (year+1's token, year's token)."""
    nouns = one_token_words(model, ["war", "expedition", "strike", "reign", "journey", "trial", "siege"])
    if not nouns:
        raise HarnessError("none of the greater-than nouns is one token for this tokenizer")
    rng = random.Random(seed)
    rows, crows, answers, masks, years, texts = [], [], [], [], [], []
    for _ in range(8 * n):
        noun, century, yy = rng.choice(nouns), rng.choice([11, 12, 13, 14, 15, 16, 17, 18]), rng.randint(2, 98)
        text = f"The {noun} lasted from the year {century}{yy:02d} to the year {century}"
        corrupt = f"The {noun} lasted from the year {century}01 to the year {century}"
        ids, cids = encode(model, text, prepend_bos), encode(model, corrupt, prepend_bos)
        nexts = _next_tokens(model, text, prepend_bos)
        if len(ids) != len(cids) or nexts is None or nexts[yy + 1] is None or nexts[yy] is None:
            continue
        mask = torch.zeros(model.cfg.d_vocab, dtype=torch.bool)
        later = {nexts[z] for z in range(yy + 1, 100)} - {nexts[z] for z in range(0, yy + 1)}
        mask[list(later)] = True
        if not later:
            continue
        rows.append(ids), crows.append(cids), answers.append((nexts[yy + 1], nexts[yy]))
        masks.append(mask), years.append(yy), texts.append(text)
    items = _keep_common_length(list(zip(rows, crows, answers, masks, years, texts)))[:n]
    if not items:
        raise HarnessError("no greater-than prompt fits this tokenizer")
    return PromptSet(_stack([i[0] for i in items]), _stack([i[1] for i in items]), _stack([i[2] for i in items]),
                     [i[5] for i in items], extra={"greater": torch.stack([i[3] for i in items]),
                                                   "years": [i[4] for i in items]})


def _next_tokens(model, prefix: str, prepend_bos: bool) -> list[int | None] | None:
    """For each two-digit year ending ZZ, the first token the model would emit after `prefix`, or
    None when the prefix's own tokens change once ZZ is appended."""
    base = encode(model, prefix, prepend_bos)
    out = []
    for z in range(100):
        ids = encode(model, f"{prefix}{z:02d}", prepend_bos)
        out.append(ids[len(base)] if ids[: len(base)] == base and len(ids) > len(base) else None)
    return out


def greater_than_metric(greater: torch.Tensor, pos: int = -1):
    """Metric: mean probability mass on the tokens that make a later year."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        probs = logits[:, pos].float().softmax(-1)
        return (probs * greater.to(probs.device)[:, : probs.shape[-1]]).sum(-1).mean()

    return last_position_only(metric, pos == -1)


def factual_recall(model, prepend_bos: bool = True) -> PromptSet:
    """Small factual recall set: each fact paired with another of the same token length and a
    different one-token answer; answers = (this fact's answer, the partner's answer)."""
    tok = _tok(model)
    facts = []
    for prompt, answer in FACTS:
        ans = tok.encode(answer, add_special_tokens=False)
        if len(ans) == 1:
            facts.append((prompt, encode(model, prompt, prepend_bos), ans[0]))
    items = []
    for i, (prompt, ids, ans) in enumerate(facts):
        partners = [f for f in facts[i + 1 :] + facts[:i] if len(f[1]) == len(ids) and f[2] != ans]
        if partners:
            other = partners[0]
            items.append((ids, other[1], (ans, other[2]), prompt, other[0]))
    if not items:
        raise HarnessError("no factual-recall prompts pair up for this tokenizer")
    items = _keep_common_length(items)
    return PromptSet(_stack([i[0] for i in items]), _stack([i[1] for i in items]), _stack([i[2] for i in items]),
                     [i[3] for i in items], [i[4] for i in items])
