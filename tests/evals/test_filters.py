"""Tasks with several lm-eval filters (gsm8k-style): sample rows keep lm-eval's own fields, and the
comparison is made per filter, never pooled across filters."""

import pytest

from evals.compare import compare_items
from evals.runner import run_eval
from tests.evals import tiny

TWO_FILTER_YAML = """task: two_filter
dataset_path: json
dataset_kwargs:
  data_files: {test: DATA}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{q}}\\nAnswer:"
doc_to_target: "{{a}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 5
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    regexes_to_ignore: ["\\\\s"]
filter_list:
  - name: strict-match
    filter:
      - function: regex
        regex_pattern: "#### ZQZQ (\\\\d+)"
      - function: take_first
  - name: flexible
    filter:
      - function: take_first
"""


def _task(folder, rows):
    folder.mkdir(exist_ok=True)
    tiny.write_task(folder, "two", TWO_FILTER_YAML, rows)
    return folder


@pytest.fixture(scope="module")
def models():
    return tiny.model_pair()


def test_two_filters_compared_separately(models, tmp_path):
    questions = [f"what is {i} plus {i}?" for i in range(8)]
    # First pass: learn each model's greedy answers, so the targets can be made to match base on
    # six docs and aligned on two (a known, non-zero difference on one filter).
    first = run_eval(models, str(_task(tmp_path / "probe", [{"q": q, "a": "?"} for q in questions])),
                     runs_dir=tmp_path / "runs", name="probe", kl=False, console=False)
    answers = {}
    for label in models:
        rows = [r for r in first.read_jsonl(f"samples/{label}/two_filter.jsonl") if r["filter"] == "flexible"]
        answers[label] = {r["doc_id"]: r["filtered_resps"][0] for r in rows}
    targets = [answers["base" if i < 6 else "aligned"][i] for i in range(8)]
    run = run_eval(models, str(_task(tmp_path / "real", [{"q": q, "a": t} for q, t in zip(questions, targets)])),
                   runs_dir=tmp_path / "runs", name="real", kl=False, console=False)

    items = run.read_jsonl("samples/base/two_filter.jsonl")
    assert len(items) == 16 and {it["filter"] for it in items} == {"strict-match", "flexible"}
    for key in ("doc_hash", "prompt_hash", "target_hash", "resps", "filtered_resps", "arguments", "target"):
        assert all(it[key] is not None for it in items), key
    strict = [it for it in items if it["filter"] == "strict-match"]
    assert all(it["filtered_resps"] == ["[invalid]"] for it in strict)  # lm-eval's regex fallback

    rows = {(r["metric"], r["filter"]): r for r in run.read_json("comparison.json")["rows"]}
    assert set(rows) == {("exact_match", "strict-match"), ("exact_match", "flexible")}
    s = rows[("exact_match", "strict-match")]
    assert (s["base_value"], s["other_value"], s["diff"], s["ci_low"], s["ci_high"], s["p_value"]) == (0, 0, 0, 0, 0, 1)
    assert s["n_units"] == 8
    f = rows[("exact_match", "flexible")]
    alike = [answers["base"][i].strip() == answers["aligned"][i].strip() for i in range(8)]
    assert f["base_value"] == pytest.approx((6 + sum(alike[6:])) / 8)
    assert f["other_value"] == pytest.approx((2 + sum(alike[:6])) / 8)
    assert f["diff"] < 0 and not all(alike), "the two tiny models answered alike; pick other seeds"
    # lm-eval's own results agree with the per-filter values
    results = run.read_json("results/base.json")["results"]["two_filter"]
    assert results["exact_match,strict-match"] == 0 and results["exact_match,flexible"] == pytest.approx(f["base_value"])
    # the headline metrics and the report keep the filters apart
    assert run.manifest["metrics"]["base/two_filter/exact_match [flexible]"] == pytest.approx(f["base_value"])
    assert "exact_match [strict-match]" in run.read_text("report.html")


def test_compare_items_refuses_mixed_filters():
    rows = [{"doc_id": 0, "doc": {}, "filter": "a", "metrics": {"acc": 1}},
            {"doc_id": 0, "doc": {}, "filter": "b", "metrics": {"acc": 0}}]
    with pytest.raises(ValueError, match="several filters"):
        compare_items("t", "acc", "x", "y", rows, rows)
    r = compare_items("t", "acc", "x", "y", rows, rows[:1] + [dict(rows[1], metrics={"acc": 1})], filter="b")
    assert (r.filter, r.base_value, r.other_value, r.n_units) == ("b", 0.0, 1.0, 1)
