"""Best-of-n sampling: draw n completions per prompt from a policy and keep the one a reward
model scores highest (the baseline PPO is measured against in Gao et al. 2023).

    picks = best_of_n(policy, rm, ["What is a sword made of?"], n=8)
    picks[0]["best"], picks[0]["best_score"], picks[0]["samples"]   # [(text, score), ...]

The reward model reads each (prompt, completion) as text, so it may use another tokenizer.
"""

from __future__ import annotations

from harness.errors import ConfigError
from harness.training.chat import encode_prompt
from harness.training.reward import score_texts
from harness.training.rollout import sample_completions


def best_of_n(policy, rm, prompts: list[str], n: int = 8, max_new_tokens: int = 24, temperature: float = 1.0,
              seed: int = 0, chat: bool = True, batch_size: int = 32) -> list[dict]:
    """Per prompt: {"prompt", "best", "best_score", "mean_score", "samples": [(text, score)]}."""
    if n < 1:
        raise ConfigError(f"best-of-n needs n >= 1, got {n}")
    if not prompts:
        raise ConfigError("best-of-n needs at least one prompt")
    ids = [encode_prompt(policy.tokenizer, p, chat) for p in prompts]
    texts: list[str] = []
    per_batch = max(1, batch_size // n)  # prompts per batch, n samples each
    for start in range(0, len(prompts), per_batch):
        chunk = [row for row in ids[start : start + per_batch] for _ in range(n)]
        rollout = sample_completions(policy, chunk, max_new_tokens, temperature, seed + start)
        texts += rollout.completions(policy.tokenizer)
    owners = [p for p in prompts for _ in range(n)]
    scores = score_texts(rm, owners, texts, chat, batch_size).tolist()
    out = []
    for i, prompt in enumerate(prompts):
        samples = list(zip(texts[i * n : (i + 1) * n], scores[i * n : (i + 1) * n]))
        best = max(range(n), key=lambda j: samples[j][1])
        out.append({"prompt": prompt, "best": samples[best][0], "best_score": samples[best][1],
                    "mean_score": sum(s for _, s in samples) / n, "samples": samples})
    return out
