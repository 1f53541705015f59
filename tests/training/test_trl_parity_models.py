"""End to end on a real (tiny, random) transformers Llama: TRL computes its loss with its own
forward (DPO through its fused LM head, the reward loss through LlamaForSequenceClassification);
the harness loads the same weights with `harness.load` and computes ours. The losses agree
within 1e-5, so response masking, log-prob sums and the reward head's pooled position agree too."""

import copy
from types import SimpleNamespace

import pytest
import torch

from tests.training.trl_reference import trainer, trl  # noqa: F401 - trl skips without TRL

import harness
from harness.training import losses as L
from harness.training.chat import Encoded
from harness.training.preference import sequence_logps
from harness.training.reward import RewardModel, score_rows
from harness.training.reward_train import reward_loss
from tests.harness.hf_tiny import build

TOL = 1e-5
VOCAB_NAME = "llama-gqa3-llama3rope"  # vocab 101, GQA, llama3 rope, untied unembedding
PAD = 0


class PadOnly:
    """All the scorers ask of a tokenizer here: the pad id (rows arrive as token ids)."""

    pad_token_id, eos_token_id, bos_token_id = PAD, None, None

    def encode(self, text, **kwargs):
        return []


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    hf, hf_ref = build(VOCAB_NAME, seed=0), build(VOCAB_NAME, seed=1)
    hf.config.pad_token_id = PAD
    loaded = []
    for i, m in enumerate((hf, hf_ref)):
        folder = tmp_path_factory.mktemp(f"m{i}")
        m.save_pretrained(folder)
        loaded.append(harness.load(folder, tokenizer=PadOnly()))
    return hf, hf_ref, loaded[0], loaded[1]


def rows(seed):
    """Four chosen then four rejected rows: a shared prompt per pair, responses of other lengths."""
    g = torch.Generator().manual_seed(seed)
    out = []
    prompts = [torch.randint(1, 101, (int(n),), generator=g).tolist() for n in torch.randint(2, 6, (4,), generator=g)]
    for side in range(2):
        for p in prompts:
            n = int(torch.randint(1, 7, (1,), generator=g))
            out.append(Encoded(p + torch.randint(1, 101, (n,), generator=g).tolist(), len(p)))
    return out


def right_padded(rs):
    width = max(len(r.ids) for r in rs)
    ids = torch.full((len(rs), width), PAD)
    attention, completion = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, r in enumerate(rs):
        ids[i, : len(r.ids)] = torch.tensor(r.ids)
        attention[i, : len(r.ids)] = 1
        completion[i, r.prompt_len : len(r.ids)] = 1
    return ids, attention, completion


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # TRL's, on transformers 5
def test_dpo_on_a_transformers_model(models):
    from trl.trainer.dpo_trainer import DPOTrainer
    from trl.trainer.utils import add_fused_lm_head

    hf, hf_ref, ours, ours_ref = models
    hf, hf_ref = copy.deepcopy(hf), copy.deepcopy(hf_ref)
    add_fused_lm_head(hf, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    add_fused_lm_head(hf_ref)
    rs = rows(0)
    ids, attention, completion = right_padded(rs)
    obj = trainer(DPOTrainer, model=hf, ref_model=hf_ref, precompute_ref_logps=False, ld_alpha=None,
                  f_divergence_type="reverse_kl", f_alpha_divergence_coef=1.0, loss_types=["sigmoid"],
                  loss_weights=[1.0], beta=0.5, label_smoothing=0.0, use_weighting=False,
                  args=SimpleNamespace(gradient_checkpointing_kwargs=None))
    with torch.no_grad():
        theirs = DPOTrainer._compute_loss(obj, hf, {"input_ids": ids, "attention_mask": attention,
                                                    "completion_mask": completion}, return_outputs=False)
        pol, _ = sequence_logps(ours, rs)
        ref, _ = sequence_logps(ours_ref, rs)
    mine = L.dpo_loss(pol[:4], pol[4:], ref[:4], ref[4:], beta=0.5).mean()
    assert abs(mine.item() - theirs.item()) < TOL


def test_reward_loss_on_a_transformers_sequence_classifier(models):
    """Our RewardModel and LlamaForSequenceClassification (what TRL's RewardTrainer trains) with
    the same weights score the same last token, so TRL's loss on its logits is ours."""
    import transformers as tf
    from trl.trainer.reward_trainer import RewardTrainer

    hf, _, ours, _ = models
    rm = RewardModel.from_lm(ours, seed=3)
    classifier = tf.LlamaForSequenceClassification(copy.deepcopy(hf.config)).eval()
    classifier.config.num_labels = 1
    state = {k.removeprefix("model."): v for k, v in hf.state_dict().items() if k.startswith("model.")}
    classifier.model.load_state_dict(state)
    classifier.score = torch.nn.Linear(hf.config.hidden_size, 1, bias=False)
    with torch.no_grad():
        classifier.score.weight.copy_(rm.reward.score.weight)
    rs = rows(1)
    ids, attention, _ = right_padded(rs)
    obj = trainer(RewardTrainer, model=classifier, args=SimpleNamespace(center_rewards_coefficient=0.01))
    with torch.no_grad():
        theirs = RewardTrainer.compute_loss(obj, classifier, {"input_ids": ids, "attention_mask": attention})
        scores = score_rows(rm, rs)
    mine = reward_loss(scores[:4], scores[4:], center_rewards=0.01)
    assert abs(mine.item() - theirs.item()) < TOL
