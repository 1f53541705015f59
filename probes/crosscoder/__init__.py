"""Crosscoders: one sparse dictionary read from two models (base, aligned) at once.

    cfg = CrosscoderConfig(d_in=128, n_layers=1, d_latent=1024, loss="batchtopk", k=32)
    cc = Crosscoder(cfg)
    result = train_crosscoder(cc, source, TrainConfig(steps=2000), folder="runs/cc")  # resumable
    evaluate(cc, source)                  # FVU per model, L0, dead fraction
    spliced_losses(cc, base, aligned, hooks, tokens)   # CE and KL with the reconstruction spliced in
    table = latent_table(cc, source)      # relative norm, decoder cosine, Latent Scaling per latent
    save_crosscoder(cc, folder); load_crosscoder(folder)

Files, one job each: config.py (the shape), model.py (encoder/decoders, sparsity), losses.py,
data.py (activation sources), train.py (resumable loop), evaluate.py, latents.py, io.py,
synthetic.py (a pair with planted features, the answer known by construction).
"""

from probes.crosscoder.config import CrosscoderConfig, CrosscoderError, TrainConfig
from probes.crosscoder.model import Crosscoder

__all__ = ["Crosscoder", "CrosscoderConfig", "CrosscoderError", "TrainConfig"]
