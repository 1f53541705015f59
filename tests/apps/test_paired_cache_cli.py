"""`harness cache --pair` and `harness crosscoder train --cache` end to end on a tiny HF pair
saved to folders, and bad input (a pair that does not match, a layer out of range, a crosscoder
of another shape) in one line with exit status 2 and no run left behind."""

from __future__ import annotations

import pytest
import torch

from harness.caching import PairedActivations
from harness.runs import RunStore
from harness.threads import torch_threads
from tests.apps.cli_run import one_line_error, run_cli

CACHE = ["--corpus", "stdlib-docs", "--tokens", "2048", "--context-length", "32", "--batch-size", "4",
         "--shard-contexts", "16", "--prompts", "builtin:harmless", "--chat-fraction", "0.25", "--no-progress"]
TRAIN = ["--steps", "4", "--d-latent", "64", "--k", "4", "--batch-size", "64"]


def _save(folder, tok, n_layers=2, hidden=32, scale=None):
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    model = tf.LlamaForCausalLM(cfg).eval()
    if scale:
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.mul_(scale)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def org(tmp_path_factory):
    from tests.probes import tiny

    with torch_threads(1):
        root = tmp_path_factory.mktemp("paired-cli")
        tok = tiny.tokenizer()
        yield {"base": _save(root / "base", tok), "aligned": _save(root / "aligned", tok, scale=1.5),
               "wide": _save(root / "wide", tok, hidden=48), "wide2": _save(root / "wide2", tok, hidden=48, scale=2.0),
               "short": _save(root / "short", tok, n_layers=1), "runs": root / "runs", "root": root}


def cli(org, *argv) -> int:
    return run_cli(org["runs"], *argv)


def test_cache_a_pair_then_train_a_crosscoder_from_it(org, capsys):
    assert cli(org, "cache", "--pair", org["base"], org["aligned"], "--layers", "0", "1", "--name", "pair", *CACHE) == 0
    pair = PairedActivations(RunStore(org["runs"]).path_of("pair"))
    assert pair.hooks == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"] and pair.job["chat"]["contexts"] == 16
    assert cli(org, "crosscoder", "train", "--cache", "pair", *TRAIN, "--name", "cc") == 0
    out = capsys.readouterr().out
    assert "blocks.1.hook_resid_post" in out and "left out of training " in out
    run = RunStore(org["runs"]).open("cc")
    assert run.status == "complete" and set(run.manifest["models"]) == {"base", "aligned"}
    ex = run.read_json("exclusion.json")
    assert ex["left_out"]["position"] == 64 and set(ex["why"]) == {"position", "special", "norm"}
    assert any(n.startswith("left out of training ") and "64 first position of each context" in n
               for n in run.manifest["notes"])
    # the crosscoder reads both cached layers, and evaluates against the models themselves
    assert cli(org, "crosscoder", "eval", "cc", "--base", org["base"], "--aligned", org["aligned"], "--n-texts", "4",
               "--context", "16", "--name", "cc-eval") == 0
    assert set(RunStore(org["runs"]).open("cc-eval").read_json("metrics.json")["spliced"]) == {"base", "aligned"}


def test_bad_input_gets_one_line(org, capsys):
    pair = ["--pair", org["base"], org["aligned"]]
    code = cli(org, "cache", "--pair", org["base"], org["wide"], "--layers", "0", "--name", "bad1", *CACHE)
    assert "d_model 32 vs 48" in one_line_error(capsys, code)
    code = cli(org, "cache", *pair, "--layers", "5", "--name", "bad2", *CACHE)
    assert "layer 5 is out of range: the model has 2 layers (0..1)" in one_line_error(capsys, code)
    code = cli(org, "cache", *pair, "--hooks", "blocks.9.hook_resid_post", "--name", "bad3", *CACHE)
    assert "layer 9 is out of range" in one_line_error(capsys, code)
    code = cli(org, "cache", *pair, "--layers", "0", "--name", "bad4", *CACHE[:-5], "--chat-fraction", "1")
    assert "--chat-fraction" in one_line_error(capsys, code)
    assert not any((org["runs"] / f"bad{i}").exists() for i in range(1, 5))

    assert cli(org, "cache", *pair, "--layers", "1", "--name", "pair1", *CACHE) == 0
    capsys.readouterr()
    code = cli(org, "crosscoder", "train", "--cache", "pair1", "--layers", "0", *TRAIN, "--name", "cc-bad1")
    assert "'blocks.0.hook_resid_post' is not in the paired cache" in one_line_error(capsys, code)
    code = cli(org, "crosscoder", "train", "--cache", "pair1", "--base", org["base"], *TRAIN, "--name", "cc-bad2")
    assert "not both" in one_line_error(capsys, code)
    code = cli(org, "crosscoder", "train", "--cache", str(org["root"] / "base"), *TRAIN, "--name", "cc-bad3")
    assert "not a paired activation cache" in one_line_error(capsys, code)
    code = cli(org, "crosscoder", "train", *TRAIN, "--name", "cc-bad4")
    assert "give --base and --aligned" in one_line_error(capsys, code)
    assert not any((org["runs"] / f"cc-bad{i}").exists() for i in range(1, 5))

    # a crosscoder of another shape given to eval / latents
    assert cli(org, "crosscoder", "train", "--cache", "pair1", *TRAIN, "--name", "cc1") == 0
    capsys.readouterr()
    for action in ("eval", "latents"):
        code = cli(org, "crosscoder", action, "cc1", "--base", org["wide"], "--aligned", org["wide2"], "--n-texts", "2",
                   "--name", f"cc-{action}-wide")
        assert "d_in 32" in one_line_error(capsys, code)
        code = cli(org, "crosscoder", action, "cc1", "--base", org["short"], "--aligned", org["short"], "--n-texts", "2",
                   "--name", f"cc-{action}-short")
        assert "reads blocks.1.hook_resid_post but" in one_line_error(capsys, code)
        code = cli(org, "crosscoder", action, "pair1", "--base", org["base"], "--aligned", org["aligned"],
                   "--n-texts", "2", "--name", f"cc-{action}-cache")
        assert "not a crosscoder folder" in one_line_error(capsys, code)
    assert not [p.name for p in org["runs"].iterdir() if p.name.endswith(("-wide", "-short", "-cache"))]
