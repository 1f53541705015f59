"""Every packaged task, run through lm-eval from its YAML, scored on a model whose answers are known."""

import pytest
from lm_eval import simple_evaluate
from lm_eval.api.model import LM

from evals.suites import ALIGNMENT, CAPABILITY, SUITES, build, resolve_suite
from evals.suites.metrics import follows, is_refusal

# A reply that satisfies (True) or breaks (False) each instruction constraint.
IF_REPLIES = {
    "all_caps": ("SUMMER IS WARM", "summer is warm"),
    "all_lower": ("summer is warm", "Summer Is Warm"),
    "exact_words": (lambda n: " ".join(["word"] * n), lambda n: " ".join(["word"] * (n + 1))),
    "max_words": ("short answer", lambda n: " ".join(["word"] * (n + 5))),
    "start_with": (lambda w: f"{w} it is", lambda w: "No it is not"),
    "include_word": (lambda w: f"the sky is {w}", lambda w: "the sky is grey"),
    "no_commas": ("one two three", "one, two"),
    "end_with": (lambda w: f"all {w}", lambda w: f"{w} all"),
    "one_word": ("sunshine", "two words"),
}


class Oracle(LM):
    """Knows every item's answer from the request's doc. mode: "right", "wrong" or "sycophant"."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def _pick(self, doc) -> int:
        if "user_choice" in doc:  # sycophancy
            if self.mode == "sycophant" and doc["variant"] == "opinion":
                return doc["user_choice"]
            return doc["label"] if self.mode != "wrong" else 1 - doc["label"]
        return doc["label"] if self.mode == "right" else (doc["label"] + 1) % len(doc["choices"])

    def loglikelihood(self, requests):
        return [(0.0 if req.idx == self._pick(req.doc) else -10.0, False) for req in requests]

    def loglikelihood_rolling(self, requests):
        return [0.0 if self.mode == "right" else -5.0 * len(req.args[0]) for req in requests]

    def generate_until(self, requests):
        return [self._reply(req.doc) for req in requests]

    def _reply(self, doc) -> str:
        right = self.mode == "right"
        if "answer" in doc:
            return f" {doc['answer'] if right else doc['answer'] + 1}"
        if "kind" in doc:
            reply = IF_REPLIES[doc["kind"]][0 if right else 1]
            return reply(doc["arg"]) if callable(reply) else reply
        harmful = doc["id"].startswith("harmful")
        refuse = harmful == right  # right: refuse the harmful, help with the harmless
        return "I'm sorry, but I can't help with that." if refuse else "Sure! Here is how you do it."


EXPECTED = {  # task: (metric, score when right, score when wrong)
    "harness_knowledge": ("acc,none", 1.0, 0.0),
    "harness_misconceptions": ("acc,none", 1.0, 0.0),
    "harness_arithmetic": ("exact_match,none", 1.0, 0.0),
    "harness_perplexity": ("bits_per_byte,none", 0.0, None),
    "harness_refusal": ("refusal_rate,none", 1.0, 0.0),
    "harness_overrefusal": ("over_refusal_rate,none", 0.0, 1.0),
    "harness_instructions": ("follow_rate,none", 1.0, 0.0),
    "harness_sycophancy": ("acc,none", 1.0, 0.0),
}


@pytest.fixture(scope="module")
def suite():
    s = resolve_suite("full")
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def task_manager(suite):
    return suite.task_manager()


@pytest.fixture(scope="module")
def scores(task_manager):
    """mode -> task -> lm-eval results; one lm-eval run per mode over every task (fast)."""
    cache = {}

    def get(task, mode):
        if mode not in cache:
            tasks = CAPABILITY + ALIGNMENT if mode != "sycophant" else ["harness_sycophancy"]
            cache[mode] = simple_evaluate(model=Oracle(mode), tasks=tasks, task_manager=task_manager,
                                          bootstrap_iters=0)["results"]
        return cache[mode][task]

    return get


@pytest.mark.parametrize("task", CAPABILITY + ALIGNMENT)
def test_task_scores_known_answers(task, scores):
    metric, right, wrong = EXPECTED[task]
    assert scores(task, "right")[metric] == pytest.approx(right)
    if wrong is not None:
        assert scores(task, "wrong")[metric] == pytest.approx(wrong)


def test_perplexity_of_a_perfect_model_is_one(scores):
    result = scores("harness_perplexity", "right")
    assert result["word_perplexity,none"] == pytest.approx(1.0)
    assert result["byte_perplexity,none"] == pytest.approx(1.0)


def test_sycophancy_flip_rate(scores):
    assert scores("harness_sycophancy", "right")["flip_rate,none"] == 0.0
    syco = scores("harness_sycophancy", "sycophant")
    assert syco["flip_rate,none"] == 1.0 and syco["acc,none"] == pytest.approx(0.5)


def test_suites_cover_the_issue_and_sizes():
    assert set(SUITES["default"]) == set(CAPABILITY + ALIGNMENT)
    counts = {name: build.render(name).count("\n") for name in build.FILES if name != "perplexity_stdlib.jsonl"}
    assert counts["knowledge.jsonl"] >= 100 and counts["arithmetic.jsonl"] >= 400
    assert counts["sycophancy.jsonl"] % 2 == 0


def test_packaged_data_matches_its_generator():
    # Perplexity texts depend on the Python version's stdlib, so only the rest is rebuilt here.
    names = [n for n in build.FILES if n != "perplexity_stdlib.jsonl"]
    assert build.main(["--check", "--only", *names]) == 0


def test_checkers():
    assert is_refusal("I'm sorry, but I cannot do that") and not is_refusal("Sure, here it is")
    assert follows("exact_words", 3, "one two three") and not follows("exact_words", 3, "one two")
    assert follows("all_caps", None, "HELLO THERE") and not follows("all_caps", None, "Hello")
