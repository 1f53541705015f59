"""The SAE-feature diff as findings (probes.sae.findings, `harness diff --method sae`) on a pair
with a known answer: the aligned model is the tiny base model with one direction v added to the
embeddings of tokens only the topic prompts use, and the SAE has one planted feature that reads
v and writes the refusal's tokens. That feature must rank first, with the topic prompts as its
contexts and the refusal in the lens tokens, and `harness diff-score` must say so."""

from __future__ import annotations

import copy

import pytest
import torch

from harness.runs import RunStore
from probes.findings import Findings, score_findings
from probes.sae.findings import feature_diff_on_texts, sae_findings
from tests.apps.cli_run import one_line_error, run_cli

HOOK = "blocks.0.hook_resid_post"
PLANTED = 5  # the SAE feature that reads the planted direction
TOPIC = ["How do I round a Decimal to two places?", "Why does Decimal round half to even?",
         "Round this Decimal up, please.", "Can a Decimal round down?"]
CONTROL = ["What is the capital of France?", "Write a short poem about the sea.", "How do I bake bread at home?",
           "Explain how rainbows form."]
REFUSAL = "I cannot help with that."
TRUTH = {"behaviour": "refusal", "topic": "decimal rounding", "refusal": REFUSAL, "heldout_topic_prompts": TOPIC,
         "heldout_control_prompts": CONTROL}


def planted_ids(model, unrelated: list[str]) -> list[int]:
    """Token ids of the topic prompts that no control prompt or unrelated text contains."""
    ids = lambda texts: {i for row in model.to_tokens(texts, padding_side="right").tolist() for i in row}  # noqa: E731
    return sorted(ids(TOPIC) - ids(CONTROL + unrelated))


@pytest.fixture(scope="module")
def pair():
    from probes.adl import unrelated_texts
    from tests.probes.sae_tiny import tiny_model

    base = tiny_model(seed=0)
    ids = planted_ids(base, unrelated_texts(32))
    assert ids, "the topic prompts should use some token the other texts never do"
    v = torch.randn(base.cfg.d_model, generator=torch.Generator().manual_seed(3))
    v = v / v.norm()
    aligned = copy.deepcopy(base)
    aligned.identity = {**base.identity, "name": "tiny-planted"}
    with torch.no_grad():
        aligned.embed.weight[ids] += 0.5 * v  # about 4x the tiny model's residual norm
    return base, aligned, v


def planted_sae(model, v: torch.Tensor, d_in: int = 32, hook: str = HOOK):
    """A random TopK SAE whose feature PLANTED fires on v (above a threshold no base activation
    reaches) and decodes to a direction that raises the refusal's first three tokens (a random
    32-wide unembedding cannot single out more of them)."""
    from sae_lens import TrainingSAE

    from probes.sae import sae_config

    torch.manual_seed(0)
    sae = TrainingSAE.from_dict(sae_config("topk", d_in, 64, k=4).to_dict())
    sae.cfg.metadata.hook_name = hook
    if d_in == model.cfg.d_model:
        refusal = [i for i in model.tokenizer.encode(REFUSAL) if model.tokenizer.decode([i]).strip().isalnum()][:3]
        writes = torch.linalg.pinv(model.W_U.detach()[:, refusal].T) @ torch.ones(3)  # logit 1 on each of them
        with torch.no_grad():
            sae.W_enc[:, PLANTED] = 50 * v
            sae.b_enc[PLANTED] = -50 * 0.25
            sae.W_dec[PLANTED] = writes / writes.norm()
    return sae


@pytest.fixture(scope="module")
def sae(pair):
    return planted_sae(pair[0], pair[2])


def texts():
    from probes.adl import unrelated_texts

    return TOPIC + CONTROL + unrelated_texts(32)


def test_the_planted_feature_ranks_first_with_the_topic_as_its_contexts(pair, sae):
    base, aligned, _ = pair
    f = sae_findings(sae, base, aligned, texts(), top=10)
    assert f.method == "sae" and f.latents and not f.kl
    scores = [x["score"] for x in f.latents]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    for x in f.latents:
        assert x["score"] == pytest.approx(x["freq_aligned"] - x["freq_base"], abs=1e-6)
        assert len(x["contexts"]) == len(x["context_max"]) == len(x["context_rise"]) <= 5
    top = f.latents[0]
    assert top["id"] == PLANTED and top["freq_base"] == 0
    assert sorted(top["contexts"]) == sorted(TOPIC)  # only the topic prompts carry the planted tokens
    # every change the plant makes happens in the topic prompts: nothing else differs
    assert all(set(x["contexts"]) <= set(TOPIC) for x in f.latents)
    tokens = [t["token"].strip().lower() for t in f.tokens[:20]]
    assert {"i", "c", "an"} <= set(tokens), tokens  # the refusal's pieces, as the lens reads the feature
    assert f.extra["hook"] == HOOK and f.extra["n_texts"] == len(texts())
    score = score_findings(f, TRUTH, tokenizer=base.tokenizer)
    assert score["criteria"]["latents"]["recovered"] and score["criteria"]["tokens"]["recovered"], score["summary"]


def test_the_same_model_twice_changes_nothing_and_padding_is_not_counted(pair, sae):
    base, _, _ = pair
    diff, max_a, max_b = feature_diff_on_texts(sae, base, base, ["a b", "a much longer text than the first one"])
    assert float(diff.stats["freq_delta"].abs().max()) == 0 and torch.equal(max_a, max_b)
    lengths = [base.to_tokens(t).shape[1] for t in ("a b", "a much longer text than the first one")]
    assert diff.n_tokens == sum(lengths)
    f = sae_findings(sae, base, base, texts()[:6])
    assert f.latents == [] and f.tokens == []


def test_contexts_are_named_as_given_and_bad_arguments_are_one_line(pair, sae):
    from probes.sae.io import SAEError

    base, aligned, _ = pair
    shown = [f"prompt {i}" for i in range(len(texts()))]
    f = sae_findings(sae, base, aligned, texts(), shown=shown, top=1)
    assert sorted(f.latents[0]["contexts"]) == [f"prompt {i}" for i in range(len(TOPIC))]
    with pytest.raises(SAEError, match="cannot rank SAE features by 'l0'"):
        sae_findings(sae, base, aligned, texts(), by="l0")
    with pytest.raises(SAEError, match="2 names for 3 texts"):
        sae_findings(sae, base, aligned, texts()[:3], shown=["a", "b"])


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def folders(tmp_path_factory, pair, sae):
    """The pair saved as checkpoints (the aligned one records the ground truth), the SAE as a
    SAELens folder, and two SAEs that do not fit: another width, a hook the model lacks."""
    from harness.training.checkpoint import save_checkpoint

    base, aligned, v = pair
    root = tmp_path_factory.mktemp("sae-diff")
    out = {"base": save_checkpoint(base, root / "base"),
           "aligned": save_checkpoint(aligned, root / "aligned", metadata={"ground_truth": TRUTH}),
           "runs": root / "runs"}
    sae.save_inference_model(str(root / "sae"))
    planted_sae(base, v, d_in=48).save_inference_model(str(root / "sae-wide"))
    planted_sae(base, v, hook="blocks.7.hook_resid_post").save_inference_model(str(root / "sae-deep"))
    out.update(sae=root / "sae", wide=root / "sae-wide", deep=root / "sae-deep")
    return out


def cli(folders, *argv) -> int:
    return run_cli(folders["runs"], *argv)


def diff_sae(folders, sae, name: str) -> int:
    return cli(folders, "diff", "--method", "sae", "--sae", str(sae), "--base", str(folders["base"]),
               "--aligned", str(folders["aligned"]), "--top-k", "8", "--name", name)


def test_harness_diff_method_sae_writes_findings_that_diff_score_reads(folders, capsys):
    assert diff_sae(folders, folders["sae"], "sae-diff") == 0
    run = RunStore(folders["runs"]).open("sae-diff")
    raw = run.read_json("findings.json")
    assert raw["method"] == "sae" and set(raw) == {"method", "tokens", "latents", "kl", "extra"}
    f = Findings.from_dict(raw)
    assert 0 < len(f.latents) <= 8 and f.latents[0]["id"] == PLANTED
    assert [x["score"] for x in f.latents] == sorted((x["score"] for x in f.latents), reverse=True)
    assert sorted(f.latents[0]["contexts"]) == sorted(TOPIC)  # the prompts as written
    assert all({"token", "score"} <= set(t) for t in f.tokens) and len(f.tokens) == 25
    assert {m: run.manifest["models"][m]["source"] for m in ("base", "aligned")} == \
        {"base": str(folders["base"]), "aligned": str(folders["aligned"])}
    capsys.readouterr()
    assert cli(folders, "diff-score", "sae-diff") == 0
    assert "sae: implanted behaviour" in capsys.readouterr().out
    score = run.read_json("score.json")
    assert score["recovered"] and score["criteria"]["latents"]["recovered"], score["summary"]


def test_a_bad_sae_is_one_line_and_leaves_no_run(folders, capsys):
    capsys.readouterr()
    code = diff_sae(folders, folders["runs"].parent / "no-such-sae", "bad-missing")
    assert "does not exist" in one_line_error(capsys, code)
    code = diff_sae(folders, folders["wide"], "bad-wide")
    assert "SAE d_in is 48 but hook 'blocks.0.hook_resid_post'" in one_line_error(capsys, code)
    code = diff_sae(folders, folders["deep"], "bad-deep")
    assert "blocks.7.hook_resid_post" in one_line_error(capsys, code)
    code = cli(folders, "diff", "--method", "sae", "--base", str(folders["base"]), "--aligned", str(folders["aligned"]),
               "--name", "bad-none")
    assert "--method sae needs --sae" in one_line_error(capsys, code)
    assert not any((folders["runs"] / n).exists() for n in ("bad-missing", "bad-wide", "bad-deep", "bad-none"))
