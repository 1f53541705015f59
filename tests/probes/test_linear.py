"""Linear probes find a planted, linearly decodable signal and stay at chance without one."""

import random

import pytest
import torch

from harness.errors import ConfigError, ShapeError
from probes.linear import fit_probe, probe_cached, probe_layers, probe_prompts, split, sweep_figure
from tests.probes import tiny


def planted(n=400, d=32, signal=3.0, seed=0, with_direction=False):
    """Gaussian features with the label written along one random direction (signal=0: no label)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    x = torch.randn(n, d, generator=gen)
    v = torch.randn(d, generator=gen)
    v = v / v.norm()
    x = x + signal * (2 * y[:, None] - 1) * v
    return (x, y, v) if with_direction else (x, y)


def test_planted_signal_is_decoded_and_noise_is_not():
    x, y = planted()
    noise, _ = planted(signal=0.0)
    sweep = probe_layers({"blocks.0.hook_resid_post": x, "blocks.1.hook_resid_post": noise}, y, seed=0)
    signal_acc, noise_acc = [r.test_accuracy for r in sweep.results]
    assert signal_acc >= 0.95
    assert abs(noise_acc - 0.5) <= 0.15
    assert sweep.best.hook == "blocks.0.hook_resid_post" and sweep.best.layer == 0
    assert 0.4 <= sweep.chance <= 0.6 and sweep.n_test == 100
    # averaged over seeds, the control sits at chance
    controls = [probe_layers({"h": planted(signal=0.0, seed=s)[0]}, y, seed=s).results[0].test_accuracy for s in range(5)]
    assert abs(sum(controls) / 5 - 0.5) <= 0.08


def test_probe_direction_points_along_the_signal():
    x, y, v = planted(d=16, with_direction=True)
    assert float(fit_probe(x, y).direction @ v) > 0.9


def test_split_is_stratified_and_disjoint():
    y = torch.tensor([0] * 30 + [1] * 10)
    train, test = split(y, 0.25, seed=1)
    assert not set(train.tolist()) & set(test.tolist()) and len(train) + len(test) == 40
    assert int(y[test].sum()) == 2 or int(y[test].sum()) == 3  # a quarter of each class
    with pytest.raises(ConfigError):
        split(torch.tensor([0, 0, 1]), 0.5)


def test_probe_on_model_activations_reads_the_planted_word():
    # The label is which fruit ends the prompt; fillers are random. A random model's residual
    # stream at the last token carries the token's identity, so the label is decodable; a label
    # drawn independently of the prompts is not.
    rng = random.Random(0)
    fillers = "the a cat dog bird red blue green on in of".split()
    prompts, labels = [], []
    for i in range(120):
        label = i % 2
        word = rng.choice(["apple", "plum"] if label else ["pear", "lemon"])
        prompts.append(" ".join(rng.choice(fillers) for _ in range(rng.randint(1, 5))) + " " + word)
        labels.append(label)
    model = tiny.model()
    sweep = probe_prompts(model, prompts, labels, chat=False)
    assert [r.layer for r in sweep.results] == [0, 1, 2]
    assert min(r.test_accuracy for r in sweep.results) >= 0.95
    shuffled = labels[:]
    random.Random(1).shuffle(shuffled)
    control = probe_prompts(model, prompts, shuffled, chat=False, hooks=["blocks.0.hook_resid_post"])
    assert control.results[0].test_accuracy <= 0.75
    fig = sweep_figure(sweep)
    assert len(fig.data) == 2 and list(fig.data[0].y) == [r.test_accuracy for r in sweep.results]


def test_bad_labels_and_shapes():
    x, y = planted(n=20)
    with pytest.raises(ConfigError, match="binary"):
        probe_layers({"h": x}, torch.zeros(20))
    with pytest.raises(ShapeError, match="expected"):
        probe_layers({"h": x[:10]}, y)
    with pytest.raises(ShapeError, match="labels"):
        probe_prompts(tiny.model(), ["a", "b"], [0, 1, 1])


def test_probe_cli_writes_a_run(tmp_path, capsys):
    from apps.cli import main
    from harness.runs import RunStore
    from harness.training.checkpoint import save_checkpoint

    folder = save_checkpoint(tiny.model(), tmp_path / "m")
    (tmp_path / "pos.txt").write_text("\n".join(f"the {w} apple" for w in "cat dog bird fish cow red blue green".split()))
    (tmp_path / "neg.jsonl").write_text("\n".join(f'{{"prompt": "the {w} pear"}}' for w in "cat dog bird fish cow red blue green".split()))
    assert main(["probe", "--model", str(folder), "--positive", str(tmp_path / "pos.txt"), "--negative",
                 str(tmp_path / "neg.jsonl"), "--runs", str(tmp_path / "runs"), "--name", "p", "--chat", "no"]) == 0
    run = RunStore(tmp_path / "runs").open("p")
    assert run.status == "complete" and run.manifest["metrics"]["best_test_accuracy"] >= 0.75
    assert {"probe.jsonl", "probe.html", "directions.safetensors", "directions.jsonl"} <= set(run.artifacts)
    assert len(run.read_jsonl("probe.jsonl")) == 3
    assert "held-out" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "--model", str(folder), "--positive", str(tmp_path / "nope.txt"), "--negative", "builtin:harmless"])
    assert exit_info.value.code == 2 and "nope.txt" in capsys.readouterr().err


def test_probe_cached_reads_the_cache_one_label_per_context(tmp_path):
    from harness.caching import CachedActivations, cache_activations

    model = tiny.model()
    docs = [" ".join(random.Random(i).choice(tiny.WORDS) for _ in range(30)) for i in range(20)]
    hook = "blocks.1.hook_resid_post"
    folder = cache_activations(model, [hook], docs, n_tokens=8 * 40, out_dir=tmp_path / "cache", context_length=8,
                               batch_size=8, shard_contexts=16, progress=False)
    cache = CachedActivations(folder)
    labels = torch.arange(cache.n_contexts) % 2
    sweep = probe_cached(cache, [hook], labels, position=-1)
    x = torch.cat([cache.activations(hook, s)[:, -1] for s in range(cache.n_shards)]).float()
    direct = probe_layers({hook: x}, labels)
    assert sweep.results[0].test_accuracy == direct.results[0].test_accuracy
    with pytest.raises(ShapeError, match="one label per context"):
        probe_cached(cache, [hook], labels[:-1])
