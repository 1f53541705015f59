"""The run store: atomic writes, names that cannot escape, listing bad folders, round trips."""

import json
import os
from pathlib import Path

import pytest
import torch

from harness.errors import RunError
from harness.runs import MANIFEST, RunStore



@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def test_create_writes_manifest(store):
    run = store.create("demo", name="first", command=["harness", "demo"], config={"k": 1, "p": store.root}, seed=3)
    m = json.loads((run.path / MANIFEST).read_text())
    assert m["kind"] == "demo" and m["name"] == "first" and m["status"] == "running"
    assert m["command"] == "harness demo" and m["seed"] == 3 and m["config"]["k"] == 1
    assert isinstance(m["config"]["p"], str)  # paths in configs are stored as text
    for key in ("python", "torch", "transformers", "transformer_lens", "sae_lens", "lm_eval", "harness"):
        assert key in m["versions"]
    assert m["versions"]["torch"] and m["versions"]["harness"]
    assert m["compute"] == {"torch_threads": torch.get_num_threads(), "cpu_matmul": "onednn"}


def test_manifest_records_the_cpu_matmul_in_use(store):
    from harness.models.linear import using_cpu_matmul

    with using_cpu_matmul("aten"):
        run = store.create("demo", name="plain-matmul")
    assert run.manifest["compute"]["cpu_matmul"] == "aten"


def test_default_names_are_unique(store):
    a, b = store.create("demo"), store.create("demo")
    assert a.name.startswith("demo-") and a.name != b.name


def test_existing_name_is_refused(store):
    store.create("demo", name="x")
    with pytest.raises(RunError, match="already exists"):
        store.create("demo", name="x")
    with pytest.raises(RunError, match="already exists"):
        store.check_available("x")
    with pytest.raises(RunError, match="invalid"):
        store.check_available("../x")
    store.check_available("y")


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", ".", ".hidden", "", "a b", "a\\b", "-x"])
def test_names_cannot_escape(store, name):
    with pytest.raises(RunError):
        store.create("demo", name=name)
    assert not (store.root.parent / "x").exists()


def test_kind_is_checked(store):
    with pytest.raises(RunError):
        store.create("../evil")


def test_symlinked_name_outside_root_is_refused(store, tmp_path):
    store.root.mkdir(parents=True)
    (store.root / "link").symlink_to(tmp_path)
    with pytest.raises(RunError, match="outside"):
        store.open("link")


@pytest.mark.parametrize("rel", ["../x.json", "/tmp/x.json", "a/../../x.json", MANIFEST, "sub/../manifest.json", ""])
def test_artifact_paths_cannot_escape(store, rel):
    run = store.create("demo", name="r")
    with pytest.raises(RunError):
        run.write_json(rel, {"a": 1})


def test_round_trips(store):
    run = store.create("demo", name="r")
    run.write_json("metrics.json", {"a": 1.5, "b": [1, 2]})
    run.write_jsonl("gen/rows.jsonl", [{"i": 0, "text": "héllo"}, {"i": 1, "text": "x\ny"}])
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "blocks.0.hook_resid_post": torch.randn(4, 5).t()}
    run.write_tensors("acts.safetensors", tensors, metadata={"prompt": "hi", "n": 2})
    run.write_text("fig.html", "<html></html>")

    again = store.open("r")
    assert again.read_json("metrics.json") == {"a": 1.5, "b": [1, 2]}
    assert again.read_jsonl("gen/rows.jsonl")[1]["text"] == "x\ny"
    back, meta = again.read_tensors("acts.safetensors", with_metadata=True)
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)
    assert meta == {"prompt": "hi", "n": "2"}
    assert again.artifacts == ["metrics.json", "gen/rows.jsonl", "acts.safetensors", "fig.html"]
    assert again.read_text("fig.html") == "<html></html>"
    with pytest.raises(RunError, match="no artifact"):
        again.read_json("missing.json")


def test_parquet_round_trip(store):
    import pandas as pd  # a dependency of lm-eval and datasets; parquet via pyarrow
    run = store.create("demo", name="r")
    frame = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    run.write_parquet("t.parquet", frame)
    assert run.read_parquet("t.parquet").equals(frame)


def test_rewriting_an_artifact_keeps_one_entry(store):
    run = store.create("demo", name="r")
    run.write_json("m.json", {"v": 1})
    run.write_json("m.json", {"v": 2})
    assert run.artifacts == ["m.json"] and run.read_json("m.json") == {"v": 2}


def test_crash_mid_write_leaves_no_partial_artifact(store, monkeypatch):
    run = store.create("demo", name="r")
    run.write_json("keep.json", {"v": 1})

    def crash(src, dst):
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        run.write_tensors("acts.safetensors", {"x": torch.zeros(3)})
    with pytest.raises(OSError):
        run.write_json("keep.json", {"v": 2})
    monkeypatch.undo()

    # The new artifact does not exist, the old one is intact, no temp files are left behind.
    assert sorted(p.name for p in run.path.iterdir()) == ["keep.json", MANIFEST]
    assert run.read_json("keep.json") == {"v": 1}
    assert store.open("r").artifacts == ["keep.json"]


def test_models_timings_finish(store):
    with store.create("demo", name="r") as run:
        run.add_model("tiny", {"name": "tiny", "weights_sha256": "ab" * 32})
        run.record_timing("load/tiny", 0.123456)
        with run.timer("step"):
            pass
    m = store.open("r").manifest
    assert m["status"] == "complete" and m["finished"]
    assert m["models"]["tiny"]["weights_sha256"] == "ab" * 32
    assert m["timings"]["load/tiny"] == 0.1235 and "step" in m["timings"] and "total" in m["timings"]


def test_failed_and_interrupted_runs_are_marked(store):
    with pytest.raises(ValueError):
        with store.create("demo", name="bad"):
            raise ValueError("boom")
    with pytest.raises(KeyboardInterrupt):
        with store.create("demo", name="stopped"):
            raise KeyboardInterrupt
    assert store.open("bad").manifest["status"] == "failed"
    assert "boom" in store.open("bad").manifest["error"]
    assert store.open("stopped").status == "interrupted"
    with pytest.raises(RunError):
        store.open("bad").finish("weird")


def test_finish_records_metrics(store):
    run = store.create("demo", name="r")
    run.finish(metrics={"acc": 0.5})
    assert store.open("r").manifest["metrics"] == {"acc": 0.5}


def test_list_flags_corrupt_and_missing_manifests(store):
    store.create("demo", name="good").finish()
    store.create("demo", name="corrupt")
    (store.root / "corrupt" / MANIFEST).write_text("{not json")
    (store.root / "empty").mkdir()
    (store.root / "stray.txt").write_text("not a run")
    infos = {i.name: i for i in store.list()}
    assert set(infos) == {"good", "corrupt", "empty"}
    assert infos["good"].error is None and infos["good"].status == "complete" and infos["good"].kind == "demo"
    assert "unreadable" in infos["corrupt"].error
    assert "missing" in infos["empty"].error
    with pytest.raises(RunError):
        store.open("corrupt")


def test_open_by_path_and_missing(store):
    run = store.create("demo", name="r")
    assert store.open(run.path).name == "r"
    assert RunStore(store.root / "elsewhere").open(str(run.path)).name == "r"
    with pytest.raises(RunError, match="no run"):
        store.open("nope")


def test_default_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_HARNESS_RUNS", str(tmp_path / "r"))
    assert RunStore().root == tmp_path / "r"
    assert RunStore().list() == []


def test_bad_input_before_any_work_leaves_no_run(store):
    from harness.errors import ConfigError

    with pytest.raises(ConfigError):
        with store.create("probe", name="never-started"):
            raise ConfigError("bad --layers")
    assert not (store.root / "never-started").exists()
    with pytest.raises(ConfigError):  # once an artifact exists the run is kept, marked failed
        with store.create("probe", name="half") as run:
            run.write_json("a.json", {})
            raise ConfigError("bad later")
    assert store.open("half").status == "failed"


@pytest.mark.parametrize("name", ["a/b", "../outside", "/abs/outside/x", "..", ".hidden", "", "a\\b"])
def test_a_name_never_leaves_the_runs_folder(store, tmp_path, name):
    before = set(tmp_path.rglob("*"))
    for call in (lambda: store.create("eval", name=name), lambda: store.path_of(name),
                 lambda: store.resume(name, "eval")):
        with pytest.raises(RunError):
            call()
    assert set(tmp_path.rglob("*")) - before <= {store.root}  # nothing written anywhere else


def test_a_symlinked_name_that_leads_outside_is_refused(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    store.root.mkdir(parents=True, exist_ok=True)
    (store.root / "link").symlink_to(outside)
    with pytest.raises(RunError, match="outside the runs folder"):
        store.resume("link", "eval")
    assert not list(outside.iterdir())


def test_resume_marks_an_unfinished_run_running_and_refuses_others(store):
    run = store.create("eval", name="e")
    run.finish("failed", error="killed")
    again = store.resume("e", "eval")
    assert again.status == "running" and again.manifest["resumed"] == 1 and again.manifest.get("error") is None
    again.finish()
    with pytest.raises(RunError, match="already complete"):
        store.resume("e", "eval")
    store.create("sae", name="s")
    with pytest.raises(RunError, match="not a eval run"):
        store.resume("s", "eval")
    assert store.resume("nothing-here", "eval") is None


def test_notes_warnings_and_metrics_are_recorded_once(store):
    run = store.create("eval", name="n")
    assert run.add_note("shared a template") and not run.add_note("shared a template")
    run.add_warning("prompted differently")
    run.add_metrics({"acc": 0.5})
    m = store.open("n").manifest
    assert m["notes"] == ["shared a template"] and m["warnings"] == ["prompted differently"]
    assert m["metrics"] == {"acc": 0.5}


@pytest.mark.parametrize("field,value", [("created", 5), ("models", "x"), ("status", ["running"]),
                                         ("name", 3), ("metrics", [1])])
def test_a_manifest_field_of_the_wrong_type_is_listed_as_corrupt(store, field, value):
    store.create("demo", name="good").finish()
    bad = store.create("demo", name="bad")
    bad.manifest[field] = value
    bad.save_manifest()
    infos = {i.name: i for i in store.list()}
    assert infos["good"].error is None
    assert f"field {field!r}" in infos["bad"].error


def test_a_run_whose_process_died_is_listed_as_stale(store):
    import subprocess
    import sys

    code = ("from harness.runs import RunStore; import os; "
            f"RunStore({str(store.root)!r}).create('demo', name='killed'); os._exit(9)")
    subprocess.run([sys.executable, "-c", code], check=False)
    assert {i.name: i.status for i in store.list()}["killed"] == "stale"
    assert store.open("killed").status == "running"  # the manifest itself is not rewritten


def test_an_unwritable_runs_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    for root in (tmp_path / "file" / "runs", Path("/proc/no-runs-here")):
        with pytest.raises(RunError, match="cannot write to"):
            RunStore(root).create("demo")


def test_damaged_tensors_name_their_file(store):
    run = store.create("demo", name="t")
    run.write_bytes("x.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", "safetensors")
    with pytest.raises(RunError, match="x.safetensors: not a readable safetensors file"):
        run.read_tensors("x.safetensors")
