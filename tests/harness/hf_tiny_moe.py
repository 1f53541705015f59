"""Small randomly initialised transformers MoE / latent-attention models with awkward shapes.

Every parameter and DeepSeek's e_score_correction_bias buffer are perturbed, so a misplaced
norm weight or an ignored routing bias changes the output instead of hiding behind HF's init."""

import torch
import transformers as tf

YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 32,
        "beta_fast": 24, "beta_slow": 2, "mscale": 0.9, "mscale_all_dim": 0.7}

CONFIGS = {
    # name: (model class, config, attention implementation)
    "mixtral-7experts-top3": (tf.MixtralForCausalLM, lambda: tf.MixtralConfig(
        vocab_size=97, hidden_size=48, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, num_local_experts=7, num_experts_per_tok=3,
        tie_word_embeddings=False), "sdpa"),
    "qwen3moe-dense-layer-unnormed": (tf.Qwen3MoeForCausalLM, lambda: tf.Qwen3MoeConfig(
        vocab_size=101, hidden_size=48, intermediate_size=64, moe_intermediate_size=24, num_hidden_layers=3,
        num_attention_heads=3, num_key_value_heads=1, head_dim=16, max_position_embeddings=128,
        num_experts=8, num_experts_per_tok=3, norm_topk_prob=False, mlp_only_layers=[1],
        tie_word_embeddings=False), "sdpa"),
    "deepseek-groups-qlora-yarn": (tf.DeepseekV3ForCausalLM, lambda: tf.DeepseekV3Config(
        vocab_size=103, hidden_size=48, intermediate_size=64, moe_intermediate_size=20, num_hidden_layers=3,
        num_attention_heads=3, num_key_value_heads=3, n_routed_experts=8, num_experts_per_tok=3, n_group=4, topk_group=2,
        n_shared_experts=2, first_k_dense_replace=1, routed_scaling_factor=2.5, kv_lora_rank=16,
        q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=12, v_head_dim=10, rms_norm_eps=1e-5,
        max_position_embeddings=128, rope_parameters=YARN, rope_interleave=True), "sdpa"),
    "deepseek-no-qlora-halfsplit-rope": (tf.DeepseekV3ForCausalLM, lambda: tf.DeepseekV3Config(
        vocab_size=89, hidden_size=40, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, n_routed_experts=6, num_experts_per_tok=2, n_group=1, topk_group=1,
        n_shared_experts=1, first_k_dense_replace=0, routed_scaling_factor=1.5, norm_topk_prob=False,
        kv_lora_rank=12, q_lora_rank=None, qk_rope_head_dim=4, qk_nope_head_dim=8, v_head_dim=6,
        max_position_embeddings=64, rope_interleave=False), "eager"),
}


def perturb(model, seed: int):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.add_(torch.randn(b.shape, generator=gen) * 0.1)  # sigmoid scores are near 0.5
    return model.eval()


def build(name: str, seed: int = 0):
    cls, make_config, attn = CONFIGS[name]
    torch.manual_seed(seed)
    config = make_config()
    config._attn_implementation = attn
    return perturb(cls(config), seed)
