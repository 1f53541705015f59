"""Every bad input ends as one line `harness: error: ...` and exit status 2, never a traceback:
malformed files, bad numbers, the environment, damaged runs, names that would leave the runs
folder, and bad input that must not leave a half-made run behind.

Each case runs the real CLI in this process (the same `main` the console script calls) on tiny
models and files made here."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from apps.cli import main
from tests.apps.fixtures import save_model

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A good tiny model, damaged copies of it, and damaged data files."""
    root = tmp_path_factory.mktemp("bad-inputs")
    good = save_model(root / "good", 0)
    f = {"root": root, "good": good}

    def variant(name, edit):
        folder = root / name
        shutil.copytree(good, folder)
        edit(folder)
        f[name] = folder

    def edit_config(key, value):
        def edit(folder):
            config = json.loads((folder / "config.json").read_text())
            config[key] = value
            (folder / "config.json").write_text(json.dumps(config))
        return edit

    variant("config_string", edit_config("hidden_size", "sixty-four"))
    variant("config_negative", edit_config("num_hidden_layers", -1))
    variant("config_arch", edit_config("model_type", "bogus"))
    variant("config_json", lambda d: (d / "config.json").write_text("{not json"))
    variant("tokenizer_truncated", lambda d: (d / "tokenizer.json").write_text((d / "tokenizer.json").read_text()[:200]))
    variant("weights_truncated", lambda d: _truncate(next(d.glob("*.safetensors"))))
    variant("weights_missing", lambda d: next(d.glob("*.safetensors")).unlink())
    variant("weights_pickled", lambda d: next(d.glob("*.safetensors")).rename(d / "pytorch_model.bin"))
    # GGUF: a valid magic and version, then a metadata key length of 2**62
    (root / "absurd.gguf").write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (1).to_bytes(8, "little")
                                       + (1).to_bytes(8, "little") + (2**62).to_bytes(8, "little") + b"abc")
    (root / "not.gguf").write_bytes(b"this is not a gguf file at all")
    (root / "garbage.safetensors").write_bytes(bytes(range(256)) * 4)
    (root / "binary.txt").write_bytes(b"\xff\xfe\x00\x81" * 500)
    (root / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 50)
    (root / "empty.txt").write_text("")
    (root / "a-file").write_text("not a folder")
    suite = root / "suite-binary"
    suite.mkdir()
    (suite / "task.yaml").write_text("task: t\ndataset_path: json\ndataset_kwargs:\n  data_files: {test: data.jsonl}\n"
                                     "test_split: test\noutput_type: loglikelihood\ndoc_to_text: '{{q}}'\n"
                                     "doc_to_target: '{{a}}'\nmetric_list:\n  - metric: acc\n")
    (suite / "data.jsonl").write_bytes(b'{"q": "fine", "a": "yes"}\n\x00\xff\xfe garbage \x81\n')
    prompts = root / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello"}\nnot json at all\n')
    f["runs"] = root / "runs"
    return f


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def cache(f, model="good", **flags):
    argv = ["cache", "--model", str(f[model]) if model in f else model, "--hooks", HOOK, "--corpus", "stdlib-docs",
            "--tokens", "256", "--out", str(f["root"] / "caches" / model)]
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


def probe(f, *extra, positive="builtin:harmful"):
    return ["probe", "--model", str(f["good"]), "--positive", positive, "--negative", "builtin:harmless",
            "--limit", "4", "--runs", str(f["runs"]), *extra]


# (id, argv from the files, words the one line must contain)
CASES = [
    # -- malformed files ------------------------------------------------------------------------
    ("config-string-field", lambda f: cache(f, "config_string"), "config.json"),
    ("config-negative-layers", lambda f: cache(f, "config_negative"), "n_layers"),
    ("config-unknown-architecture", lambda f: cache(f, "config_arch"), "bogus"),
    ("config-not-json", lambda f: cache(f, "config_json"), "config.json"),
    ("tokenizer-truncated", lambda f: cache(f, "tokenizer_truncated"), "tokenizer"),
    ("weights-truncated", lambda f: cache(f, "weights_truncated"), "corrupt weights"),
    ("weights-missing", lambda f: cache(f, "weights_missing"), "safetensors"),
    ("weights-only-pickled", lambda f: cache(f, "weights_pickled"), "pickled"),
    ("gguf-absurd-key-length", lambda f: cache(f, str(f["root"] / "absurd.gguf")), "GGUF"),
    ("gguf-bad-magic", lambda f: cache(f, str(f["root"] / "not.gguf")), "GGUF"),
    ("corpus-binary", lambda f: cache(f, corpus=str(f["root"] / "binary.txt")), "binary.txt"),
    ("corpus-not-utf8", lambda f: cache(f, corpus=str(f["root"] / "latin1.txt")), "latin1.txt"),
    ("corpus-empty", lambda f: cache(f, corpus=str(f["root"] / "empty.txt")), "empty.txt"),
    ("suite-jsonl-binary", lambda f: ["eval", "--base", str(f["good"]), "--suite", str(f["root"] / "suite-binary"),
                                      "--runs", str(f["runs"])], "suite-binary"),
    ("directions-garbage", lambda f: ["steer", "--model", str(f["good"]), "--prompts", "builtin:harmless",
                                      "--direction", str(f["root"] / "garbage.safetensors"), "--runs", str(f["runs"])],
     "garbage.safetensors"),
    ("prompts-bad-jsonl-line", lambda f: probe(f, positive=str(f["root"] / "prompts.jsonl")), "prompts.jsonl:2: not JSON Lines"),
    # -- bad numbers ----------------------------------------------------------------------------
    ("tokens-inf", lambda f: cache(f, tokens="inf"), "--tokens"),
    ("tokens-1e30", lambda f: cache(f, tokens="1e30"), "--tokens"),
    ("tokens-zero", lambda f: cache(f, tokens="0"), "--tokens"),
    ("tokens-negative", lambda f: cache(f, tokens="-5k"), "--tokens"),
    ("tokens-words", lambda f: cache(f, tokens="lots"), "--tokens"),
    ("tokens-fractional", lambda f: cache(f, tokens="10.5"), "--tokens"),
    ("context-length-zero", lambda f: cache(f, context_length="0"), "--context-length"),
    ("shard-contexts-zero", lambda f: cache(f, shard_contexts="0"), "--shard-contexts"),
    ("batch-size-zero", lambda f: cache(f, batch_size="0"), "--batch-size"),
    ("heldout-fraction-above-one", lambda f: cache(f, heldout_fraction="1.5"), "--heldout-fraction"),
    ("shard-mb-nan", lambda f: cache(f, shard_mb="nan"), "--shard-mb"),
    ("sae-batch-tokens-zero", lambda f: ["sae", "train", "--model", str(f["good"]), "--hook", HOOK, "--d-sae", "8",
                                         "--tokens", "1k", "--corpus", "stdlib-docs", "--batch-tokens", "0",
                                         "--runs", str(f["runs"])], "--batch-tokens"),
    ("eval-limit-zero", lambda f: ["eval", "--base", str(f["good"]), "--limit", "0", "--runs", str(f["runs"])], "limit"),
    ("probe-test-frac-zero", lambda f: probe(f, "--test-frac", "0"), "--test-frac"),
    ("circuits-n-zero", lambda f: ["circuits", "heads", "--model", str(f["good"]), "--n", "0"], "--n"),
    ("app-port-zero", lambda f: ["app", "--port", "0"], "--port"),
    ("app-port-too-high", lambda f: ["app", "--port", "70000"], "--port"),
    # -- the environment ------------------------------------------------------------------------
    ("cache-out-under-a-file", lambda f: cache(f, out=str(f["root"] / "a-file" / "cache")), "a-file"),
    ("cache-out-unwritable", lambda f: cache(f, out="/proc/harness-cache"), "cannot write"),
    ("probe-runs-unwritable", lambda f: probe(f)[:-2] + ["--runs", "/proc/harness-runs"], "cannot write"),
    ("eval-runs-under-a-file", lambda f: ["eval", "--base", str(f["good"]), "--suite", "default", "--limit", "1",
                                          "--runs", str(f["root"] / "a-file" / "runs")], "a-file"),
    ("sae-runs-unwritable", lambda f: ["sae", "train", "--model", str(f["good"]), "--hook", HOOK, "--d-sae", "64",
                                       "--tokens", "8k", "--corpus", "stdlib-docs", "--runs", "/proc/harness-runs"],
     "cannot write"),
    ("organism-out-unwritable", lambda f: ["organism", "build", "--out", str(f["root"] / "a-file" / "organisms")],
     "a-file"),
    ("app-runs-missing", lambda f: ["app", "--runs", str(f["root"] / "no-such-runs")], "no such folder"),
    ("unknown-model", lambda f: cache(f, "no-such-model-anywhere"), "no-such-model-anywhere"),
    ("unknown-hook", lambda f: cache(f, hooks="blocks.99.hook_resid_post"), "blocks.99"),
    ("missing-prompts-file", lambda f: probe(f, positive=str(f["root"] / "nope.txt")), "nope.txt"),
    # -- names that would leave the runs folder -------------------------------------------------
    ("eval-name-absolute", lambda f: ["eval", "--base", str(f["good"]), "--runs", str(f["runs"]),
                                      "--name", str(f["root"] / "outside")], "name"),
    ("eval-name-with-slash", lambda f: ["eval", "--base", str(f["good"]), "--runs", str(f["runs"]),
                                        "--name", "a/b"], "name"),
    ("probe-name-dotdot", lambda f: probe(f, "--name", "../escaped"), "name"),
    ("cache-name-with-slash", lambda f: cache(f)[:-2] + ["--name", "nested/escaped", "--runs", str(f["runs"])], "name"),
    ("steer-name-dotdot", lambda f: ["steer", "--model", str(f["good"]), "--prompts", "builtin:harmless",
                                     "--positive", "builtin:harmful", "--negative", "builtin:harmless",
                                     "--runs", str(f["runs"]), "--name", ".."], "name"),
    # -- bad input found after the run would have been created: no half-made run ---------------
    ("circuits-unknown-task", lambda f: ["circuits", "patch", "--model", str(f["good"]), "--task", "nope",
                                         "--runs", str(f["runs"]), "--name", "half-circuits"], "nope"),
    ("probe-layer-out-of-range", lambda f: probe(f, "--layers", "99", "--name", "half-probe"), "99"),
]


@pytest.mark.parametrize("case_id,argv,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(files, capsys, case_id, argv, words):
    with pytest.raises(SystemExit) as exit_info:
        main(argv(files))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), err
    assert words.lower() in lines[0].lower(), lines[0]


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40


def test_bad_input_never_leaves_a_run_or_writes_outside(files):
    runs = files["runs"]
    names = {p.name for p in runs.iterdir()} if runs.is_dir() else set()
    assert not names & {"half-circuits", "half-probe", "escaped", "a"}, names
    assert not (files["root"] / "outside").exists() and not (files["root"] / "escaped").exists()


def test_a_busy_port_is_one_line(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(SystemExit) as exit_info:
            main(["app", "--port", str(sock.getsockname()[1])])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "pick another --port" in err


def test_an_unexpected_error_is_one_line_naming_a_log(monkeypatch, tmp_path, capsys):
    import apps.cli.models
    import apps.cli.runs

    monkeypatch.setenv("INTERP_HARNESS_CACHE", str(tmp_path))

    def boom(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(apps.cli.models, "cmd_models", boom)
    with pytest.raises(SystemExit) as exit_info:
        main(["models"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "internal error: ZeroDivisionError: a bug" in err
    log = Path(err.split("traceback in ")[1].split(";")[0])
    assert log.parent == tmp_path / "logs" and "Traceback" in log.read_text() and "ZeroDivisionError" in log.read_text()


def test_a_damaged_manifest_is_listed_not_fatal(tmp_path, capsys):
    from harness.runs import RunStore

    store = RunStore(tmp_path / "runs")
    store.create("demo", name="fine").finish()
    broken = store.create("demo", name="broken")
    broken.manifest["created"] = 5
    broken.save_manifest()
    (store.root / "not-json").mkdir()
    (store.root / "not-json" / "manifest.json").write_text("{")
    assert main(["runs", "--runs", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "fine" in out and "broken" in out and "corrupt" in out and "not-json" in out


def test_version():
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0


def test_a_cache_whose_folder_stops_taking_writes_ends_failed_in_one_line(files, monkeypatch, capsys):
    """The folder turns read-only after the first shard (injected: root ignores permission bits)."""
    import errno
    import json as json_

    import harness.caching.job as job  # the shard loop every cache shares

    real, calls = job.write_shard, {"n": 0}

    def write_shard(folder, index, tensors):
        calls["n"] += 1
        if calls["n"] > 1:
            raise PermissionError(errno.EACCES, "Permission denied", str(folder / f"shard_{index:05d}.safetensors"))
        return real(folder, index, tensors)

    monkeypatch.setattr(job, "write_shard", write_shard)
    out = files["root"] / "caches" / "read-only-later"
    argv = cache(files, out=str(out), tokens="512", context_length="32", batch_size="2", shard_contexts="4")
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "caching" not in line]
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("harness: error: permission denied")
    manifest = json_.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "Permission" in manifest["error"]
    assert (out / "shard_00000.safetensors").is_file()  # what was finished is kept
    monkeypatch.setattr(job, "write_shard", real)
    assert main(argv) == 0  # the same command resumes and finishes
    assert json_.loads((out / "manifest.json").read_text())["status"] == "complete"
