"""The diffing commands end to end on the small model organism (built once into a temporary
cache): `harness diff --method lens|kl|adl` writes findings.json, `harness diff-score` scores it
against the checkpoint's ground truth, `harness crosscoder train|eval|latents` run a few steps,
and bad input (a layer out of range, a pair with different d_model, a crosscoder folder of
another shape) gets one line and exit status 2."""

from __future__ import annotations

import pytest

from harness.runs import RunStore
from harness.threads import torch_threads
from tests.apps.cli_run import one_line_error, run_cli


@pytest.fixture(scope="module")
def org(tmp_path_factory):
    import harness
    from harness.organisms import build_organism
    from tests.evals import tiny

    with torch_threads(1):  # building is many small steps: one thread is faster on 2 loaded cores
        root = tmp_path_factory.mktemp("diffing-cli")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("INTERP_HARNESS_CACHE", str(root / "cache"))
            built = build_organism("tiny-refusal-small", show_progress=False, log=lambda line: None)
        tok = harness.load(built["base"]).tokenizer
        narrow = {}
        for seed in (0, 1):  # same tokenizer, d_model 32 instead of 64
            folder = root / f"narrow{seed}"
            tiny.hf_llama(tok, seed=seed).save_pretrained(folder)
            tok.save_pretrained(folder)
            narrow[seed] = folder
        yield {"base": str(built["base"]), "aligned": str(built["aligned"]), "runs": root / "runs",
               "narrow": narrow, "truth": built["ground_truth"]}


def cli(org, *argv) -> int:
    return run_cli(org["runs"], *argv)


def pair(org) -> list[str]:
    return ["--base", org["base"], "--aligned", org["aligned"]]


def score(org, capsys, name: str) -> dict:
    capsys.readouterr()
    assert cli(org, "diff-score", name) == 0
    out = capsys.readouterr().out
    s = RunStore(org["runs"]).open(name).read_json("score.json")
    assert ("RECOVERED" if s["recovered"] else "NOT recovered") in out
    return s


def test_diff_lens_writes_findings_and_scores_the_refusal(org, capsys):
    assert cli(org, "diff", *pair(org), "--name", "lens") == 0
    f = RunStore(org["runs"]).open("lens").read_json("findings.json")
    assert f["method"] == "lens" and len(f["tokens"]) == 25 and set(f["kl"]) == {"topic"}
    scores = [t["score"] for t in f["tokens"]]
    assert scores == sorted(scores, reverse=True)
    s = score(org, capsys, "lens")
    tokens = s["criteria"]["tokens"]
    assert tokens["recovered"] and len(tokens["hits"]) >= 3, s["summary"]


def test_diff_kl_is_higher_on_the_topic_than_on_the_controls(org, capsys):
    assert cli(org, "diff", *pair(org), "--method", "kl", "--name", "kl") == 0
    f = RunStore(org["runs"]).open("kl").read_json("findings.json")
    assert f["method"] == "kl" and not f["tokens"] and set(f["kl"]) == {"topic", "control"}
    assert f["extra"]["n_prompts"] == {"topic": len(org["truth"]["heldout_topic_prompts"]),
                                       "control": len(org["truth"]["heldout_control_prompts"])}
    s = score(org, capsys, "kl")
    assert s["criteria"]["kl"]["recovered"] and f["kl"]["topic"] > 2 * f["kl"]["control"], s["summary"]


def test_diff_adl_writes_tokens_steering_and_vectors(org, capsys):
    assert cli(org, "diff", *pair(org), "--method", "adl", "--adl-layer", "1", "--top-k", "20", "--name", "adl") == 0
    run = RunStore(org["runs"]).open("adl")
    f = run.read_json("findings.json")
    assert f["method"] == "adl" and len(f["tokens"]) == 20 and f["extra"]["layer"] == 1
    assert {r["model"] for r in f["extra"]["steered"]} == {"base", "aligned"} and len(f["extra"]["steered"]) == 8
    assert run.read_tensors("adl.safetensors")["delta"].shape == (2, 5, 64)
    s = score(org, capsys, "adl")
    assert s["criteria"]["tokens"]["recovered"], s["summary"]


def test_diff_bad_input_gets_one_line(org, capsys):
    code = cli(org, "diff", *pair(org), "--method", "adl", "--adl-layer", "5", "--name", "bad-layer")
    assert "--adl-layer 5 is out of range: the model has 2 layers" in one_line_error(capsys, code)
    code = cli(org, "diff", "--base", org["base"], "--aligned", str(org["narrow"][0]), "--method", "kl", "--prompts",
               "builtin:harmless", "--limit", "2", "--name", "bad-pair")
    assert "d_model" in one_line_error(capsys, code)
    assert not (org["runs"] / "bad-layer").exists() and not (org["runs"] / "bad-pair").exists()
    code = cli(org, "diff-score", "no-such-run")
    assert "no-such-run" in one_line_error(capsys, code)


CROSSCODER = ["--n-texts", "8", "--context", "16"]


def test_crosscoder_train_eval_latents(org, capsys):
    assert cli(org, "crosscoder", "train", *pair(org), *CROSSCODER, "--layers", "1", "--d-latent", "64", "--k", "4",
               "--steps", "4", "--batch-size", "64", "--name", "cc") == 0
    out = capsys.readouterr().out
    assert "blocks.1.hook_resid_post" in out and "4 steps" in out
    run = RunStore(org["runs"]).open("cc")
    assert run.status == "complete" and len(run.read_jsonl("history.jsonl")) >= 1
    assert 0 <= run.read_json("metrics.json")["dead_fraction"] <= 1
    assert cli(org, "crosscoder", "eval", "cc", *pair(org), *CROSSCODER, "--name", "cc-eval") == 0
    m = RunStore(org["runs"]).open("cc-eval").read_json("metrics.json")
    assert set(m["spliced"]) == {"base", "aligned"} and m["spliced"]["base"]["ce_spliced"] > 0
    assert cli(org, "crosscoder", "latents", "cc", *pair(org), *CROSSCODER, "--name", "cc-latents") == 0
    f = RunStore(org["runs"]).open("cc-latents").read_json("findings.json")
    assert f["method"] == "crosscoder" and "n_aligned_only" in f["extra"]


def test_crosscoder_bad_input_gets_one_line(org, capsys):
    narrow = ["--base", str(org["narrow"][0]), "--aligned", str(org["narrow"][1])]
    code = cli(org, "crosscoder", "train", *pair(org), *CROSSCODER, "--layers", "7", "--steps", "1", "--name", "cc-bad")
    assert "layer 7 is out of range: the model has 2 layers" in one_line_error(capsys, code)
    code = cli(org, "crosscoder", "train", "--base", org["base"], "--aligned", str(org["narrow"][0]), *CROSSCODER,
               "--steps", "1", "--name", "cc-bad-pair")
    assert "d_model" in one_line_error(capsys, code)
    # a crosscoder trained on a pair of another shape (d_model 32) read against the organism (64)
    assert cli(org, "crosscoder", "train", *narrow, *CROSSCODER, "--d-latent", "32", "--k", "4", "--steps", "2",
               "--batch-size", "32", "--name", "cc-narrow") == 0
    capsys.readouterr()
    code = cli(org, "crosscoder", "eval", "cc-narrow", *pair(org), *CROSSCODER, "--name", "cc-bad-eval")
    assert "d_in 32" in one_line_error(capsys, code)
    assert not any((org["runs"] / n).exists() for n in ("cc-bad", "cc-bad-pair", "cc-bad-eval"))
