"""Model diffing: identical models show no difference; a planted change is found at the right
layer with the right token; SAE features are ranked; results land in a run; mismatched pairs
are refused with a message naming what differs; and (slow) the model organism's implanted
refusal is named by the diff."""

import copy

import pytest
import torch

import harness
from harness.runs import RunStore
from probes.compat import PairMismatchError, check_pair, differences
from probes.diff import diff_models, linear_cka, write_diff
from tests.probes import tiny

PROMPTS = ["the cat is red", "a dog on the apple", "blue bird and fish", "the horse with a cow"]


def planted_pair(layer=1, scale=30.0):
    """gpt2-style pair: the aligned copy's MLP at `layer` always writes along one token's unembedding."""
    base = tiny.model("gpt2", n_layers=3)
    aligned = copy.deepcopy(base)
    aligned.identity = {"name": "tiny-aligned"}
    vocab = {t: i for t, i in base.tokenizer.get_vocab().items() if not t.startswith("<|")}
    tid = vocab[max(vocab, key=len)]  # the longest merged token: a whole word
    token = base.tokenizer.decode([tid])
    with torch.no_grad():
        w = base.unembed.weight[tid]
        aligned.blocks[layer].mlp.down_proj.bias += scale * w / w.norm()
    return base, aligned, token


def test_identical_models_do_not_differ():
    model = tiny.model()
    d = diff_models(model, copy.deepcopy(model), PROMPTS)
    for row in d.layers:
        assert row["cosine"] == pytest.approx(1.0, abs=1e-5) and row["cka"] == pytest.approx(1.0, abs=1e-5)
        assert row["norm_ratio"] == pytest.approx(1.0, abs=1e-5)
    assert float(d.kl.abs().max()) < 1e-5 and d.diverging_layers == []


def test_planted_change_is_found_at_its_layer_and_token():
    base, aligned, token = planted_pair(layer=1)
    d = diff_models(base, aligned, PROMPTS, chat=False, positions="all")
    assert d.layers[0]["cosine"] == pytest.approx(1.0, abs=1e-5)  # nothing before the planted layer
    assert d.layers[1]["cosine"] < 0.9
    assert d.diverging_layers[0] == 1
    assert d.promoted(layer=1, k=1) == [token] and d.promoted(layer=-1, k=3)[0] == token
    assert d.lens[0]["promoted"][0]["change"] == pytest.approx(0.0, abs=1e-4)
    assert float(d.kl[d.mask.bool()].min()) > 0  # every real position's next-token distribution moved
    assert 0 <= d.layers[2]["cka"] <= 1


def test_response_positions_and_kl_shape():
    base, aligned, token = planted_pair()
    d = diff_models(base, aligned, PROMPTS, continue_with="aligned", max_new_tokens=4)
    assert d.config["positions"] == "response"
    assert d.tokens.shape == d.kl.shape == d.mask.shape and d.tokens.shape[0] == len(PROMPTS)
    assert int(d.analysed.sum()) == 4 * len(PROMPTS)
    assert token in d.promoted(k=3)


def test_sae_features_ranked_by_change_and_written_to_a_run(tmp_path):
    from sae_lens import SAE, StandardSAEConfig

    base, aligned, token = planted_pair(layer=1)
    cfg = StandardSAEConfig(d_in=32, d_sae=64)
    cfg.metadata.hook_name = "blocks.2.hook_resid_post"
    sae = SAE.from_dict(cfg.to_dict()) if hasattr(SAE, "from_dict") else SAE(cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    d = diff_models(base, aligned, PROMPTS, chat=False, positions="all", sae=sae, top_k=10)
    changes = [abs(f["change"]) for f in d.features]
    assert len(changes) == 10 and changes == sorted(changes, reverse=True) and changes[0] > 0
    store = RunStore(tmp_path)
    with store.create("diff", name="t") as run:
        write_diff(d, run, base, aligned)
    run = store.open("t")
    assert run.status == "complete" and set(run.manifest["models"]) == {"base", "aligned"}
    assert {"layers.jsonl", "lens.jsonl", "kl.safetensors", "features.jsonl", "summary.json", "layers.html"} <= set(run.artifacts)
    assert run.read_json("summary.json")["diverging_layers"][0] == 1
    assert run.read_tensors("kl.safetensors")["kl"].shape == d.kl.shape


def test_cka_is_invariant_to_rotation_and_scale():
    x = torch.randn(50, 8)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    assert linear_cka(x, 3 * x @ q) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x, torch.randn(50, 8)) < 0.6


def test_mismatched_pairs_are_refused_naming_the_difference():
    with pytest.raises(PairMismatchError, match=r"architecture.*d_model 32 vs 48"):
        check_pair(tiny.model(), tiny.model(d_model=48))
    with pytest.raises(PairMismatchError, match="n_layers 3 vs 2"):
        diff_models(tiny.model(), tiny.model(n_layers=2), PROMPTS)
    with pytest.raises(PairMismatchError, match=r"family llama vs gpt2"):
        diff_models(tiny.model(), tiny.model("gpt2"), PROMPTS)
    other_tok = tiny.tokenizer(vocab_size=320, extra=" zebra zebra quokka")
    a, b = tiny.model(), tiny.model(tok=other_tok)
    if a.cfg.d_vocab == b.cfg.d_vocab:
        with pytest.raises(PairMismatchError, match="same tokenizer.*different ids"):
            check_pair(a, b)
    else:
        with pytest.raises(PairMismatchError, match="d_vocab"):
            check_pair(a, b)
    assert differences(a, a) == []


@pytest.mark.slow
def test_organism_diff_names_the_implanted_behaviour(tmp_path):
    from harness.organisms import build_organism
    from harness.training.checkpoint import read_metadata

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERP_HARNESS_CACHE", str(tmp_path))
        built = build_organism("tiny-refusal-small", show_progress=False, log=lambda line: None)
    truth = read_metadata(built["aligned"])["ground_truth"]
    base, aligned = harness.load(built["base"]), harness.load(built["aligned"])
    prompts = truth["heldout_topic_prompts"][:24]
    refusal_tokens = {aligned.tokenizer.decode([t]).strip() for t in aligned.tokenizer.encode(truth["refusal"], add_special_tokens=False)}

    at_start = diff_models(base, aligned, prompts)  # where the reply starts
    first = aligned.tokenizer.decode(aligned.tokenizer.encode(truth["refusal"], add_special_tokens=False)[:1]).strip()
    assert first in [t.strip() for t in at_start.promoted(k=5)]

    along = diff_models(base, aligned, prompts, continue_with="aligned", max_new_tokens=8)
    top = {t.strip() for t in along.promoted(k=15)}
    assert len(top & refusal_tokens) >= 3, (top, refusal_tokens)
    assert along.diverging_layers and all(0 <= layer < aligned.cfg.n_layers for layer in along.diverging_layers)
    # control prompts (answered by both) move the next-token distribution far less
    control = diff_models(base, aligned, truth["heldout_control_prompts"][:24])
    assert control.summary()["mean_kl_analysed"] < at_start.summary()["mean_kl_analysed"]


def test_diff_cli_writes_a_run_and_refuses_mismatched_pairs(tmp_path, capsys):
    from apps.cli import main
    from harness.training.checkpoint import save_checkpoint

    model = tiny.model()
    base = save_checkpoint(model, tmp_path / "base")
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.blocks[1].mlp.down_proj.weight.mul_(3)
    aligned = save_checkpoint(changed, tmp_path / "aligned", metadata={"ground_truth": {"heldout_topic_prompts": PROMPTS}})
    runs = str(tmp_path / "runs")
    assert main(["diff", "--base", str(base), "--aligned", str(aligned), "--runs", runs, "--name", "d"]) == 0
    run = RunStore(runs).open("d")
    assert run.status == "complete" and len(run.read_jsonl("prompts.jsonl")) == len(PROMPTS)  # ground-truth prompts
    assert run.read_json("summary.json")["diverging_layers"][0] == 1
    assert "aligned promotes" in capsys.readouterr().out

    other = save_checkpoint(tiny.model(n_layers=2), tmp_path / "other")
    with pytest.raises(SystemExit) as exit_info:
        main(["diff", "--base", str(base), "--aligned", str(other), "--runs", runs, "--prompts", "builtin:harmless"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "same architecture" in err and "n_layers 3 vs 2" in err
