"""TransformerLens's own utilities (patching, head_detector, ActivationCache's decompositions)
run on HookedLM and give the numbers they give on TransformerLens's HookedTransformer holding the
same weights; weight processing (fold_ln and the rest) matches TransformerLens's; to_tokens'
BOS rule and generate's defaults are TransformerLens's. torch.set_num_threads(1)."""

import copy

import pytest
import torch
import transformers as tf
from transformer_lens import HookedTransformer, HookedTransformerConfig, head_detector, patching
from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

import harness
from harness.errors import HarnessError, UnsupportedArchitectureError
from harness.models.transformer import HookedLM
from tests.harness.hf_tiny import _perturb, build, gpt2_pair, tl_gpt2_config

torch.set_num_threads(1)
TOL = 1e-4
WORDS = [f"w{i}" for i in range(3, 97)]


def word_tokenizer(folder, bos_by_itself: bool = False):
    """A 97-word tokenizer with <s>, </s> and <pad>, saved and reloaded as transformers would."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="</s>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos_by_itself:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(folder)
    return tf.AutoTokenizer.from_pretrained(folder)


def text(*ids):
    return " ".join(WORDS[i] for i in ids)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    ours, tl = gpt2_pair()
    tok = word_tokenizer(tmp_path_factory.mktemp("tok"))
    ours.tokenizer = tok
    tl.set_tokenizer(tok)
    tl.cfg.default_prepend_bos = True
    return ours, tl


def llama_pair(n_kv_heads=2):
    """A tiny GQA Llama (plain rope, which TransformerLens expresses) in both libraries."""
    torch.manual_seed(0)
    c = tf.LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=6,
                       num_key_value_heads=n_kv_heads, max_position_embeddings=64, tie_word_embeddings=False)
    c._attn_implementation = "eager"
    hf = _perturb(tf.LlamaForCausalLM(c), 0)
    cfg = HookedTransformerConfig(
        d_model=48, n_layers=3, n_heads=6, n_key_value_heads=n_kv_heads, d_head=8, d_mlp=80, d_vocab=97, n_ctx=64,
        act_fn="silu", normalization_type="RMS", eps=c.rms_norm_eps, positional_embedding_type="rotary", rotary_dim=8,
        rotary_base=int(c.rope_parameters["rope_theta"]), gated_mlp=True, final_rms=True,
        original_architecture="LlamaForCausalLM", rotary_adjacent_pairs=False,
    )
    return hf, cfg


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    hf, cfg = llama_pair()
    tl = HookedTransformer(cfg)
    tl.load_state_dict(convert_llama_weights(hf, cfg), strict=False)
    tok = word_tokenizer(tmp_path_factory.mktemp("tok"))
    tl.set_tokenizer(tok)
    ours = harness.load(hf, tokenizer=tok)
    return ours, tl.eval(), hf


def tokens_pair(seed=0, batch=2, length=7, vocab=97):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=g), torch.randint(3, vocab, (batch, length), generator=g)


def metric(logits):
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


def close(a, b, tol=TOL, what=""):
    assert a.shape == b.shape, (what, a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err < tol, (what, err)
    return err


# ------------------------------------------------------------------------- config and weights


def test_config_exposes_what_transformer_lens_reads(gpt2, llama):
    for ours, tl in (gpt2, llama[:2]):
        for name in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "d_vocab_out", "n_ctx", "act_fn",
                     "normalization_type", "positional_embedding_type", "attn_only", "n_key_value_heads",
                     "default_prepend_bos", "dtype", "gated_mlp", "use_split_qkv_input",
                     "final_rms"):
            assert getattr(ours.cfg, name) == getattr(tl.cfg, name), name
        assert torch.device(ours.cfg.device) == torch.device(tl.cfg.device)
        # (TransformerLens swaps in a BOS-adding copy of the tokenizer, so this flag may differ
        # while the tokens agree; test_to_tokens_bos_* compares the tokens.)
        assert ours.cfg.tokenizer_prepends_bos == (len(ours.tokenizer.encode("")) > 0)
    assert llama[0].cfg.original_architecture == "LlamaForCausalLM"


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_weight_views_match(which, request):
    ours, tl = request.getfixturevalue(which)[:2]
    names = ["W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O", "W_in", "W_out", "b_in", "b_out", "W_U", "b_U", "W_E"]
    names += ["W_pos"] if which == "gpt2" else ["W_gate"]
    for name in names:
        close(getattr(ours, name), getattr(tl, name))
    # GQA: each query head sees its key/value head's weights, repeated as TransformerLens repeats them.
    assert ours.blocks[0].attn.W_K.shape[0] == ours.cfg.n_heads
    close(ours.OV[1, 2].AB, tl.OV[1, 2].AB)
    close(ours.QK[0].AB, tl.QK[0].AB)
    for layer in range(ours.cfg.n_layers + 1):
        close(ours.accumulated_bias(layer), tl.accumulated_bias(layer))


# ------------------------------------------------------------------------- TransformerLens utilities


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_patching_functions_match(which, request):
    ours, tl = request.getfixturevalue(which)[:2]
    clean, corrupted = tokens_pair()
    results = {}
    for name, model in (("ours", ours), ("tl", tl)):
        _, cache = model.run_with_cache(corrupted)
        results[name] = (patching.get_act_patch_resid_pre(model, clean, cache, metric),
                         patching.get_act_patch_attn_head_out_all_pos(model, clean, cache, metric))
    for a, b in zip(results["ours"], results["tl"]):
        close(a, b)
        assert b.abs().max() > 1e-3  # patching changed the metric somewhere


@pytest.mark.parametrize("which", ["gpt2", "llama"])
@pytest.mark.parametrize("head", ["previous_token_head", "duplicate_token_head", "induction_head"])
def test_detect_head_matches(which, head, request):
    ours, tl = request.getfixturevalue(which)[:2]
    seq = text(1, 2, 3, 4, 5, 1, 2, 3, 4, 5)
    a, b = head_detector.detect_head(ours, seq, head), head_detector.detect_head(tl, seq, head)
    close(a, b)


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_cache_decompositions_match(which, request):
    ours, tl = request.getfixturevalue(which)[:2]
    clean, _ = tokens_pair(1)
    answers, wrong = clean[:, 0], clean[:, 1]
    caches = [m.run_with_cache(clean)[1] for m in (ours, tl)]
    out = []
    for cache in caches:
        stack, labels = cache.decompose_resid(return_labels=True)
        full, full_labels = cache.get_full_resid_decomposition(expand_neurons=True, return_labels=True)
        out.append(dict(
            stack=stack, labels=labels, full_labels=full_labels, full=full,
            ln=cache.apply_ln_to_stack(stack),
            attrs=cache.logit_attrs(cache.decompose_resid(pos_slice=-1), tokens=answers, incorrect_tokens=wrong,
                                    pos_slice=-1),
            heads=cache.stack_head_results(layer=-1, apply_ln=True),
            accumulated=cache.accumulated_resid(apply_ln=True),
            acts=cache.stack_activation("attn_out"),
        ))
    ours_out, tl_out = out
    assert ours_out["labels"] == tl_out["labels"] and ours_out["full_labels"] == tl_out["full_labels"]
    for key in ("stack", "full", "ln", "attrs", "heads", "accumulated", "acts"):
        close(ours_out[key], tl_out[key])


def test_token_helpers_match(gpt2):
    ours, tl = gpt2
    seq = text(4, 9, 4, 2)
    assert ours.to_single_token(WORDS[5]) == tl.to_single_token(WORDS[5])
    for mode in ("first", "last"):
        assert ours.get_token_position(WORDS[4], seq, mode=mode) == tl.get_token_position(WORDS[4], seq, mode=mode)
    close(ours.tokens_to_residual_directions(WORDS[7]), tl.tokens_to_residual_directions(WORDS[7]))
    close(ours.tokens_to_residual_directions(torch.tensor([[3, 4], [5, 6]])),
          tl.tokens_to_residual_directions(torch.tensor([[3, 4], [5, 6]])))
    tokens = ours.to_tokens([seq, text(1, 2)])
    close(ours.loss_fn(ours(tokens), tokens, per_token=True), tl.loss_fn(tl(tokens), tokens, per_token=True))
    with pytest.raises(HarnessError):
        ours.to_single_token(text(1, 2))


# ------------------------------------------------------------------------- weight processing


def gpt2_processed_pair(**flags):
    hf = build("gpt2-odd-heads")
    cfg = tl_gpt2_config(hf.config)
    tl = HookedTransformer(cfg)
    # What TL's from_pretrained does; on a copy, since its processing edits the tensors it is given.
    tl.load_and_process_state_dict(convert_gpt2_weights(copy.deepcopy(hf), cfg), **flags)
    return HookedLM.from_pretrained(None, hf_model=hf, **flags), tl.eval(), hf


@pytest.mark.parametrize("flags", [{}, {"center_unembed": False, "fold_value_biases": False},
                                   {"fold_ln": False}])
def test_gpt2_processing_matches_transformer_lens(flags):
    ours, tl, hf = gpt2_processed_pair(**flags)
    assert ours.cfg.normalization_type == tl.cfg.normalization_type
    tokens, _ = tokens_pair(2, length=11)
    with torch.no_grad():
        our_logits, our_cache = ours.run_with_cache(tokens)
        tl_logits, tl_cache = tl.run_with_cache(tokens)
        ref = hf(tokens).logits
    close(our_logits, tl_logits, what="logits")
    # Processing keeps log-probabilities (centring the unembedding only shifts each position's logits).
    close(our_logits.log_softmax(-1), ref.log_softmax(-1))
    for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_V", "b_O", "W_in", "b_in", "W_out", "b_out", "W_U", "b_U",
                 "W_E", "W_pos"):
        close(getattr(ours, name), getattr(tl, name), what=name)
    for name in sorted(set(our_cache.keys()) & set(tl_cache.keys())):
        a, b = our_cache[name], tl_cache[name]
        finite = torch.isfinite(b)
        close(a[finite], b[finite], what=name)
    # Direct logit attribution of the final residual stream: with the norm folded it is the logit
    # difference (less the unembedding bias, which logit_attrs leaves out); unfolded it is not.
    answers, wrong = tokens[:, -1], tokens[:, 0]
    attrs = []
    for cache in (our_cache, tl_cache):
        stack = cache.accumulated_resid(layer=-1, pos_slice=-1)[-1:]
        attrs.append(cache.logit_attrs(stack, tokens=answers, incorrect_tokens=wrong, pos_slice=-1)[0])
    close(attrs[0], attrs[1], what="logit_attrs")
    rows = torch.arange(2)
    true = our_logits[rows, -1, answers] - our_logits[rows, -1, wrong] - (ours.b_U[answers] - ours.b_U[wrong])
    folded = flags.get("fold_ln", True)
    assert ((attrs[0] - true).abs().max().item() < TOL) == folded


def test_harness_load_stays_unprocessed():
    hf = build("gpt2-odd-heads")
    model = harness.load(hf)
    assert model.cfg.normalization_type == "LN" and not torch.allclose(model.blocks[0].ln1.w, torch.ones(60))
    processed = HookedLM.from_pretrained(None, hf_model=hf)
    assert processed.cfg.normalization_type == "LNPre"
    assert torch.equal(processed.blocks[0].ln1.w, torch.ones(60))


def test_llama_processing_matches_transformer_lens():
    hf, cfg = llama_pair()
    tl = HookedTransformer(cfg)
    tl.load_and_process_state_dict(convert_llama_weights(copy.deepcopy(hf), cfg))
    ours = HookedLM.from_pretrained(None, hf_model=hf)
    assert ours.cfg.normalization_type == tl.cfg.normalization_type == "RMSPre"
    tokens, _ = tokens_pair(3, length=9)
    with torch.no_grad():
        close(ours(tokens), tl(tokens))
        close(ours(tokens).log_softmax(-1), hf(tokens).logits.log_softmax(-1))
    for name in ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_gate", "W_out", "W_U", "W_E"):
        close(getattr(ours, name), getattr(tl, name))


# ------------------------------------------------------------------------- what TL cannot express


def test_moe_and_latent_attention_raise_clear_errors():
    from tests.harness import hf_tiny_moe

    names = list(hf_tiny_moe.CONFIGS)
    moe = next(n for n in names if n.startswith("mixtral"))
    mla = next(n for n in names if n.startswith("deepseek"))
    hf_moe, hf_mla = hf_tiny_moe.build(moe), hf_tiny_moe.build(mla)
    with pytest.raises(UnsupportedArchitectureError, match="mixture of experts"):
        HookedLM.from_pretrained(None, hf_model=hf_moe)
    model = harness.load(hf_moe)
    with pytest.raises(UnsupportedArchitectureError, match="mixture of experts"):
        model.W_in
    _, cache = model.run_with_cache(torch.randint(0, model.cfg.d_vocab, (1, 5)))
    with pytest.raises(UnsupportedArchitectureError):
        cache.get_full_resid_decomposition(expand_neurons=True)
    latent = harness.load(hf_mla)
    with pytest.raises(UnsupportedArchitectureError, match="latent"):
        latent.W_K
    with pytest.raises(UnsupportedArchitectureError, match="latent"):
        HookedLM.from_pretrained(None, hf_model=hf_mla, fold_ln=True)


# ------------------------------------------------------------------------- BOS and generate


@pytest.mark.parametrize("bos_by_itself", [False, True])
def test_to_tokens_bos_matches_transformer_lens(tmp_path, bos_by_itself):
    tok = word_tokenizer(tmp_path, bos_by_itself=bos_by_itself)
    ours, tl = gpt2_pair()
    ours.tokenizer = tok
    tl.set_tokenizer(tok)
    tl.cfg.default_prepend_bos = True
    assert ours.cfg.tokenizer_prepends_bos is bos_by_itself
    texts = [text(5, 6, 7), text(8)]
    for prepend in (None, True, False):
        kwargs = {} if prepend is None else {"prepend_bos": prepend}
        assert ours.to_tokens(texts, **kwargs).tolist() == tl.to_tokens(texts, **kwargs).tolist(), prepend
        assert ours.to_str_tokens(texts[0], **kwargs) == tl.to_str_tokens(texts[0], **kwargs)
        assert ours.get_token_position(WORDS[6], texts[0], **kwargs) == tl.get_token_position(WORDS[6], texts[0], **kwargs)
    assert ours.to_tokens(texts[0])[0, 0].item() == 0  # BOS by default, as in a TransformerLens notebook
    # ... and the tokenizer's own convention on request.
    assert ours.to_tokens(texts[0], prepend_bos=ours.cfg.tokenizer_prepends_bos)[0].tolist() == tok.encode(texts[0])


def test_to_tokens_bos_matches_transformer_lens_on_smollm2():
    from harness import zoo

    folder = zoo.resolve("smollm2-135m-instruct")  # make test installs it: a missing zoo model fails here
    tok = tf.AutoTokenizer.from_pretrained(folder)
    ours, tl = gpt2_pair()
    ours.tokenizer = tok
    tl.set_tokenizer(tok)
    tl.cfg.default_prepend_bos = True
    prompt = "The Eiffel Tower is in the city of"
    assert ours.to_tokens(prompt).tolist() == tl.to_tokens(prompt).tolist()
    assert ours.to_tokens(prompt)[0, 0].item() == tok.bos_token_id
    assert ours.to_str_tokens(prompt) == tl.to_str_tokens(prompt)
    assert ours.to_tokens(prompt, prepend_bos=False).tolist() == tl.to_tokens(prompt, prepend_bos=False).tolist()


def test_generate_samples_by_default_and_honours_temperature():
    model = harness.load(build("llama-gqa3-llama3rope"))
    prompt = torch.tensor([[5, 6, 7]])
    greedy = model.generate(prompt, max_new_tokens=12, do_sample=False, stop_at_eos=False)
    sampled = [model.generate(prompt, max_new_tokens=12, seed=s, stop_at_eos=False) for s in range(3)]
    assert any(not torch.equal(s, greedy) for s in sampled)  # do_sample defaults to True
    assert torch.equal(model.generate(prompt, max_new_tokens=12, temperature=0.0, stop_at_eos=False), greedy)
    cold = model.generate(prompt, max_new_tokens=12, temperature=1e-4, seed=1, stop_at_eos=False)
    assert torch.equal(cold, greedy)  # temperature is honoured without do_sample being passed


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_component_weight_views_match(which, request):
    """Notebooks read embed.W_E, unembed.W_U/b_U and pos_embed.W_pos off the components."""
    ours, tl = request.getfixturevalue(which)[:2]
    assert torch.allclose(ours.embed.W_E, tl.embed.W_E, atol=TOL)
    assert torch.allclose(ours.unembed.W_U, tl.unembed.W_U, atol=TOL)
    assert ours.unembed.b_U.shape == tl.unembed.b_U.shape
    assert torch.allclose(ours.unembed.b_U, tl.unembed.b_U, atol=TOL)
    if which == "gpt2":
        assert torch.allclose(ours.pos_embed.W_pos, tl.pos_embed.W_pos, atol=TOL)
    assert {"embed.weight", "unembed.weight"} <= set(ours.state_dict())  # checkpoints keep their keys
