"""Test-wide settings: offline hubs, no wandb, and a fixed torch thread count (2 cores here)."""

import os

for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
                   "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)

import torch  # noqa: E402

THREADS = int(os.environ.get("HARNESS_TEST_THREADS", "2"))
torch.set_num_threads(THREADS)
