"""The dashboard's pages, run headless with streamlit.testing.v1.AppTest against runs made by
the harness's own producers on tiny models (tests/apps/fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from harness.runs import RunStore
from tests.apps.apptest import app, ok, page
from tests.apps.fixtures import make_fixtures

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return make_fixtures(tmp_path_factory.mktemp("dashboard"))


@pytest.fixture(autouse=True)
def runs_env(request, monkeypatch):
    """Tests that use the fixture runs see them as the runs folder."""
    if "fx" in request.fixturenames:
        monkeypatch.setenv("INTERP_HARNESS_RUNS", str(request.getfixturevalue("fx").runs))


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "info", "warning", "error")
                     for e in at.get(kind))


def test_app_navigates_every_page(fx):
    at = app()
    assert not at.exception and at.title[0].value == "Runs"
    for name, title in [("evaluation", "Evaluation"), ("features", "Features"), ("circuits", "Circuits"),
                        ("model_diff", "Model diff"), ("activations", "Activations"),
                        ("probes", "Probes & steering")]:
        at.switch_page(f"pages/{name}.py").run()
        assert not at.exception, (name, [e.message for e in at.exception])
        assert at.title[0].value == title


def test_runs_page_lists_runs_and_shows_a_corrupt_manifest_on_its_card(fx):
    at = page("runs")
    assert not at.exception
    body = texts(at)
    for name in ("demo-tiny", "eval-tiny", "sae-tiny", "circuits-heads", "circuits-patch", "diff-tiny"):
        assert name in body
    assert len(at.error) == 1 and "broken-run" in at.error[0].value and "unreadable manifest.json" in at.error[0].value
    at.multiselect(key="filter_kinds").set_value(["eval"]).run()
    body = texts(at)
    assert "eval-tiny" in body and "demo-tiny" not in body and "broken-run" in body
    at.multiselect(key="filter_kinds").set_value(["circuits", "demo", "diff", "eval", "sae"]).run()
    at.selectbox(key="open_select").set_value("demo-tiny").run()
    assert not at.exception and len(charts(at)) == 1  # the demo's residual-norm figure
    details = "\n".join(c.value for c in at.code)
    assert '"cpu_matmul": "onednn"' in details and '"torch_threads"' in details  # the manifest's compute settings
    assert any("generations.jsonl" in str(df.value) for df in at.dataframe)


def test_runs_page_opens_a_run_in_its_page(fx):
    at = app()
    at.selectbox(key="open_select").set_value("eval-tiny").run()
    at.button(key="open_page").click().run()
    assert not at.exception and at.title[0].value == "Evaluation"
    assert at.selectbox(key="pick_eval").value == "eval-tiny"


def test_runs_page_without_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_HARNESS_RUNS", str(tmp_path / "none"))
    at = page("runs")
    assert not at.exception and "No runs in" in at.info[0].value


def test_evaluation_page(fx):
    at = ok(page("evaluation"))
    figs = charts(at)
    assert len(figs) == 3  # the organism suite, scores with CIs, paired differences with CIs
    scores, diffs = json.loads(figs[1].proto.spec), json.loads(figs[2].proto.spec)
    assert any("error_y" in t for t in scores["data"]) and "error_x" in figs[2].proto.spec and diffs["data"]
    assert at.selectbox(key="eval_task").options == ["harness_knowledge", "harness_perplexity", "harness_sycophancy"]
    changed = [df for df in at.dataframe if "base answer" in df.value.columns]
    assert changed, "the changed items table is missing"
    assert "items differ between" in texts(at)
    # side by side: one bordered column per model with its answer
    assert {"**base**", "**aligned**"} <= {m.value for m in at.markdown}
    at.selectbox(key="eval_task").set_value("harness_sycophancy").run()
    ok(at)


def test_evaluation_page_puts_perplexity_on_its_own_log_axis(fx):
    from apps.dashboard import evaldata, figures

    at = ok(page("evaluation"))
    spec = json.loads(charts(at)[1].proto.spec)
    by_axis = {}
    for trace in spec["data"]:
        by_axis.setdefault(trace.get("yaxis", "y"), []).extend(trace["x"])
    linear, log = by_axis["y"], by_axis["y2"]
    assert log and all(figures.is_perplexity_like(x.split(" · ")[1]) for x in log)
    assert linear and not any(figures.is_perplexity_like(x.split(" · ")[1]) for x in linear)
    assert spec["layout"]["yaxis2"]["type"] == "log" and spec["layout"]["yaxis"].get("type") != "log"
    # the perplexity of a random model is huge; the accuracies stay on their own 0..1 axis
    rows = evaldata.scores(fx.runs / "eval-tiny", "base")
    assert max(r["value"] for r in rows if r["metric"] == "word_perplexity") > 10
    assert {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"} & {x.split(" · ")[1] for x in log}


def test_evaluation_page_shows_the_organism_suite_and_says_the_standard_suites_are_unreadable(fx):
    at = ok(page("evaluation"))
    heads = [h.value for h in at.subheader]
    assert heads[:2] == ["Organism suite: tiny-refusal-small's own held-out prompts", "Standard suites"]
    suite = json.loads(charts(at)[0].proto.spec)
    stored = RunStore(fx.runs).open("eval-tiny").read_json("organism_suite.json")
    base_bars = next(t for t in suite["data"] if t["name"] == "base")
    assert base_bars["y"][1] == stored["models"]["base"]["control_refusal_rate"]
    assert stored["n_prompts"] == {"topic": 28, "control": 84}
    assert any("cannot read those English tasks" in w.value for w in at.warning)
    assert "narrow_refusal" in texts(at) and "Cost on the controls" in texts(at)


def test_evaluation_page_shows_the_runs_warnings_and_notes(fx, tmp_path, monkeypatch):
    import shutil

    source = RunStore(fx.runs).open("eval-tiny").path
    copy = tmp_path / "runs" / "eval-tiny"
    shutil.copytree(source, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.update(warnings=["a prompted differently"], notes=["b was given a's chat template"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("INTERP_HARNESS_RUNS", str(tmp_path / "runs"))
    at = ok(page("evaluation"))
    assert [w.value for w in at.warning] == ["a prompted differently"]
    assert "b was given a's chat template" in [i.value for i in at.info]


def test_pages_without_runs_of_their_kind_say_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_HARNESS_RUNS", str(tmp_path / "empty"))
    for name, command in [("evaluation", "harness eval"), ("features", "harness sae"), ("circuits", "harness circuits"),
                          ("model_diff", "write_diff"), ("probes", "harness probe")]:
        at = page(name)
        assert not at.exception
        assert any(command in i.value for i in at.info), (name, [i.value for i in at.info])


def test_activations_page(fx):
    at = page("activations")
    assert not at.exception and "Choose a model" in at.info[0].value
    at = ok(page("activations", model=str(fx.base)))
    assert len(charts(at)) == 2  # logit lens, attention pattern
    assert any("class='tokens'" in m.value for m in at.markdown)
    assert at.selectbox(key="act_sae").value == "sae-tiny"  # the SAE trained on this model
    assert any("Top SAE features per token" in m.value for m in at.markdown)
    at.selectbox(key="act_value").set_value("one dimension").run()
    at.selectbox(key="act_layer").set_value(1)
    at.selectbox(key="act_head").set_value(3).run()
    ok(at)
    at.checkbox(key="act_pair").check().run()
    at.selectbox(key="act_model_b").set_value(str(fx.aligned)).run()
    ok(at)
    assert len(at.tabs) == 2 and len(charts(at)) == 4


def test_activations_page_rejects_a_prompt_longer_than_the_context(fx):
    at = page("activations", model=str(fx.base))
    at.text_area(key="act_prompt").set_value("the capital " * 200).run()
    assert not at.exception and not charts(at)
    assert "context is 256 tokens" in at.error[0].value and "shorten it" in at.error[0].value


def test_activations_page_reports_a_model_that_does_not_load(fx, tmp_path):
    at = page("activations", model=str(tmp_path / "no-such-model"))
    assert not at.exception and "could not load model" in at.error[0].value


def test_features_page_shows_the_stored_analysis(fx):
    at = ok(page("features"))
    assert len(charts(at)) == 3  # density, activation histogram, logit effects of the chosen feature
    assert "Analysed features (6" in " ".join(h.value for h in at.subheader)
    assert any("context " in m.value and "class='tokens'" in m.value for m in at.markdown)
    last = json.loads((fx.runs / "sae-tiny" / "features.json").read_text())["features"][-1]["feature"]
    at.selectbox(key="feat_stored_id").set_value(last).run()
    ok(at)
    assert f"Feature {last}: logit effects" in charts(at)[2].proto.spec
    at.text_input(key="feat_stored_search").set_value("zzzz-not-a-token").run()
    assert "0 analysed features" in texts(at)


def test_features_page_browses_any_feature_live(fx):
    at = page("features")
    at.toggle(key="feat_live").set_value(True).run()
    ok(at)
    assert len(charts(at)) == 5  # + the live activation histogram and logit effects
    at.text_input(key="feat_search").set_value(" the").run()
    ok(at)
    assert any("feature" in df.value.columns for df in at.dataframe)
    at.number_input(key="feat_id").set_value(3).run()
    ok(at)


def test_circuits_page(fx):
    at = ok(page("circuits"))
    assert len(charts(at)) == 1  # the newest circuit run: the patching sweep's heatmap
    at.selectbox(key="pick_circuits").set_value("circuits-heads").run()
    ok(at)
    assert len(charts(at)) == 3  # one heatmap per head detector, as `harness circuits heads` drew them
    assert "top induction" in texts(at)
    at = ok(page("circuits", model=str(fx.base)))
    assert len(charts(at)) == 2  # + the live head-detector heatmap
    at.radio(key="circ_detector").set_value("induction").run()
    ok(at)


def test_model_diff_page(fx):
    at = page("model_diff")
    at.selectbox(key="pick_diff").set_value("diff-tiny").run()
    ok(at)
    assert "Choose two models" in at.info[0].value
    assert len(charts(at)) == 2  # the diff run: per-layer metrics, KL per prompt and position
    assert "Promoted by the aligned model" in texts(at)
    at.select_slider(key="diffrun_layer").set_value(0).run()
    ok(at)
    at = ok(page("model_diff", model_a=str(fx.base), model_b=str(fx.aligned)))
    assert "Neither model has mixture-of-experts layers" in texts(at)


def test_model_diff_kl_heatmap_stays_readable_at_112_prompts(fx):
    # the main job's overview on 112 held-out prompts (picked by name: its per-method runs are made in
    # the same second, so which one lists first is not fixed)
    at = page("model_diff")
    at.selectbox(key="pick_diff").set_value("main-diff").run()
    ok(at)
    figs = {json.loads(c.proto.spec)["layout"]["title"]["text"].split(":")[0]: json.loads(c.proto.spec) for c in charts(at)}
    heat = next(f for t, f in figs.items() if t.startswith("Next-token KL"))
    assert len(heat["data"][0]["y"]) == 40 and heat["layout"]["height"] <= 160 + 22 * 40
    summary = next(f for t, f in figs.items() if t.startswith("Mean next-token KL"))
    assert sorted(t["name"] for t in summary["data"]) == ["control (84)", "topic (28)"]
    assert sum(len(t["y"]) for t in summary["data"]) == 112 and summary["layout"]["height"] == 360


def test_model_diff_page_shows_the_scoring_table(fx):
    at = ok(page("model_diff"))
    table = next(df.value for df in at.dataframe if "recovered" in df.value.columns)
    rows = {r["method"]: r for r in table.to_dict("records")}
    assert {"lens", "kl", "adl", "crosscoder"} <= set(rows)
    for method in ("lens", "kl", "adl"):
        score = RunStore(fx.runs).open(f"main-diff-{method}").read_json("score.json")
        assert rows[method]["recovered"] == ("yes" if score["recovered"] else "NOT recovered")
        assert rows[method]["evidence"] == score["summary"]
    assert rows["crosscoder"]["recovered"] == "-" and "not run by the demo" in rows["crosscoder"]["evidence"]
    assert rows["kl"]["evidence"].startswith("kl: ")  # random models: whatever KL says, stated with its numbers


def test_model_diff_page_shows_an_adl_run(fx):
    at = page("model_diff")
    at.selectbox(key="pick_diff").set_value("main-diff-adl").run()
    ok(at)
    figs = charts(at)
    assert len(figs) == 1 and "norm per layer and position" in figs[0].proto.spec
    heat = json.loads(figs[0].proto.spec)["data"][0]
    assert len(heat["z"]) == 2 and len(heat["z"][0]) == 5  # two layers, the first five positions
    findings = RunStore(fx.runs).open("main-diff-adl").read_json("findings.json")
    frames = [df.value for df in at.dataframe]
    steered = next(df for df in frames if "reply" in df.columns)
    assert list(steered["reply"]) == [r["reply"] for r in findings["extra"]["steered"]]
    per_layer = next(df for df in frames if "aligned lens" in df.columns)
    assert len(per_layer) == 2
    at.selectbox(key="pick_diff").set_value("main-diff-kl").run()
    ok(at)
    kl = json.loads(charts(at)[0].proto.spec)["data"][0]
    assert kl["x"] == ["topic", "control"]


def test_harness_app_serves_on_localhost_unless_told(monkeypatch, tmp_path):
    import subprocess

    from apps.cli import main

    import apps.cli.app

    calls = []

    class Server:  # stands for the Streamlit child: records how it was started, exits at once
        def __init__(self, cmd, env):
            calls.append((cmd, env))

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Server)
    monkeypatch.setattr(apps.cli.app, "check_port_free", lambda host, port: None)  # 8501 may be taken here
    assert main(["app", "--runs", str(tmp_path)]) == 0
    cmd, env = calls[-1]
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("apps/dashboard/app.py")
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1" and cmd[cmd.index("--server.port") + 1] == "8501"
    assert env["INTERP_HARNESS_RUNS"] == str(tmp_path.resolve())
    assert env["HF_HUB_OFFLINE"] == "1" and "INTERP_HARNESS_APP_ANY_MODEL" not in env
    assert main(["app", "--host", "0.0.0.0", "--port", "8600", "--any-model"]) == 0
    cmd, env = calls[-1]
    assert cmd[cmd.index("--server.address") + 1] == "0.0.0.0" and cmd[cmd.index("--server.port") + 1] == "8600"
    assert env["INTERP_HARNESS_APP_ANY_MODEL"] == "1"


def test_harness_app_stops_with_its_server_on_sigterm(tmp_path):
    """A supervisor's `kill PID` takes the dashboard down, Streamlit child included."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "apps", "app", "--runs", str(tmp_path), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not _listening(port):
            time.sleep(0.5)
        assert _listening(port), "the dashboard never started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deadline = time.time() + 15
        while time.time() < deadline and _listening(port):
            time.sleep(0.5)
        assert not _listening(port), "the Streamlit child is still serving"
    finally:
        proc.kill()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_url_cannot_make_the_dashboard_load_an_unnamed_folder(fx, tmp_path, monkeypatch):
    from tests.apps.fixtures import save_model

    stranger = save_model(tmp_path / "stranger", 3)  # a real model folder that no run names
    at = page("activations", model=str(stranger))
    assert not at.exception and not charts(at)
    assert "loads only those" in at.error[0].value and "--any-model" in at.error[0].value
    monkeypatch.setenv("INTERP_HARNESS_APP_ANY_MODEL", "1")  # harness app --any-model
    assert not page("activations", model=str(stranger)).error


def test_harness_app_rejects_a_missing_runs_folder(tmp_path, capsys):
    from apps.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["app", "--runs", str(tmp_path / "missing")])
    assert exit.value.code == 2 and "no such folder" in capsys.readouterr().err


def test_model_diff_page_shows_expert_utilisation_for_moe_models(tmp_path, monkeypatch):
    from tests.apps.fixtures import save_moe_model

    monkeypatch.setenv("INTERP_HARNESS_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("INTERP_HARNESS_APP_ANY_MODEL", "1")  # folders no run names: as `harness app --any-model`
    a, b = save_moe_model(tmp_path / "moe-a", 0), save_moe_model(tmp_path / "moe-b", 1)
    at = ok(page("model_diff", model_a=str(a), model_b=str(b)))
    figs = charts(at)
    assert len(figs) == 4  # divergence, per-token KL, one expert-usage heatmap per model
    assert "Expert fractions" in figs[2].proto.spec


def test_probes_page_shows_the_probe_sweep_and_the_steered_generations(fx):
    at = ok(page("probes"))
    figs = charts(at)
    assert len(figs) == 2  # probe accuracy by layer, refusal rates plain vs steered
    probe = json.loads(figs[0].proto.spec)
    names = {trace.get("name") for trace in probe["data"]}
    assert {"probe, held-out", "probe, train", "direction separation"} <= names
    layers = [r["layer"] for r in RunStore(fx.runs).open("probe-tiny").read_jsonl("probe.jsonl")]
    assert probe["data"][0]["x"] == layers
    steer = json.loads(figs[1].proto.spec)
    metrics = RunStore(fx.runs).open("steer-tiny").manifest["metrics"]
    assert steer["data"][0]["y"] == [metrics["refusal_rate_plain"], metrics["refusal_rate_steered"]]
    assert at.dataframe  # the per-layer table and the generations


def test_probes_page_names_the_missing_file_of_an_incomplete_probe_run(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_HARNESS_RUNS", str(tmp_path))
    with RunStore(tmp_path).create("probe", name="probe-without-results"):
        pass
    at = page("probes")
    assert not at.exception
    assert any("has no probe.jsonl" in w.value for w in at.warning)
