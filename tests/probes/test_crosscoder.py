"""Crosscoders on a synthetic pair with planted features (the answer known by construction),
resumable training with an injected interruption, save/load, and evaluation on real tiny models."""

import copy
import json

import pytest
import torch

from probes.crosscoder import Crosscoder, CrosscoderConfig, CrosscoderError, TrainConfig
from probes.crosscoder.data import ModelPairSource, hooks_for
from probes.crosscoder.evaluate import evaluate, spliced_losses
from probes.crosscoder.io import load_crosscoder, save_crosscoder
from probes.crosscoder.latents import decoder_cosines, latent_table, relative_norms
from probes.crosscoder.synthetic import SyntheticPair
from probes.crosscoder.train import train_crosscoder
from tests.probes import tiny


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These are thousands of tiny matmuls: with 2 threads on 2 loaded cores, thread hand-offs
    # cost more than the arithmetic (minutes instead of seconds), so this module runs on one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def held_out(pair, n=4):
    return [pair.batch(10**6 + i, 1024) for i in range(n)]


def unit_aligned_decoders(cc):
    w = cc.W_dec.detach()[:, 1].flatten(1)
    return w / w.norm(dim=-1, keepdim=True).clamp(min=1e-9)


def quiet(**kw):
    return TrainConfig(show_progress=False, **kw)


@pytest.fixture(scope="module")
def pair():
    return SyntheticPair(d_in=32, n_shared=48, n_planted=4, n_decoupled=8, seed=0)


def test_batchtopk_recovers_the_planted_aligned_only_features(pair):
    cc = Crosscoder(CrosscoderConfig(d_in=32, d_latent=128, loss="batchtopk", k=4))
    train_crosscoder(cc, pair, quiet(steps=1500, batch_size=256, lr=3e-3))
    cos = unit_aligned_decoders(cc) @ pair.planted.T  # [latents, planted]
    best = cos.max(0)
    rel = relative_norms(cc)[best.indices]
    assert bool((best.values >= 0.9).all()), best.values
    assert bool((rel >= 0.9).all()), rel  # and the matching latents write (almost) only to the aligned model
    # the shared-but-decoupled features stay shared: no latent near them looks aligned-only
    dec_cos = unit_aligned_decoders(cc) @ pair.decoupled.T
    near = dec_cos.max(1).values >= 0.9
    assert near.any() and bool((relative_norms(cc)[near] < 0.8).all())
    ev = evaluate(cc, held_out(pair))
    assert ev["explained_variance"]["base"] > 0.9 and ev["explained_variance"]["aligned"] > 0.9
    assert ev["l0"] == pytest.approx(4, abs=1.0) and 0 <= ev["dead_fraction"] < 1


def test_latent_scaling_flags_the_l1_crosscoders_false_aligned_only_latents(pair):
    cc = Crosscoder(CrosscoderConfig(d_in=32, d_latent=256, loss="l1", l1_coeff=0.3))
    train_crosscoder(cc, pair, quiet(steps=1500, batch_size=256, lr=3e-3, l1_warmup=100))
    planted_cos = (unit_aligned_decoders(cc) @ pair.planted.T).max(1).values
    rows = [r for r in latent_table(cc, held_out(pair), aligned_only=0.9) if r.get("fired")]
    true = [r for r in rows if planted_cos[r["id"]] >= 0.9]
    false = [r for r in rows if planted_cos[r["id"]] < 0.5]
    assert len(true) >= 4 and not any(r["artefact"] for r in true), true
    assert max(max(abs(r["nu_eps"]), abs(r["nu_r"])) for r in true) < 0.2
    assert false, "the L1 crosscoder made no false aligned-only latent on this pair"
    assert all(r["artefact"] for r in false) and min(r["nu_r"] for r in false) > 0.5, false


def test_relative_norm_and_cosine_by_construction():
    cc = Crosscoder(CrosscoderConfig(d_in=4, d_latent=3, loss="l1"))
    with torch.no_grad():
        cc.W_dec.zero_()
        cc.W_dec[0, 0, 0, 0] = 1.0  # base only
        cc.W_dec[1, 1, 0, 1] = 2.0  # aligned only
        cc.W_dec[2, 0, 0, 2], cc.W_dec[2, 1, 0, 2] = 1.0, 1.0  # shared, same direction
    assert relative_norms(cc).tolist() == pytest.approx([0.0, 1.0, 0.5])
    assert decoder_cosines(cc)[2] == pytest.approx(1.0)


def test_training_resumes_after_an_interruption_with_identical_weights(tmp_path, pair):
    cfg = CrosscoderConfig(d_in=32, d_latent=64, loss="batchtopk", k=4, dead_after=5)
    tcfg = quiet(steps=40, batch_size=64, lr=3e-3, save_every=10, log_every=5)
    whole = Crosscoder(cfg)
    train_crosscoder(whole, pair, tcfg)

    class Killed(Exception):
        pass

    def kill_at_25(step, metrics):
        if step == 25:
            raise Killed

    with pytest.raises(Killed):
        train_crosscoder(Crosscoder(cfg), pair, tcfg, folder=tmp_path, on_step=kill_at_25)
    assert [p.name for p in tmp_path.glob("state-*")] == ["state-00000020"]
    # a save killed half-way leaves only a temporary folder, which resuming ignores
    junk = tmp_path / ".state-00000030.dead.tmp"
    junk.mkdir()
    (junk / "state.safetensors").write_bytes(b"half a file")
    resumed = Crosscoder(cfg)
    result = train_crosscoder(resumed, pair, tcfg, folder=tmp_path)
    assert result["resumed_from"] == 20
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert [h["step"] for h in result["history"]] == list(range(5, 45, 5))
    loaded = load_crosscoder(tmp_path / "crosscoder")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in whole.state_dict().items())
    # a different setup refuses the folder instead of mixing states
    with pytest.raises(CrosscoderError, match="different crosscoder setup"):
        train_crosscoder(Crosscoder(CrosscoderConfig(d_in=32, d_latent=32, loss="batchtopk", k=4)), pair, tcfg, folder=tmp_path)


def test_save_load_round_trip_and_folders_of_another_shape(tmp_path):
    cc = Crosscoder(CrosscoderConfig(d_in=8, d_latent=16, loss="l1", seed=3))
    with torch.no_grad():
        cc.input_scale.fill_(2.5)
    save_crosscoder(cc, tmp_path / "cc")
    back = load_crosscoder(tmp_path / "cc")
    assert back.cfg == cc.cfg and all(torch.equal(v, back.state_dict()[k]) for k, v in cc.state_dict().items())

    other = tmp_path / "other"
    save_crosscoder(Crosscoder(CrosscoderConfig(d_in=8, d_latent=32, loss="l1")), other)
    meta = json.loads((other / "config.json").read_text())
    meta["config"]["d_latent"] = 16  # the config now lies about the weights
    (other / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CrosscoderError, match=r"does not match its config: W_dec \(32.*vs \(16"):
        load_crosscoder(other)
    sae_like = tmp_path / "sae"
    sae_like.mkdir()
    (sae_like / "config.json").write_text(json.dumps({"d_in": 8, "d_sae": 16}))
    with pytest.raises(CrosscoderError, match="not a crosscoder config"):
        load_crosscoder(sae_like)
    with pytest.raises(CrosscoderError, match="not a crosscoder folder"):
        load_crosscoder(tmp_path)
    with pytest.raises(CrosscoderError, match="input must be"):
        back.reconstruct(torch.zeros(3, 2, 1, 9))
    with pytest.raises(CrosscoderError, match="loss must be one of"):
        CrosscoderConfig(d_in=8, d_latent=16, loss="l2")


def tiny_pair():
    base = tiny.model()
    aligned = copy.deepcopy(base)
    aligned.identity = {"name": "tiny-aligned"}
    with torch.no_grad():
        aligned.blocks[1].mlp.down_proj.weight.mul_(1.5)
    return base, aligned


def test_on_real_models_two_layers_spliced_ce_and_kl():
    base, aligned = tiny_pair()
    texts = [" ".join(tiny.WORDS[i : i + 12]) for i in range(0, 24)]
    tokens, mask = base.to_tokens(texts, padding_side="right", return_mask=True)
    hooks = hooks_for(base, [1, -1])
    assert hooks == ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]
    source = ModelPairSource(base, aligned, hooks, tokens, mask, contexts_per_block=12, steps_per_block=10)
    x = source.batch(0, 32)
    assert x.shape == (32, 2, 2, 32) and torch.equal(x, source.batch(0, 32))
    cfg = CrosscoderConfig(d_in=32, d_latent=128, n_layers=2, loss="batchtopk", k=16, hooks=tuple(hooks))
    untrained = Crosscoder(cfg)
    untrained.threshold.fill_(0.0)
    trained = Crosscoder(cfg)
    train_crosscoder(trained, source, quiet(steps=300, batch_size=128, lr=3e-3))
    ev = evaluate(trained, [source.batch(10**5 + i, 256) for i in range(2)])
    assert ev["explained_variance"]["aligned"] > 0.7, ev
    good = spliced_losses(trained, base, aligned, tokens, mask)
    bad = spliced_losses(untrained, base, aligned, tokens, mask)
    for role, model in (("base", base), ("aligned", aligned)):
        with torch.no_grad():
            clean = float(model(tokens, attention_mask=mask, return_type="loss"))
        assert good[role]["ce_clean"] == pytest.approx(clean, rel=1e-3)
        assert good[role]["kl"] < bad[role]["kl"] and good[role]["kl"] >= 0
    with pytest.raises(CrosscoderError, match="layer 3 is out of range: the model has 3 layers"):
        hooks_for(base, [3])
    from probes.compat import PairMismatchError

    with pytest.raises(PairMismatchError, match="d_model 32 vs 48"):
        ModelPairSource(base, tiny.model(d_model=48), hooks, tokens, mask)
