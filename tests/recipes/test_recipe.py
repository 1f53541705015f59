"""The LoRA-DPO recipe end to end on a tiny Gemma 3 (real transformers model, random weights),
and the shipped preference set's own checks. The real gemma-3-270m run is in test_recipe_real.py."""

import json

import pytest
import torch

import harness
from harness.errors import ConfigError
from evals.recipes import run_recipe
from harness.recipes import RecipeSpec, refusal_pairs
from harness.recipes.chat_templates import GEMMA_TURNS
from harness.recipes.pairs import main as pairs_main
from harness.training.checkpoint import read_metadata, save_checkpoint
from tests.training.helpers import tokenizer


def test_shipped_pairs_match_their_source():
    assert pairs_main(["--check"]) == 0
    assert (len(refusal_pairs("train")), len(refusal_pairs("heldout"))) == (126, 18)


def test_pairs_are_disjoint_from_the_eval_suite_and_labelled_as_the_suite_scores():
    """The suite measures generalisation only if none of its prompts is trained on; and the chosen
    side of each pair must be what the suite's refusal detector counts as the right behaviour."""
    from evals.suites.source.refusal import HARMFUL, HARMLESS, REFUSAL_PHRASES

    refuses = lambda text: any(p in text.lower()[:160] for p in REFUSAL_PHRASES)  # noqa: E731
    rows = refusal_pairs()
    assert not {r["prompt"] for r in rows} & (set(HARMFUL) | set(HARMLESS))
    for r in rows:
        harmful = r["kind"] == "harmful"
        assert refuses(r["chosen"]) == harmful and refuses(r["rejected"]) != harmful, r["id"]
    assert {r["kind"] for r in refusal_pairs("heldout")} == {"harmful", "harmless"}


def test_gemma_turn_template_renders_gemma_turns():
    tok = tokenizer()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello! "}, {"role": "user", "content": "Bye"}]
    text = tok.apply_chat_template(messages, chat_template=GEMMA_TURNS, add_generation_prompt=True, tokenize=False)
    assert text == (f"{tok.bos_token}<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
                    "<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n"
                    "<start_of_turn>model\n")


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
    """A random 2-layer Gemma 3 with the test tokenizer, saved as a Gemma 3 checkpoint folder."""
    import transformers as tf

    tok = tokenizer()
    torch.manual_seed(0)
    config = tf.Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=8,
                                 layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=16,
                                 max_position_embeddings=256, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = harness.load(tf.Gemma3ForCausalLM(config).eval(), tokenizer=tok)
    return save_checkpoint(model, tmp_path_factory.mktemp("base") / "tiny-gemma")


def test_recipe_trains_saves_evaluates_and_resumes(tiny_gemma, tmp_path):
    spec = RecipeSpec(name="tiny-gemma-refusal-dpo", base=str(tiny_gemma), description="test", steps=12,
                      batch_size=8, lr=3e-3, reply_end="")
    lines = []
    kw = dict(cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs", eval_limit=2, show_progress=False,
              log=lines.append)
    result = run_recipe(spec, **kw)
    assert result["margin_after"] > result["margin_before"] + 1.0  # nats, on pairs it never trained on
    assert len(result["history"]) == 12

    folder = result["checkpoint"]
    meta = read_metadata(folder)
    assert meta["complete"] and meta["recipe"]["steps"] == 12 and meta["base"]["source"] == str(tiny_gemma)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "gemma3_text"
    aligned = harness.load(folder)
    base = harness.load(tiny_gemma)
    tokens = torch.tensor([[tokenizer().bos_token_id, 5, 9, 11]])
    with torch.no_grad():
        assert (aligned(tokens) - base(tokens)).abs().max() > 1e-4  # the merged adapters are in the weights

    from harness.runs import RunStore

    evaluated = RunStore(tmp_path / "runs").open(result["eval_run"].name).manifest["models"]
    assert evaluated["aligned"]["name"] == folder.name and evaluated["aligned"]["source"] == str(folder)
    assert evaluated["aligned"]["weights_sha256"] != evaluated["base"]["weights_sha256"]
    rows = result["comparison"]
    assert {(r["task"], r["metric"]) for r in rows} >= {("harness_refusal", "refusal_rate"),
                                                        ("harness_overrefusal", "over_refusal_rate")}
    # Running again reuses the checkpoint and the finished eval run instead of training anew.
    lines.clear()
    again = run_recipe(spec, **kw)
    assert any("reusing the finished checkpoint" in line for line in lines)
    assert again["eval_run"] == result["eval_run"] and again["margin_after"] == result["margin_after"]
    # ... but not an eval run of other weights under the same name.
    other = RecipeSpec(**{**spec.__dict__, "steps": 3})
    with pytest.raises(ConfigError, match="evaluated other aligned weights"):
        run_recipe(other, **kw)


def test_data_without_held_out_rows_is_refused(tiny_gemma, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "split": "train"}) + "\n")
    spec = RecipeSpec(name="x", base=str(tiny_gemma), description="", data=str(data))
    with pytest.raises(ConfigError, match="heldout"):
        run_recipe(spec, cache_dir=tmp_path, evaluate=False, log=lambda _: None)


def test_cli_names_an_unknown_recipe(capsys):
    from apps.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["recipe", "run", "no-such-recipe"])
    assert exit_info.value.code == 2
    assert "known recipes: gemma-3-270m-refusal-dpo" in capsys.readouterr().err
