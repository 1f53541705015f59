"""The dashboard's Crosscoder page, headless (AppTest), on a real crosscoder: `harness crosscoder
train` for a few hundred steps on a tiny random model and a copy of it with one direction planted
in the embeddings of its 40 most frequent tokens, then `harness crosscoder latents`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from harness.runs import RunStore
from harness.threads import torch_threads
from tests.apps import apptest
from tests.apps.apptest import ok
from tests.apps.fixtures import save_model



def save_planted(base: Path, folder: Path, n_tokens: int = 40, scale: float = 3.0) -> Path:
    """`base` with one random direction added to the embeddings of the tokens most frequent in the
    crosscoder's texts (skipping the commonest five): a change only the aligned model carries, which
    an L1 crosscoder writes with latents whose base decoder shrinks away (aligned-only latents)."""
    from collections import Counter

    import transformers as tf

    from probes.adl import unrelated_texts

    tok = tf.AutoTokenizer.from_pretrained(base)
    model = tf.LlamaForCausalLM.from_pretrained(base)
    counts = Counter(i for text in unrelated_texts(24) for i in tok.encode(text))
    ids = [i for i, _ in counts.most_common()][5 : 5 + n_tokens]
    emb = model.model.embed_tokens.weight
    v = torch.randn(emb.shape[1], generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        emb[ids] += scale * emb.norm(dim=-1).mean() * v / v.norm()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cc(tmp_path_factory):
    from apps.cli import main

    root = tmp_path_factory.mktemp("crosscoder-page")
    base = save_model(root / "models" / "base", 0)
    aligned = save_planted(base, root / "models" / "aligned")
    runs = root / "runs"
    common = ["--base", str(base), "--aligned", str(aligned), "--n-texts", "24", "--context", "24", "--runs", str(runs)]
    with torch_threads(1):  # thousands of tiny matmuls: one thread is faster on two loaded cores
        assert main(["crosscoder", "train", *common, "--layers", "0", "--d-latent", "64", "--loss", "l1",
                     "--lr", "3e-3", "--steps", "400", "--batch-size", "128", "--name", "cc"]) == 0
        assert main(["crosscoder", "latents", "cc", *common, "--name", "cc-latents"]) == 0
    with RunStore(runs).create("probe", name="not-a-crosscoder", command="test fixture"):
        pass
    findings = json.loads((runs / "cc-latents" / "findings.json").read_text())
    return {"runs": runs, "base": base, "aligned": aligned, "findings": findings}


@pytest.fixture(autouse=True)
def runs_env(request, monkeypatch):
    if "cc" in request.fixturenames:
        monkeypatch.setenv("INTERP_HARNESS_RUNS", str(request.getfixturevalue("cc")["runs"]))


def page(**query) -> AppTest:
    return apptest.page("crosscoder", **query)


def figures(at: AppTest) -> dict[str, dict]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return {s["layout"]["title"]["text"].split(" ")[0]: s for s in specs}


def frame(at: AppTest, column: str):
    return next(df.value for df in at.dataframe if column in df.value.columns)


def test_the_page_shows_relative_norms_latent_scaling_and_the_aligned_only_latents(cc):
    from probes.crosscoder.io import load_crosscoder
    from apps.dashboard.crosscoderviews import line
    from probes.crosscoder.latents import relative_norms

    at = ok(page())  # the newest crosscoder run: the latents run
    figs = figures(at)
    assert set(figs) == {"Relative", "Latent"}
    rel = relative_norms(load_crosscoder(cc["runs"] / "cc" / "crosscoder"))
    hist = figs["Relative"]["data"][0]
    assert hist["type"] == "histogram" and hist["x"] == pytest.approx(rel.tolist(), abs=1e-6)
    aligned_only = int((rel >= 0.9).sum())
    assert f"{aligned_only} aligned-only (>= 0.9)" in figs["Relative"]["layout"]["title"]["text"]

    extra = cc["findings"]["extra"]
    assert [r["id"] for r in extra["scaling"]] == [j for j, r in enumerate(rel.tolist()) if r >= 0.9]
    scatter = {t["name"].split(" (")[0]: [c[0] for c in t["customdata"]] for t in figs["Latent"]["data"]}
    assert sorted(j for ids in scatter.values() for j in ids) == [r["id"] for r in extra["scaling"]]
    kept = [r["id"] for r in extra["scaling"] if r["fired"] and not r["artefact"]]
    assert sorted(scatter.get("aligned-only", [])) == kept
    assert sorted(scatter.get("artefact", [])) == [r["id"] for r in extra["scaling"] if r["artefact"]]

    # the table: the findings' aligned-only latents, in their ranked order, each kept by Latent Scaling
    table = frame(at, "latent")
    listed = list(table["latent"])
    assert listed, "the planted direction should give aligned-only latents"
    assert extra["n_artefacts"] > 0 and scatter.get("artefact")  # ... and Latent Scaling some artefacts
    assert listed == [x["id"] for x in cc["findings"]["latents"]] and set(listed) <= set(kept)
    assert list(table["fires on (texts)"]) == sorted(table["fires on (texts)"], reverse=True)
    assert all(rel[j] >= 0.9 for j in listed)
    last = listed[-1]
    at.selectbox(key="cc_context_latent").set_value(last).run()
    ok(at)
    contexts = next(x for x in cc["findings"]["latents"] if x["id"] == last)["contexts"]
    assert [t.value for t in at.text] == contexts
    assert at.expander[0].label == f"1. {line(contexts[0], 100)}"


def test_the_train_run_shows_the_newest_latents_run_made_from_it(cc):
    at = page()
    at.selectbox(key="pick_crosscoder-latents").set_value("cc").run()
    ok(at)
    assert "findings of run `cc-latents`" in " ".join(c.value for c in at.caption)
    assert list(frame(at, "latent")["latent"]) == [x["id"] for x in cc["findings"]["latents"]]
    assert any("explained variance" in m.label for m in at.metric)


def test_steering_with_a_latent_generates_with_both_models(cc):
    at = page()
    latent = cc["findings"]["latents"][0]["id"]
    assert at.number_input(key="cc_steer_latent").value == latent  # the top aligned-only latent by default
    at.slider(key="cc_steer_strength").set_value(6.0)
    at.toggle(key="cc_steer").set_value(True).run()
    ok(at)
    rows = frame(at, "steered").to_dict("records")
    assert [r["model"] for r in rows] == ["base", "aligned"]
    assert all(r["steered"].strip() and r["plain"].strip() for r in rows), rows
    assert any(r["steered"] != r["plain"] for r in rows), rows  # six mean norms along the latent change the text
    at.slider(key="cc_steer_strength").set_value(0.0).run()
    rows = frame(ok(at), "steered").to_dict("records")
    assert all(r["steered"] == r["plain"] for r in rows)  # strength 0 adds nothing


def test_a_run_of_another_kind_gets_a_clear_error(cc):
    at = page(run="not-a-crosscoder")
    assert not at.exception and not at.get("plotly_chart")
    assert "is a 'probe' run, not a crosscoder run" in at.error[0].value


def test_crosscoder_runs_without_a_readable_crosscoder_get_a_clear_error(tmp_path, monkeypatch):
    from probes.findings import Findings, write_findings

    monkeypatch.setenv("INTERP_HARNESS_RUNS", str(tmp_path))
    store = RunStore(tmp_path)
    with store.create("crosscoder", name="cc-unsaved"):
        pass  # trained nothing, saved nothing
    with store.create("crosscoder-latents", name="cc-gone", config={"crosscoder": "no-such-crosscoder"}) as run:
        write_findings(run, Findings("crosscoder"))
    at = page(run="cc-unsaved")  # ?run= preselects a crosscoder run too
    assert not at.exception and "holds no crosscoder/config.json" in at.error[0].value
    at = page(run="cc-gone")
    assert not at.exception and not at.get("plotly_chart")
    assert "cc-gone" in at.error[0].value and "does not exist" in at.error[0].value


def test_without_crosscoder_runs_the_page_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_HARNESS_RUNS", str(tmp_path / "empty"))
    at = page()
    assert not at.exception and "harness crosscoder train" in at.info[0].value


def test_the_app_navigates_to_the_page(cc):
    at = apptest.app()
    at.switch_page("pages/crosscoder.py").run()
    assert not at.exception and at.title[0].value == "Crosscoder"
