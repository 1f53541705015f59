"""Prompt sets are tokenisation-aware: checked with the SmolLM2 tokenizer on a tiny random model."""

import pytest
import torch

from harness.models.config import ModelConfig
from harness.models.transformer import HookedLM
from probes import circuits as C
from probes.circuits.tasks import TASKS, task


@pytest.fixture(scope="module")
def model():
    from transformers import AutoTokenizer

    from harness import zoo

    folder = zoo.resolve("smollm2-135m-instruct")  # installed by `make setup`
    tok = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    cfg = ModelConfig(family="llama", d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=32,
                      d_vocab=len(tok), n_ctx=64, bos_token_id=tok.bos_token_id)
    return HookedLM(cfg, tok).eval()


def test_ioi_names_are_single_tokens_and_positions_line_up(model):
    ps = C.ioi(model, n=12)
    assert ps.clean.shape == ps.corrupted.shape and len(ps) == 12
    assert (ps.clean[:, 0] == model.tokenizer.bos_token_id).all()
    for text, row, (io, s) in zip(ps.texts, ps.clean.tolist(), ps.answers.tolist()):
        assert model.tokenizer.decode(row[1:]) == text
        assert io in row and s in row and io != s  # both names appear, each as one token
        assert row.count(s) == 2 and row.count(io) == 1


def test_other_sets(model):
    rep = C.repeated_tokens(model, n=3, length=7)
    assert torch.equal(rep.clean[:, 1:8], rep.clean[:, 8:]) and rep.clean.shape == (3, 15)
    gt = C.greater_than(model, n=6)
    assert gt.clean.shape == gt.corrupted.shape and gt.extra["greater"].shape == (len(gt), model.cfg.d_vocab)
    assert gt.extra["greater"].any(-1).all()
    facts = C.factual_recall(model)
    assert facts.clean.shape == facts.corrupted.shape and (facts.answers[:, 0] != facts.answers[:, 1]).all()
    for name in TASKS:
        prompts, metric = task(model, name, n=4)
        with torch.no_grad():
            assert C.scalar(metric, model(prompts.clean)).isfinite()
