"""A group YAML in a suite folder runs as lm-eval runs it: its subtasks under it (not twice), the
group's aggregate as lm-eval computes it, and paired comparisons per subtask and for the group."""

import pytest
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from evals.lm_adapter import HookedLMEval
from evals.runner import run_eval
from evals.suites import resolve_suite
from tests.evals import tiny
from tests.evals.test_runner import GOOD_YAML

SUB = GOOD_YAML.replace("task: my_task", "task: sub_NAME")  # one multiple-choice task per subtask
GROUP = """group: my_group
task:
  - sub_a
  - sub_b
aggregate_metric_list:
  - metric: acc
    aggregation: mean
    weight_by_size: WEIGHTED
metadata:
  version: 1.0
"""


def _folder(tmp_path, weighted=True):
    folder = tmp_path / "suite"
    folder.mkdir()
    for name, n in (("a", 5), ("b", 9)):
        rows = [{"q": f"{name} question {i}", "choices": ["yes", "no", "maybe"], "label": i % 3} for i in range(n)]
        tiny.write_task(folder, name, SUB.replace("NAME", name), rows)
    (folder / "group.yaml").write_text(GROUP.replace("WEIGHTED", str(weighted).lower()))
    return folder


@pytest.fixture(scope="module")
def models():
    return tiny.model_pair(aligned_seed=2)


def test_group_is_aggregated_as_lm_eval_does(models, tmp_path):
    folder = _folder(tmp_path)
    suite = resolve_suite(folder)
    assert [t.name for t in suite.tasks] == ["my_group"] and suite.tasks[0].subtasks == ["sub_a", "sub_b"]

    run = run_eval(models, folder, runs_dir=tmp_path / "runs", name="g", kl=False, console=False)
    results = run.read_json("results/base.json")["results"]
    assert {"my_group", "sub_a", "sub_b"} <= set(results)
    # lm-eval on its own, same model and folder
    own = simple_evaluate(model=HookedLMEval(models["base"]), tasks=["my_group"], bootstrap_iters=0,
                          task_manager=TaskManager(include_path=[str(folder)], include_defaults=False))
    for name in ("my_group", "sub_a", "sub_b"):
        assert results[name]["acc,none"] == own["results"][name]["acc,none"]
    a, b = results["sub_a"]["acc,none"], results["sub_b"]["acc,none"]
    assert results["my_group"]["acc,none"] == pytest.approx((5 * a + 9 * b) / 14)  # size-weighted

    items = run.read_jsonl("samples/base/my_group.jsonl")
    assert len(items) == 14 and {it["task"] for it in items} == {"sub_a", "sub_b"}
    rows = {r["task"]: r for r in run.read_json("comparison.json")["rows"] if r["metric"] == "acc"}
    assert set(rows) == {"my_group", "sub_a", "sub_b"}
    assert rows["my_group"]["n_units"] == 14 and rows["sub_a"]["n_units"] == 5
    assert rows["my_group"]["base_value"] == pytest.approx(results["my_group"]["acc,none"])
    aligned = run.read_json("results/aligned.json")["results"]
    assert rows["my_group"]["other_value"] == pytest.approx(aligned["my_group"]["acc,none"])
    assert rows["sub_b"]["diff"] == pytest.approx(aligned["sub_b"]["acc,none"] - b)
    assert "base/my_group/acc" in run.manifest["metrics"]


def test_unweighted_group_has_no_pooled_comparison(models, tmp_path):
    folder = _folder(tmp_path, weighted=False)
    run = run_eval(models, folder, runs_dir=tmp_path / "runs", name="u", kl=False, console=False)
    results = run.read_json("results/base.json")["results"]
    a, b = results["sub_a"]["acc,none"], results["sub_b"]["acc,none"]
    assert results["my_group"]["acc,none"] == pytest.approx((a + b) / 2)
    tasks = {r["task"] for r in run.read_json("comparison.json")["rows"]}
    assert tasks == {"sub_a", "sub_b"}  # a mean of means is not a per-item mean: not bootstrapped as one
