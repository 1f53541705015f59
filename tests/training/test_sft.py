import pytest
import torch

from harness.errors import ConfigError
from harness.training.chat import collate, encode_pair
from harness.training.sft import SFTConfig, masked_nll, train_lm, train_sft
from tests.training.helpers import tiny_model, tokenizer

EXAMPLES = [{"prompt": f"What is {a} plus {b}?", "response": f"{a} plus {b} is {a + b}."} for a in range(5) for b in range(5)]


def test_prompt_tokens_are_not_scored():
    tok = tokenizer()
    row = encode_pair(tok, "What is 2 plus 3?", "2 plus 3 is 5.")
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"}], add_generation_prompt=True, tokenize=False)
    assert tok.decode(row.ids[: row.prompt_len]) == prompt
    assert tok.decode(row.ids[row.prompt_len :]) == "2 plus 3 is 5.<|end|>"
    batch = collate([row, encode_pair(tok, "Hi", "Hello.")], pad_id=tok.pad_token_id)
    scored = batch["tokens"][0, 1:][batch["loss_mask"][0]]  # loss_mask[j] scores token j+1
    assert tok.decode(scored) == "2 plus 3 is 5.<|end|>"
    assert batch["loss_mask"][1].sum() == len(encode_pair(tok, "Hi", "Hello.").ids) - encode_pair(tok, "Hi", "Hello.").prompt_len


def test_only_the_response_and_its_end_token_are_scored():
    # "5." plus the end token, nothing of the rendered prompt
    model = tiny_model()
    tok = model.tokenizer
    a = collate([encode_pair(tok, "What is 2 plus 3?", "5.")], tok.pad_token_id)
    assert int(a["loss_mask"].sum()) == len(tok.encode("5.", add_special_tokens=False)) + 1


def test_sft_lowers_the_response_loss():
    model = tiny_model()
    tok = model.tokenizer
    batch = collate([encode_pair(tok, x["prompt"], x["response"]) for x in EXAMPLES], tok.pad_token_id)
    with torch.no_grad():
        before = masked_nll(model, batch).item()
    losses = train_sft(model, EXAMPLES, SFTConfig(steps=40, batch_size=8, lr=3e-3, show_progress=False))
    with torch.no_grad():
        after = masked_nll(model, batch).item()
    assert len(losses) == 40 and after < before * 0.6


def test_sft_is_deterministic():
    runs = []
    for _ in range(2):
        model = tiny_model()
        runs.append(train_sft(model, EXAMPLES, SFTConfig(steps=3, batch_size=4, show_progress=False)))
    assert runs[0] == runs[1]


def test_missing_chat_template_is_a_clear_error():
    model = tiny_model()
    model.tokenizer = model.tokenizer.__class__(tokenizer_object=model.tokenizer.backend_tokenizer,
                                                eos_token="<|end|>", pad_token="<|pad|>")  # no chat template
    with pytest.raises(ConfigError, match="no chat template.*chat=False") as err:
        train_sft(model, EXAMPLES, SFTConfig(steps=1, show_progress=False))
    assert "\n" not in str(err.value)
    # plain prompt+response text still trains
    assert len(train_sft(model, EXAMPLES, SFTConfig(steps=2, chat=False, show_progress=False))) == 2


def test_sft_reads_jsonl_and_names_bad_lines(tmp_path):
    from harness.training.data import DataError

    good = tmp_path / "sft.jsonl"
    good.write_text('{"prompt": "Hi", "response": "Hello."}\n\n{"prompt": "Bye", "response": "Goodbye."}\n')
    assert len(train_sft(tiny_model(), good, SFTConfig(steps=1, show_progress=False))) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Hi", "response": "Hello."}\n{"prompt": "Bye"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: missing field\(s\) \['response'\]"):
        train_sft(tiny_model(), bad, SFTConfig(steps=1, show_progress=False))


def test_pretraining_on_plain_text():
    model = tiny_model()
    losses = train_lm(model, ["The capital of France is Paris."] * 4, SFTConfig(steps=20, batch_size=4, lr=3e-3, warmup=2, show_progress=False))
    assert losses[-1] < losses[0] * 0.5
