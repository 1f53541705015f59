"""Base vs aligned through one SAE: run the same SAE over both models' activations on the same
text and rank features by how much their firing frequency and mean activation changed.

    d = diff_features(sae, base, aligned, "blocks.3.hook_resid_post", corpus="stdlib-docs", n_tokens=20_000)
    d.top("freq_delta", 10)        # features that fire more (or less, sort on abs) after alignment
    d.write(run)                   # feature_diff.jsonl, one row per feature, ranked

The SAE is usually trained on one of the two models; features it reads poorly on the other show
up as large changes, which is part of what the comparison is meant to find.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.errors import HarnessError
from probes.sae.evaluate import heldout_tokens
from probes.sae.features import feature_acts, firing_stats
from probes.sae.io import check_fits

COLUMNS = ("feature", "freq_base", "freq_aligned", "freq_delta", "mean_base", "mean_aligned", "mean_delta")


@dataclass
class FeatureDiff:
    hook: str
    n_tokens: int
    stats: dict[str, torch.Tensor]  # COLUMNS -> [d_sae]

    def rows(self, by: str = "freq_delta") -> list[dict]:
        """All features as dicts, largest |by| first."""
        order = self.stats[by].abs().argsort(descending=True)
        return [{c: (int(self.stats[c][i]) if c == "feature" else float(self.stats[c][i])) for c in COLUMNS}
                for i in order.tolist()]

    def top(self, by: str = "freq_delta", n: int = 10) -> list[dict]:
        if by not in COLUMNS[1:]:
            raise HarnessError(f"cannot rank by {by!r}; use one of {', '.join(COLUMNS[1:])}")
        return self.rows(by)[:n]

    def write(self, run, name: str = "feature_diff") -> None:
        run.write_jsonl(f"{name}.jsonl", self.rows("freq_delta"))
        run.write_json(f"{name}_summary.json", {"hook": self.hook, "n_tokens": self.n_tokens,
                                                "top_freq": self.top("freq_delta", 20),
                                                "top_mean": self.top("mean_delta", 20)})


def _same_tokenizer(base, aligned) -> None:
    tb, ta = base.tokenizer, aligned.tokenizer
    if tb is None or ta is None:
        return
    if len(tb) != len(ta) or tb("The quick brown fox.")["input_ids"] != ta("The quick brown fox.")["input_ids"]:
        raise HarnessError("base and aligned models tokenize differently; "
                           "a feature diff needs the same token ids in both")


def _stats(sae, model, hook, tokens, batch_size) -> tuple[torch.Tensor, torch.Tensor]:
    batches = (feature_acts(sae, model, hook, tokens[i:i + batch_size]) for i in range(0, len(tokens), batch_size))
    return firing_stats(batches, sae.cfg.d_sae)


def diff_features(sae, base, aligned, hook: str | None = None, *, tokens=None, corpus="stdlib-docs",
                  n_tokens: int = 20_000, context_length: int = 128, batch_size: int = 8) -> FeatureDiff:
    hook = check_fits(sae, base, hook)
    check_fits(sae, aligned, hook)
    _same_tokenizer(base, aligned)
    if tokens is None:
        tokens = heldout_tokens(base, corpus, n_tokens, context_length, split="all")
    freq_b, mean_b = _stats(sae, base, hook, tokens, batch_size)
    freq_a, mean_a = _stats(sae, aligned, hook, tokens, batch_size)
    stats = {"feature": torch.arange(sae.cfg.d_sae), "freq_base": freq_b, "freq_aligned": freq_a,
             "freq_delta": freq_a - freq_b, "mean_base": mean_b, "mean_aligned": mean_a, "mean_delta": mean_a - mean_b}
    return FeatureDiff(hook, tokens.numel(), stats)
