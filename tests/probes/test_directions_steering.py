"""Difference-of-means directions, steering hooks, directional ablation, and the equivalent
weight-orthogonalised checkpoint (checked equal to the hook-ablated model)."""

import pytest
import torch

import harness
from harness.errors import CheckpointError, ConfigError, ShapeError, UnsupportedArchitectureError
from probes.activations import collect
from probes.directions import Directions, mean_difference
from probes.steering import ablation_hooks, export_orthogonalized, generate, orthogonalize, steering_hooks
from tests.probes import tiny

POS = ["the cat is red apple", "a dog on the apple", "blue bird and apple", "the fish with apple"]
NEG = ["the cat is red pear", "a dog on the pear", "blue bird and pear", "the fish with pear"]
TEXT = ["the cat is on the red apple", "a blue bird"]


def test_mean_difference_is_the_difference_of_the_means():
    model = tiny.model()
    dirs = mean_difference(model, POS, NEG, kind="resid_post", chat=False)
    assert dirs.hooks == [f"blocks.{i}.hook_resid_post" for i in range(3)]
    acts_p = collect(model, POS, dirs.hooks, chat=False)
    acts_n = collect(model, NEG, dirs.hooks, chat=False)
    for i, h in enumerate(dirs.hooks):
        torch.testing.assert_close(dirs.vectors[i], acts_p[h].mean(0) - acts_n[h].mean(0))
    assert torch.isclose(dirs.unit(1).norm(), torch.tensor(1.0))
    assert bool((dirs.separation > 0).all())  # each set projects higher along its own direction
    assert dirs.best_layer in (0, 1, 2) and dirs.model["d_model"] == 32
    assert [r["layer"] for r in dirs.rows()] == [0, 1, 2]
    with pytest.raises(ConfigError, match="no direction at layer 7"):
        dirs.vector(7)


def test_directions_round_trip(tmp_path):
    dirs = mean_difference(tiny.model(), POS, NEG, layers=[0, 2], position="mean", chat=True)
    back = Directions.load(dirs.save(tmp_path / "d.safetensors"))
    assert back.hooks == dirs.hooks and back.position == "mean" and back.model == dirs.model
    torch.testing.assert_close(back.vectors, dirs.vectors)


def test_steering_adds_the_scaled_direction_at_the_hook():
    model = tiny.model()
    v = torch.randn(32)
    hook = "blocks.1.hook_resid_pre"
    _, clean = model.run_with_cache(TEXT[0], names_filter=[hook])
    with model.hooks(fwd_hooks=steering_hooks(v, [hook], scale=2.0)):
        _, steered = model.run_with_cache(TEXT[0], names_filter=[hook])
    torch.testing.assert_close(steered[hook], clean[hook] + 2.0 * v)
    plain = generate(model, TEXT, max_new_tokens=6, chat=False)
    pushed = generate(model, TEXT, steering_hooks(v * 50, [hook]), max_new_tokens=6, chat=False)
    assert len(plain) == 2 and plain != pushed
    assert generate(model, TEXT, max_new_tokens=6, chat=False) == plain  # hooks removed afterwards


def test_ablation_removes_the_direction_from_the_residual_stream():
    model = tiny.model()
    u = torch.randn(32)
    u = u / u.norm()
    names = [f"blocks.{i}.hook_resid_post" for i in range(3)]
    with model.hooks(fwd_hooks=ablation_hooks(model, u)):
        _, cache = model.run_with_cache(TEXT[0], names_filter=names)
    for n in names:
        assert float((cache[n] @ u).abs().max()) < 1e-4
    with pytest.raises(ShapeError, match="d_model is 32"):
        ablation_hooks(model, torch.randn(48))


@pytest.mark.parametrize("family,tied", [("llama", False), ("llama", True), ("gpt2", False)])
def test_orthogonalised_weights_equal_hook_ablation(family, tied):
    model = tiny.model(family, tie_embeddings=tied)
    u = mean_difference(model, POS, NEG, chat=False).vector(1)
    tokens = model.to_tokens(TEXT, padding_side="left")
    with model.hooks(fwd_hooks=ablation_hooks(model, u)):
        hooked = model(tokens)
    ortho = orthogonalize(model, u)
    torch.testing.assert_close(ortho(tokens), hooked, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(model(tokens), hooked, atol=1e-3)  # the ablation did something
    assert ortho.cfg.tie_embeddings is False and model.cfg.tie_embeddings is tied  # original untouched


def test_orthogonalised_moe_equals_hook_ablation():
    from tests.harness import hf_tiny_moe

    model = harness.load(hf_tiny_moe.build("mixtral-7experts-top3"))
    u = torch.randn(model.cfg.d_model)
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 7))
    with model.hooks(fwd_hooks=ablation_hooks(model, u)):
        hooked = model(tokens)
    torch.testing.assert_close(orthogonalize(model, u)(tokens), hooked, atol=1e-4, rtol=1e-4)


def test_exported_checkpoint_loads_as_the_ablated_model(tmp_path):
    model = tiny.model(tie_embeddings=True)
    u = torch.randn(32)
    folder = export_orthogonalized(model, u, tmp_path / "ortho", metadata={"direction": "random"})
    loaded = harness.load(folder)
    tokens = model.to_tokens(TEXT, padding_side="left")
    with model.hooks(fwd_hooks=ablation_hooks(model, u)):
        hooked = model(tokens)
    torch.testing.assert_close(loaded(tokens), hooked, atol=1e-4, rtol=1e-4)
    assert loaded.tokenizer.chat_template == model.tokenizer.chat_template
    from harness.training.checkpoint import read_metadata

    assert read_metadata(folder)["orthogonalized"]["direction"] == "random"


def test_unsupported_exports_say_why(tmp_path):
    gemma_like = tiny.model(post_attn_norm=True, post_mlp_norm=True, norm_offset=1.0)
    with pytest.raises(UnsupportedArchitectureError, match="ablation hooks"):
        orthogonalize(gemma_like, torch.randn(32))
    with pytest.raises(CheckpointError, match="Llama"):
        export_orthogonalized(tiny.model("gpt2"), torch.randn(32), tmp_path / "x")


def test_steer_cli_adds_and_ablates_and_exports(tmp_path, capsys):
    from apps.cli import main
    from harness.runs import RunStore
    from harness.training.checkpoint import save_checkpoint

    folder = save_checkpoint(tiny.model(), tmp_path / "m")
    (tmp_path / "pos.txt").write_text("\n".join(POS))
    (tmp_path / "neg.txt").write_text("\n".join(NEG))
    runs = str(tmp_path / "runs")
    common = ["--model", str(folder), "--prompts", str(tmp_path / "pos.txt"), "--runs", runs, "--max-new-tokens", "4"]
    assert main(["steer", *common, "--positive", str(tmp_path / "pos.txt"), "--negative", str(tmp_path / "neg.txt"),
                 "--layer", "1", "--scale", "4", "--name", "add"]) == 0
    run = RunStore(runs).open("add")
    rows = run.read_jsonl("generations.jsonl")
    assert len(rows) == 4 and {"plain", "steered", "plain_refusal"} <= set(rows[0])
    assert run.manifest["metrics"]["layer"] == 1
    # the direction saved by that run drives an ablation, exported as a checkpoint
    assert main(["steer", *common, "--direction", "add", "--layer", "1", "--mode", "ablate", "--name", "abl",
                 "--export", str(tmp_path / "ortho")]) == 0
    assert harness.load(tmp_path / "ortho").cfg.d_model == 32
    assert "refusal rate" in capsys.readouterr().out


def test_steer_cli_refuses_a_direction_from_another_model(tmp_path, capsys):
    from apps.cli import main
    from harness.training.checkpoint import save_checkpoint

    small = save_checkpoint(tiny.model(d_model=32), tmp_path / "small")
    wide = save_checkpoint(tiny.model(d_model=48), tmp_path / "wide")
    dirs = mean_difference(harness.load(small), POS, NEG, chat=False)
    dirs.save(tmp_path / "d.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        main(["steer", "--model", str(wide), "--prompts", "builtin:harmless", "--direction", str(tmp_path / "d.safetensors"),
              "--runs", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "d_model 32" in err and "d_model 48" in err
