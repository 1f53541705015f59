"""HookedLMEval against lm-eval's own HF model on the same weights."""

import pytest
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

import harness
from evals.lm_adapter import HookedLMEval
from evals.suites import resolve_suite
from tests.evals import tiny

CONTEXTS = ["Question: what is the capital of France?\nAnswer:", "The quick brown", "", "Numbers 0 1 2 3 ",
            "A long shared context about planets. " * 6 + "Which is largest?"]
CONTINUATIONS = [" Paris", " Jupiter and Saturn", " fox jumps over the lazy dog", "A", " 4 5 6", " Earth"]


@pytest.fixture(scope="module", params=[False, True], ids=["no-bos", "bos"])
def pair(request):
    tok = tiny.tokenizer(add_bos=request.param)
    hf = tiny.hf_llama(tok, seed=3)
    ours = HookedLMEval(harness.load(hf, tokenizer=tok), batch_size=3)
    ref = HFLM(pretrained=hf, tokenizer=tok, batch_size=4)
    return ours, ref


def _ll_requests():
    return [Instance("loglikelihood", {}, (c, k), i) for c in CONTEXTS for i, k in enumerate(CONTINUATIONS)]


def test_loglikelihood_matches_hflm(pair):
    ours, ref = pair
    reqs = _ll_requests()
    a, b = ours.loglikelihood(reqs, disable_tqdm=True), ref.loglikelihood(reqs, disable_tqdm=True)
    assert max(abs(x[0] - y[0]) for x, y in zip(a, b)) < 1e-4
    assert [x[1] for x in a] == [y[1] for y in b]


def test_left_truncation_matches_hflm(pair):
    ours, ref = pair
    ours._max_length, ref._max_length = 16, 16  # contexts longer than the window are cut on the left
    try:
        reqs = _ll_requests()
        a, b = ours.loglikelihood(reqs, disable_tqdm=True), ref.loglikelihood(reqs, disable_tqdm=True)
        assert max(abs(x[0] - y[0]) for x, y in zip(a, b)) < 1e-4
        rolling = [Instance("loglikelihood_rolling", {}, (t,), 0) for t in tiny._TRAINING_TEXT[:3]]
        a, b = ours.loglikelihood_rolling(rolling, disable_tqdm=True), ref.loglikelihood_rolling(rolling, disable_tqdm=True)
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4
    finally:
        ours._max_length, ref._max_length = None, None


def test_rolling_and_generation_match_hflm(pair):
    ours, ref = pair
    rolling = [Instance("loglikelihood_rolling", {}, (t,), 0) for t in tiny._TRAINING_TEXT[:5]]
    a, b = ours.loglikelihood_rolling(rolling, disable_tqdm=True), ref.loglikelihood_rolling(rolling, disable_tqdm=True)
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4
    ours.max_batch_tokens = 64  # every document starts from the same prefix token: force split groups
    try:
        small = ours.loglikelihood_rolling(rolling, disable_tqdm=True)
        assert max(abs(x - y) for x, y in zip(small, b)) < 1e-4
    finally:
        ours.max_batch_tokens = 8192
    gen = [Instance("generate_until", {}, (c or "Hi", {"until": ["\n", "."], "max_gen_toks": 10, "do_sample": False}), 0)
           for c in CONTEXTS]
    assert ours.generate_until(gen, disable_tqdm=True) == ref.generate_until(gen, disable_tqdm=True)


def test_chat_template_matches_hflm(pair):
    ours, ref = pair
    chat = [{"role": "user", "content": "hello"}]
    assert ours.apply_chat_template(chat) == ref.apply_chat_template(chat)


def test_task_scores_identical(pair):
    ours, ref = pair
    suite = resolve_suite("harness_knowledge,harness_sycophancy,harness_arithmetic", limit=8)
    try:
        tm = suite.task_manager()
        for task in suite.task_names:
            a = simple_evaluate(model=ours, tasks=[task], task_manager=tm, limit=8, bootstrap_iters=0)["results"][task]
            b = simple_evaluate(model=ref, tasks=[task], task_manager=tm, limit=8, bootstrap_iters=0)["results"][task]
            assert {k: v for k, v in a.items() if "stderr" not in k} == {k: v for k, v in b.items() if "stderr" not in k}
    finally:
        suite.cleanup()


@pytest.mark.slow
def test_parity_on_smollm2_135m():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness import zoo

    folder = zoo.resolve("smollm2-135m-instruct")
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    ours, ref = HookedLMEval(harness.load(folder), batch_size=4), HFLM(pretrained=hf, tokenizer=tok, batch_size=4)
    reqs = _ll_requests()
    a, b = ours.loglikelihood(reqs, disable_tqdm=True), ref.loglikelihood(reqs, disable_tqdm=True)
    # 30 fp32 layers: our plain forward already differs from HF by ~1e-4 on these sums and the
    # cached context/continuation split adds about as much (HFLM itself moves 3e-5 between batch
    # sizes), so the bound here is 5e-4; the tiny models above meet 1e-4.
    assert max(abs(x[0] - y[0]) for x, y in zip(a, b)) < 5e-4
    assert [x[1] for x in a] == [y[1] for y in b]
    chat = ours.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    gen = [Instance("generate_until", {}, (c, {"until": ["\n"], "max_gen_toks": 12, "do_sample": False}), 0)
           for c in [chat, "The capital of France is"]]
    assert ours.generate_until(gen, disable_tqdm=True) == ref.generate_until(gen, disable_tqdm=True)
