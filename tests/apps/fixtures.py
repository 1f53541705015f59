"""Fixture runs for the dashboard tests, made by the harness's own code on tiny models.

`make_fixtures(folder)` saves two tiny random Llama models (HF format, with a tokenizer) under
folder/models, then writes runs with the real producers into folder/runs: a demo run
(apps.cli.look.run_look), an eval run (evals.runner.run_eval, three suite tasks, one of them perplexity,
plus the organism suite of tiny-refusal-small's held-out prompts read by these models), an SAE run with
its feature analysis (`harness sae train` + `harness sae features`), two circuit runs
(`harness circuits heads` / `patch`), a model-diff run (probes.diff.diff_models + write_diff), a
probe run and a steering run (`harness probe` / `harness steer`), the main job's scored diff
runs (apps.cli.demo._diff: lens, kl and adl findings + score.json, and an overview diff on 112
prompts with scores.json), and one run folder whose
manifest is corrupt. Nothing here writes
run JSON by hand except the deliberately broken manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

TASKS = "harness_knowledge,harness_sycophancy,harness_perplexity"


@dataclass
class Fixtures:
    root: Path
    runs: Path
    base: Path  # model folders: harness.load(path) works on them
    aligned: Path
    names: dict[str, str] = field(default_factory=dict)  # kind -> run name


def save_model(folder: Path, seed: int) -> Path:
    from tests.evals import tiny

    tok = tiny.tokenizer()
    tiny.hf_llama(tok, seed=seed).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _cli(argv: list[str]) -> None:
    from apps.cli import main

    assert main(argv) == 0, argv


def make_fixtures(root: Path) -> Fixtures:
    import harness
    from apps.cli.look import run_look
    from evals.runner import run_eval
    from harness.runs import RunStore
    from probes.diff import diff_models, write_diff

    root = Path(root)
    fx = Fixtures(root, root / "runs", save_model(root / "models" / "base", 0),
                  save_model(root / "models" / "aligned", 1))
    store = RunStore(fx.runs)
    models = {"base": harness.load(fx.base), "aligned": harness.load(fx.aligned)}

    run_look(models, store=store, name="demo-tiny", max_new_tokens=3, show_progress=False, command="test fixture")
    fx.names["demo"] = "demo-tiny"
    run_eval({"base": str(fx.base), "aligned": str(fx.aligned)}, TASKS, runs_dir=fx.runs, name="eval-tiny",
             limit=6, console=False, command="test fixture")
    from evals.organism_suite import add_to_eval_run

    add_to_eval_run(store.open("eval-tiny"), models["base"], models["aligned"], "tiny-refusal-small", max_new_tokens=4)
    fx.names["eval"] = "eval-tiny"

    runs = ["--runs", str(fx.runs)]
    _cli(["sae", "train", "--model", str(fx.base), "--hook", "blocks.0.hook_resid_post", "--arch", "topk",
          "--d-sae", "64", "--k", "4", "--tokens", "2048", "--batch-tokens", "512", "--corpus", "stdlib-docs",
          "--context-length", "32", "--out", "sae-tiny", "--log-every", "1000", *runs])
    _cli(["sae", "features", "--sae", "sae-tiny", "--model", str(fx.base), "--tokens", "1024", "--features", "6",
          "--context-length", "32", *runs])
    fx.names["sae"] = "sae-tiny"
    _cli(["circuits", "heads", "--model", str(fx.base), "--n", "4", "--name", "circuits-heads", *runs])
    _cli(["circuits", "patch", "--model", str(fx.base), "--task", "induction", "--sweep", "resid_pre", "--n", "4",
          "--name", "circuits-patch", *runs])
    fx.names["circuits"] = "circuits-heads"

    diff = diff_models(models["base"], models["aligned"], ["The capital of France is", "Write a short poem"],
                       chat=False, top_k=10)
    with store.create("diff", name="diff-tiny", command="test fixture") as run:
        write_diff(diff, run, models["base"], models["aligned"])
    fx.names["diff"] = "diff-tiny"
    from apps.cli.demo import _diff
    from harness.organisms.build import eval_prompts, get_spec, ground_truth

    spec = get_spec("tiny-refusal-small")  # its held-out prompts and refusal as the truth these models are read against
    pair = {"name": "tiny", "base": fx.base, "aligned": fx.aligned, "ground_truth": ground_truth(spec, eval_prompts(spec))}
    _diff(pair, store, "main", "test fixture", lambda *a, **k: None)
    fx.names["main-diff"] = "main-diff"

    _cli(["probe", "--model", str(fx.base), "--positive", "builtin:harmful", "--negative", "builtin:harmless",
          "--limit", "12", "--chat", "no", "--name", "probe-tiny", *runs])
    fx.names["probe"] = "probe-tiny"
    _cli(["steer", "--model", str(fx.base), "--prompts", "builtin:harmless", "--direction", "probe-tiny",
          "--scale", "8", "--limit", "4", "--max-new-tokens", "4", "--chat", "no", "--name", "steer-tiny", *runs])
    fx.names["steer"] = "steer-tiny"

    broken = fx.runs / "broken-run"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{ this is not json", encoding="utf-8")
    return fx


def save_moe_model(folder: Path, seed: int) -> Path:
    """A tiny random Mixtral (mixture-of-experts) model with the same tokenizer, HF format."""
    import torch
    import transformers as tf

    from tests.evals import tiny

    tok = tiny.tokenizer()
    torch.manual_seed(seed)
    config = tf.MixtralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                              num_experts_per_tok=2, max_position_embeddings=128, bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    tf.MixtralForCausalLM(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
