"""run_eval and `harness eval`: run folders, resume after interruption, and bad input."""

import json

import pytest

from apps.cli import main as cli_main
from evals.lm_adapter import HookedLMEval
from evals.runner import run_eval
from evals.suites import resolve_suite
from harness.errors import HarnessError
from harness.runs import RunStore
from tests.evals import tiny

TASKS = "harness_knowledge,harness_sycophancy,harness_refusal"


@pytest.fixture(scope="module")
def models():
    return tiny.model_pair()


def test_run_folder_contents(models, tmp_path):
    run = run_eval(models, TASKS, runs_dir=tmp_path, name="r1", limit=4, console=False)
    assert run.status == "complete"
    for label in models:
        results = run.read_json(f"results/{label}.json")
        assert set(results["results"]) == set(TASKS.split(",")) and "configs" in results
        items = run.read_jsonl(f"samples/{label}/harness_knowledge.jsonl")
        assert len(items) == 4 and items[0]["inputs"] and items[0]["outputs"] and "acc" in items[0]["metrics"]
    # the refusal task is a chat task and the tokenizer has a template
    assert run.read_json("tasks/base/harness_refusal.json")["chat_template_applied"] is True
    rows = run.read_json("comparison.json")["rows"]
    assert {(r["task"], r["metric"]) for r in rows} >= {("harness_knowledge", "acc"), ("harness_sycophancy", "flip_rate")}
    kl = run.read_json("kl.json")["aligned||base"]
    assert kl["mean"] > 0 and set(kl["tasks"]) == set(TASKS.split(","))
    assert "plotly" in run.read_text("report.html")
    assert not (run.path / "cache").exists()
    assert run.manifest["models"]["base"]["weights_sha256"]


def test_resume_after_interruption(models, tmp_path, monkeypatch):
    calls = {"batches": 0, "requests": 0}
    real_score, real_tokens = HookedLMEval._score_batch, HookedLMEval._loglikelihood_tokens

    def flaky(self, contexts, rows):
        calls["batches"] += 1
        if calls["batches"] == 4:  # knowledge takes batches 1-2; dies in sycophancy after its first
            raise KeyboardInterrupt
        return real_score(self, contexts, rows)

    def counting(self, requests, **kw):
        calls["requests"] += len(requests)
        return real_tokens(self, requests, **kw)

    monkeypatch.setattr(HookedLMEval, "_score_batch", flaky)
    monkeypatch.setattr(HookedLMEval, "_loglikelihood_tokens", counting)
    one = {"base": models["base"]}
    with pytest.raises(KeyboardInterrupt):
        # two contexts per batch: knowledge (4 docs) and sycophancy (4 docs) take two batches each
        run_eval(one, "harness_knowledge,harness_sycophancy", runs_dir=tmp_path, name="r2", limit=4,
                 batch_size=2, console=False)
    run = RunStore(tmp_path).open("r2")
    assert run.status == "interrupted"
    assert (run.path / "tasks/base/harness_knowledge.json").is_file()
    assert not (run.path / "tasks/base/harness_sycophancy.json").exists()

    monkeypatch.setattr(HookedLMEval, "_score_batch", real_score)
    calls["requests"] = 0
    run = run_eval(one, "harness_knowledge,harness_sycophancy", runs_dir=tmp_path, name="r2", limit=4,
                   batch_size=2, console=False)
    assert run.status == "complete" and run.manifest["resumed"] == 1
    # knowledge was skipped; of sycophancy's 8 requests the first batch's 4 came from the cache
    assert calls["requests"] == 4
    fresh = run_eval(one, "harness_knowledge,harness_sycophancy", runs_dir=tmp_path, name="r3", limit=4,
                     console=False)
    assert run.read_json("results/base.json")["results"] == fresh.read_json("results/base.json")["results"]


def test_failed_model_keeps_partial_results(models, tmp_path):
    with pytest.raises(HarnessError, match="model 'broken' failed to load") as err:
        run_eval({"base": models["base"], "broken": str(tmp_path / "missing")}, "harness_knowledge",
                 runs_dir=tmp_path, name="r4", limit=2, console=False)
    assert "\n" not in str(err.value)
    run = RunStore(tmp_path).open("r4")
    assert run.status == "failed" and (run.path / "results/base.json").is_file()


def test_unknown_task_is_one_line(monkeypatch):
    import evals.suites

    # The real index of lm-eval's built-ins takes ~20 s to build the first time; a stand-in will do.
    monkeypatch.setattr(evals.suites, "builtin_task_names", lambda: {"hellaswag", "arc_easy"})
    with pytest.raises(HarnessError, match="unknown task or suite 'harness_knowlege'; did you mean harness_knowledge"):
        resolve_suite("harness_knowlege")


def _user_suite(tmp_path, yaml_text, jsonl_text):
    folder = tmp_path / "mytasks"
    folder.mkdir()
    (folder / "data.jsonl").write_text(jsonl_text)
    (folder / "mine.yaml").write_text(yaml_text.replace("DATA", str(folder / "data.jsonl")))
    return folder


GOOD_YAML = """task: my_task
dataset_path: json
dataset_kwargs:
  data_files: {test: DATA}
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{q}}\\nA:"
doc_to_choice: "{{choices}}"
doc_to_target: label
metric_list:
  - metric: acc
"""
GOOD_ROWS = "".join(json.dumps({"q": f"question {i}", "choices": ["yes", "no"], "label": i % 2}) + "\n" for i in range(3))


def test_user_task_folder_runs(models, tmp_path):
    folder = _user_suite(tmp_path, GOOD_YAML, GOOD_ROWS)
    run = run_eval({"base": models["base"]}, str(folder), runs_dir=tmp_path, name="r5", console=False)
    assert run.read_json("results/base.json")["results"]["my_task"]["acc,none"] in (0.0, 1 / 3, 2 / 3, 1.0)


def test_malformed_yaml_names_file_and_line(tmp_path):
    folder = _user_suite(tmp_path, GOOD_YAML.replace("test_split: test", "test_split: [test"), GOOD_ROWS)
    with pytest.raises(HarnessError, match=r"mine\.yaml:\d+: malformed YAML"):
        resolve_suite(folder)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    folder = _user_suite(tmp_path, GOOD_YAML, GOOD_ROWS + '{"q": "broken",\n')
    with pytest.raises(HarnessError, match=r"data\.jsonl:4: not JSON Lines: invalid JSON"):
        resolve_suite(folder)


def test_cli_eval_end_to_end(tmp_path, capsys):
    tok = tiny.tokenizer()
    for seed, name in ((0, "base"), (1, "aligned")):
        folder = tmp_path / name
        tiny.hf_llama(tok, seed=seed).save_pretrained(folder)
        tok.save_pretrained(folder)
    args = ["eval", "--base", str(tmp_path / "base"), "--aligned", str(tmp_path / "aligned"),
            "--suite", "harness_knowledge", "--limit", "3", "--runs", str(tmp_path / "runs"), "--name", "cli"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "harness_knowledge".removeprefix("harness_") in out and "aligned - base" in out
    with pytest.raises(SystemExit) as exit_info:  # same name again: the run is complete
        cli_main(args)
    assert exit_info.value.code == 2
    assert "already complete" in capsys.readouterr().err


@pytest.mark.slow
def test_builtin_task_offline_is_a_clear_error(models, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(HarnessError, match="task 'hellaswag' failed: .*") as err:
        run_eval({"base": models["base"]}, "hellaswag", runs_dir=tmp_path, name="r6", limit=2, console=False)
    assert "\n" not in str(err.value)
    assert RunStore(tmp_path).open("r6").status == "failed"


def test_a_base_tokenizer_without_template_borrows_its_descendants(tmp_path):
    """A base tokenizer without a chat template against a chat model of the same vocabulary: by
    default it is given that template (and the manifest says so); as-shipped leaves it and warns;
    a named template is given to it instead."""
    import copy

    from harness.errors import ConfigError

    tok = tiny.tokenizer()
    plain = copy.deepcopy(tok)
    plain.chat_template = None

    def models():
        return {"base": tiny.hooked(copy.deepcopy(plain), seed=0), "aligned": tiny.hooked(tok, seed=1)}

    run = run_eval(models(), "harness_refusal", runs_dir=tmp_path, name="shared", limit=2, kl=False, console=False)
    assert "warnings" not in run.manifest
    assert run.manifest["notes"][0].startswith("base has no chat template; it was given aligned's")
    assert run.read_json("tasks/base/harness_refusal.json")["chat_template_applied"]
    assert "<b>note:</b> base has no chat template" in (run.path / "report.html").read_text()

    run = run_eval(models(), "harness_refusal", runs_dir=tmp_path, name="mixed", limit=2, kl=False, console=False,
                   chat_template="as-shipped")
    assert "no chat template" in run.manifest["warnings"][0] and run.manifest["warnings"][0].startswith("base")
    assert "notes" not in run.manifest
    assert not run.read_json("tasks/base/harness_refusal.json")["chat_template_applied"]
    assert "<b>warning:</b> base has no chat template" in (run.path / "report.html").read_text()

    run = run_eval(models(), "harness_refusal", runs_dir=tmp_path, name="named", limit=2, kl=False, console=False,
                   chat_template="gemma-turns")
    assert "warnings" not in run.manifest and "notes" not in run.manifest
    assert run.read_json("tasks/base/harness_refusal.json")["chat_template_applied"]
    with pytest.raises(ConfigError, match="unknown chat template 'nope'"):
        run_eval(models(), "harness_refusal", runs_dir=tmp_path, chat_template="nope", console=False)


def test_a_template_is_not_borrowed_across_vocabularies(tmp_path):
    import copy

    tok = tiny.tokenizer()
    other = copy.deepcopy(tok)
    other.chat_template = None
    other.add_tokens(["<an-extra-token>"])  # a different vocabulary: the template's markers may mean other tokens
    models = {"base": tiny.hooked(other, seed=0), "aligned": tiny.hooked(tok, seed=1)}
    run = run_eval(models, "harness_refusal", runs_dir=tmp_path, name="apart", limit=2, kl=False, console=False)
    assert "notes" not in run.manifest and run.manifest["warnings"][0].startswith("base has no chat template")
