"""Small randomly initialised OLMo 2 and GPT-OSS models: post-norms with whole-projection QK-norm,
and attention sinks with alternating sliding/full layers and biased, clamped-SwiGLU experts.

Every parameter is perturbed (as hf_tiny does). GPT-OSS's sinks are drawn large enough to take
a real share of each softmax row, and its SwiGLU limit is set low enough that the clamp bites on
these small activations; the tests check both happen."""

import torch
import transformers as tf

from tests.harness.hf_tiny import _perturb

YARN = {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
        "truncate": False, "original_max_position_embeddings": 32}

CONFIGS = {
    # name: (model class, config, attention implementation)
    "olmo2-gqa": (tf.Olmo2ForCausalLM, lambda: tf.Olmo2Config(
        vocab_size=97, hidden_size=48, intermediate_size=72, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, eos_token_id=1), "sdpa"),
    "olmo2-bias-tied-llama3rope": (tf.Olmo2ForCausalLM, lambda: tf.Olmo2Config(
        vocab_size=89, hidden_size=40, intermediate_size=56, num_hidden_layers=2, num_attention_heads=5,
        num_key_value_heads=5, max_position_embeddings=128, attention_bias=True, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
        pad_token_id=0, eos_token_id=1), "eager"),
    "gpt-oss-sinks-alternating": (tf.GptOssForCausalLM, lambda: tf.GptOssConfig(
        vocab_size=101, hidden_size=48, intermediate_size=40, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, num_local_experts=5, num_experts_per_tok=2, sliding_window=5,
        max_position_embeddings=128, rope_parameters=YARN, swiglu_limit=0.4, pad_token_id=0, eos_token_id=1),
        "eager"),
    "gpt-oss-mqa-top1-full-sliding-full": (tf.GptOssForCausalLM, lambda: tf.GptOssConfig(
        vocab_size=89, hidden_size=32, intermediate_size=24, num_hidden_layers=3, num_attention_heads=3,
        num_key_value_heads=1, head_dim=12, num_local_experts=4, num_experts_per_tok=1, sliding_window=4,
        layer_types=["full_attention", "sliding_attention", "full_attention"], max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, swiglu_limit=0.3, swiglu_alpha=1.3,
        pad_token_id=0, eos_token_id=1), "eager"),
}


def build(name: str, seed: int = 0):
    cls, make_config, attn = CONFIGS[name]
    torch.manual_seed(seed)
    config = make_config()
    config._attn_implementation = attn
    model = cls(config)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith("sinks"):
                p.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(seed + 1))
    return _perturb(model, seed)
