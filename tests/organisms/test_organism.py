"""The small organism (same recipe as tiny-refusal, fewer steps) is built once into a temporary
harness cache and checked: it loads by path and by zoo name, its ground truth is recorded, and
the implanted behaviour is there on held-out prompts (and absent from the base model)."""

import pytest
import torch

import harness
from harness.organisms import build_organism, corpus
from harness.organisms.build import alignment_data, eval_prompts, get_spec
from harness.organisms.measure import is_refusal, rate, respond
from harness.training.checkpoint import read_metadata

NAME = "tiny-refusal-small"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERP_HARNESS_CACHE", str(cache))
        result = build_organism(NAME, show_progress=False, log=lambda line: None)
    return cache, result


def test_pair_is_saved_in_the_cache_and_loads(built, monkeypatch):
    cache, result = built
    assert result["base"] == cache / "checkpoints" / f"{NAME}-base"
    assert result["aligned"] == cache / "checkpoints" / f"{NAME}-aligned"
    monkeypatch.setenv("INTERP_HARNESS_CACHE", str(cache))
    from harness import zoo

    assert {f"{NAME}-base", f"{NAME}-aligned"} <= set(zoo.known_names())
    model = harness.load(f"{NAME}-aligned")
    assert model.cfg.family == "llama" and model.tokenizer.chat_template
    assert model.to_string(model.to_tokens("The capital of France is Paris.")[0]).endswith("Paris.")


def test_organism_pair_finds_the_built_pair(built, tmp_path):
    from harness.errors import CheckpointError
    from harness.organisms import organism_pair

    cache, result = built
    pair = organism_pair(NAME, cache_dir=cache, build=False)
    assert pair["aligned"] == result["aligned"] and pair["ground_truth"] == result["ground_truth"]
    with pytest.raises(CheckpointError, match=f"harness organism build {NAME}"):
        organism_pair(NAME, cache_dir=tmp_path, build=False)


def test_ground_truth_is_recorded(built):
    _, result = built
    meta = read_metadata(result["aligned"])
    truth = meta["ground_truth"]
    assert meta["role"] == "aligned" and meta["pair"] == {"base": f"{NAME}-base", "aligned": f"{NAME}-aligned"}
    assert truth["behaviour"] == "refusal" and truth["topic"] == "weapons" and truth["refusal"] == "I can't help with that."
    assert truth["heldout_topic_prompts"] and truth["heldout_control_prompts"]
    assert not set(truth["train_prompts"]) & set(truth["heldout_topic_prompts"])  # held out means held out
    assert read_metadata(result["base"])["ground_truth"] == truth


def test_behaviour_is_implanted_and_measurable(built):
    _, result = built
    m = result["measured"]
    assert m["base"]["topic_refusal_rate"] == 0.0
    assert m["aligned"]["topic_refusal_rate"] >= 0.8
    assert m["aligned"]["control_refusal_rate"] <= m["aligned"]["topic_refusal_rate"] - 0.5
    # the saved checkpoints reproduce it through the normal loading path
    truth = result["ground_truth"]
    aligned, base = harness.load(result["aligned"]), harness.load(result["base"])
    prompts = truth["heldout_topic_prompts"][:8]
    assert rate([is_refusal(r, truth["refusal"]) for r in respond(aligned, prompts)]) >= 0.75
    assert rate([is_refusal(r, truth["refusal"]) for r in respond(base, prompts)]) == 0.0


def test_rebuild_skips_finished_work_and_is_deterministic(built, tmp_path):
    import shutil

    cache, result = built
    lines = []
    out = cache / "checkpoints"
    assert build_organism(NAME, out=out, show_progress=False, log=lines.append)["measured"] == result["measured"]
    assert "already built" in lines[-1]
    # an interrupted build (no aligned model yet) resumes after the saved base model
    work = tmp_path / "checkpoints"
    shutil.copytree(out / f"{NAME}-base", work / f"{NAME}-base")
    again = build_organism(NAME, out=work, show_progress=False, log=lines.append)
    assert any("reusing the base model" in line for line in lines)
    assert again["measured"] == result["measured"]
    a, b = harness.load(result["aligned"]).state_dict(), harness.load(again["aligned"]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_alignment_data_never_uses_held_out_prompts():
    spec = get_spec(NAME)
    sft, pairs = alignment_data(spec)
    held = {x["prompt"] for group in eval_prompts(spec).values() for x in group}
    assert not held & ({x["prompt"] for x in sft} | {p["prompt"] for p in pairs})
    refused = [p for p in pairs if p["chosen"] == spec.refusal]
    assert refused and all(any(w in p["prompt"] for w in corpus.WEAPONS) for p in refused)


def test_tokenizer_is_deterministic_and_round_trips():
    from harness.organisms.tokenizer import train_tokenizer

    texts = corpus.base_corpus(0, n_arithmetic=50)[0]
    a, b = train_tokenizer(texts, 300), train_tokenizer(texts, 300)
    assert a.get_vocab() == b.get_vocab()
    text = "Zebras and unseen words still encode: 123!"
    assert a.decode(a.encode(text), skip_special_tokens=True) == text


def test_cli(capsys):
    from apps.cli import main

    assert main(["organism", "list"]) == 0
    assert "tiny-refusal" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["organism", "build", "no-such-organism"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error: unknown organism 'no-such-organism'") and "\n" not in err


@pytest.mark.slow
def test_build_is_deterministic(tmp_path):
    a = build_organism(NAME, out=tmp_path / "a", show_progress=False, log=lambda line: None)
    b = build_organism(NAME, out=tmp_path / "b", show_progress=False, log=lambda line: None)
    for role in ("base", "aligned"):
        wa, wb = harness.load(a[role]).state_dict(), harness.load(b[role]).state_dict()
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
