"""The eval request cache: JSON only, never pickle; a task cut short resumes from its finished
requests; an unwritable run folder ends the run `failed` with one clear line."""

import json
import pickle
import shutil

import pytest
from lm_eval.api.instance import Instance
from lm_eval.api.model import hash_args

from evals.lm_adapter import HookedLMEval
from evals.request_cache import RequestCache, RunFolderError, request_key
from evals.runner import run_eval
from harness.errors import HarnessError
from harness.runs import RunStore
from tests.evals import tiny

TASKS = "harness_knowledge,harness_arithmetic"  # loglikelihood and generate_until


class Payload:
    """Unpickling this creates the marker file (builtins.open in write mode)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def model():
    return tiny.hooked(tiny.tokenizer(), seed=0)


REAL = {name: getattr(HookedLMEval, name) for name in ("_score_batch", "_generate", "_through_cache")}


class Counter:
    """Counts the requests the model really computes; raises after `fail_after` of them. Also
    keeps every request lm-eval sent (method, args)."""

    def __init__(self, monkeypatch, fail_after=None):
        self.scored = self.generated = 0
        self.fail_after = fail_after
        self.requests = []
        real_score, real_generate, real_through = REAL["_score_batch"], REAL["_generate"], REAL["_through_cache"]
        counter = self

        def through(self, method, requests, compute):
            counter.requests += [(method, r.args) for r in requests]
            return real_through(self, method, requests, compute)

        def score(self, contexts, rows):
            counter._step(len(rows), "scored")
            return real_score(self, contexts, rows)

        def generate(self, contexts, until, max_new, kwargs):
            counter._step(len(contexts), "generated")
            return real_generate(self, contexts, until, max_new, kwargs)

        monkeypatch.setattr(HookedLMEval, "_score_batch", score)
        monkeypatch.setattr(HookedLMEval, "_generate", generate)
        monkeypatch.setattr(HookedLMEval, "_through_cache", through)

    def _step(self, n, what):
        if self.fail_after is not None and self.scored + self.generated >= self.fail_after:
            raise RuntimeError("injected failure")
        setattr(self, what, getattr(self, what) + n)


def _interrupted_run(model, tmp_path, monkeypatch, name, fail_after):
    counter = Counter(monkeypatch, fail_after=fail_after)
    with pytest.raises(HarnessError, match="injected failure"):
        run_eval({"base": model}, TASKS, runs_dir=tmp_path, name=name, limit=6, batch_size=2, console=False)
    run = RunStore(tmp_path).open(name)
    assert run.status == "failed"
    return run, counter


def test_killed_task_resumes_from_finished_requests(model, tmp_path, monkeypatch):
    fresh_counter = Counter(monkeypatch)
    fresh = run_eval({"base": model}, TASKS, runs_dir=tmp_path, name="fresh", limit=6, batch_size=2, console=False)
    total = fresh_counter.scored + fresh_counter.generated
    assert fresh_counter.scored == 24 and fresh_counter.generated == 6  # 6 docs x 4 choices, 6 generations

    # Dies inside harness_arithmetic after two of its three generation batches (24 + 4 requests).
    run, first = _interrupted_run(model, tmp_path, monkeypatch, "cut", fail_after=28)
    assert (run.path / "tasks/base/harness_knowledge.json").is_file()
    assert not (run.path / "tasks/base/harness_arithmetic.json").exists()
    rows = (run.path / "cache/base.requests.jsonl").read_text().splitlines()
    assert len(rows) == 1 + 28  # a header, then every finished request
    assert all(json.loads(line) for line in rows)

    second = Counter(monkeypatch)
    run = run_eval({"base": model}, TASKS, runs_dir=tmp_path, name="cut", limit=6, batch_size=2, console=False)
    assert run.status == "complete" and run.manifest["resumed"] == 1
    # knowledge was done; of arithmetic's 6 generations only the 2 never finished are computed
    assert (second.scored, second.generated) == (0, 2)
    assert first.scored + first.generated + second.scored + second.generated == total
    assert run.read_json("results/base.json")["results"] == fresh.read_json("results/base.json")["results"]
    assert not (run.path / "cache").exists()


def test_planted_pickle_is_never_unpickled(model, tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    blob = pickle.dumps(Payload(marker))
    # The payload is live: unpickling it does write the marker.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Payload(probe)))
    assert probe.exists()

    fresh = run_eval({"base": model}, TASKS, runs_dir=tmp_path, name="fresh", limit=6, batch_size=2, console=False)
    run, first = _interrupted_run(model, tmp_path, monkeypatch, "victim", fail_after=26)
    pending = [(m, a) for m, a in first.requests if m == "generate_until"]
    assert len(pending) == 6

    # 1. lm-eval's old cache location: a sqlitedict (values pickled) holding the payload under the
    # very keys lm-eval's CachingLM would look up for the unfinished task's requests.
    from sqlitedict import SqliteDict

    old = run.path / "cache" / "base_rank0.db"
    with SqliteDict(str(old), autocommit=True) as db:
        for method, args in first.requests:
            db[hash_args(method, args)] = Payload(marker)

    # 2. the new cache: the payload under the same requests' keys (as a string), raw pickle
    # bytes as lines, a row of the wrong type, and a torn last line.
    new = run.path / "cache" / "base.requests.jsonl"
    finished = len(new.read_text().splitlines()) - 1
    assert finished == 26
    with open(new, "ab") as f:
        f.write(blob + b"\n")
        for method, args in pending:
            f.write(json.dumps({"key": request_key(method, args), "method": method,
                                "value": {"pickle": blob.decode("latin-1")}}).encode() + b"\n")
        f.write(json.dumps({"key": "k", "method": "loglikelihood", "value": blob.decode("latin-1")}).encode() + b"\n")
        f.write(blob)

    second = Counter(monkeypatch)
    run = run_eval({"base": model}, TASKS, runs_dir=tmp_path, name="victim", limit=6, batch_size=2, console=False)
    assert not marker.exists()
    assert run.status == "complete"
    assert (second.scored, second.generated) == (0, 30 - finished)  # planted rows were not taken as answers
    assert run.read_json("results/base.json")["results"] == fresh.read_json("results/base.json")["results"]
    assert any("ignored lm-eval's request cache base_rank0.db" in n for n in run.manifest["notes"])

    # The plant was live: lm-eval's own cache, pointed at a copy of that database, runs it.
    from lm_eval.api.model import CachingLM

    copy = tmp_path / "copy.db"
    with SqliteDict(str(copy), autocommit=True) as db:
        db[hash_args(*pending[0])] = Payload(marker)
    CachingLM(HookedLMEval(model), str(copy)).generate_until([Instance("generate_until", {}, pending[0][1], 0)])
    assert marker.exists()


def test_request_cache_reads_only_well_formed_rows(tmp_path):
    path = tmp_path / "c.jsonl"
    cache = RequestCache(path)
    reqs = [Instance("loglikelihood", {}, ("ctx", f" c{i}"), i) for i in range(3)]
    calls = []

    def compute(batch):
        calls.append(len(batch))
        return [(-1.5 - int(r.args[1][2:]), r.idx == 0) for r in batch]

    assert cache.run("loglikelihood", reqs, compute) == [(-1.5, True), (-2.5, False), (-3.5, False)]
    cache.add("loglikelihood_rolling", ("doc",), -7.25)
    cache.add("generate_until", ("p", {"until": ["\n"], "do_sample": True}), "sampled")  # sampled: never kept
    cache.close()
    with open(path, "ab") as f:
        f.write(b'{"key": "x", "method": "loglikelihood", "value": [1, 2]}\n\xff\xfe\n{"key": "y", "meth')
    again = RequestCache(path)
    assert len(again) == 4 and again.ignored_lines == 3
    assert again.run("loglikelihood", reqs, compute) == [(-1.5, True), (-2.5, False), (-3.5, False)]
    assert calls == [3]  # the second pass computed nothing
    assert again.get("loglikelihood_rolling", ("doc",)) == -7.25
    assert again.get("generate_until", ("p", {"until": ["\n"], "do_sample": True})) is None
    again.add("loglikelihood", ("ctx", " new"), (-0.5, False))  # appended after the torn line, not into it
    again.close()
    assert RequestCache(path).get("loglikelihood", ("ctx", " new")) == (-0.5, False)


def test_unwritable_run_folder_fails_cleanly(model, tmp_path, monkeypatch):
    """The run folder stops taking writes mid-eval (here: a file is put where the cache folder
    belongs, which fails even as root): one line, the manifest says failed."""
    real = HookedLMEval._score_batch
    state = {"n": 0}

    def sabotage(self, contexts, rows):
        state["n"] += 1
        if state["n"] == 1:  # before the first finished request is recorded
            cache = tmp_path / "ro" / "cache"
            shutil.rmtree(cache, ignore_errors=True)
            cache.write_text("not a folder")
        return real(self, contexts, rows)

    monkeypatch.setattr(HookedLMEval, "_score_batch", sabotage)
    with pytest.raises(RunFolderError, match="cannot write the request cache .*ro/cache/base.requests.jsonl") as err:
        run_eval({"base": model}, TASKS, runs_dir=tmp_path, name="ro", limit=6, batch_size=2, console=False)
    assert "\n" not in str(err.value)
    run = RunStore(tmp_path).open("ro")
    assert run.status == "failed" and "cannot write" in run.manifest["error"]


def test_unwritable_results_end_failed(model, tmp_path, monkeypatch):
    """A write of the run's own artifacts fails (samples/ is a file): RunFolderError, manifest failed."""
    real = HookedLMEval._score_batch

    def sabotage(self, contexts, rows):
        samples = tmp_path / "ro2" / "samples"
        if not samples.exists():
            samples.write_text("not a folder")
        return real(self, contexts, rows)

    monkeypatch.setattr(HookedLMEval, "_score_batch", sabotage)
    with pytest.raises(RunFolderError, match=r"cannot write the run folder .*ro2") as err:
        run_eval({"base": model}, "harness_knowledge", runs_dir=tmp_path, name="ro2", limit=2, console=False)
    assert "\n" not in str(err.value)
    run = RunStore(tmp_path).open("ro2")
    assert run.status == "failed" and run.manifest["error"].startswith("cannot write the run folder")
