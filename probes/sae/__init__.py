"""Sparse autoencoders on hooked models, through SAELens: train (on the fly or from a harness
cache), load, evaluate, analyse features, and diff base vs aligned models.

    from probes.sae import train_sae, load_sae, evaluate_sae, analyze_features, diff_features

Defaults are sink- and outlier-aware (probes.sae.outliers: Exclusion, NORM_RATIO); evaluation
warns when explained variance and CE loss recovered disagree (probes.sae.evaluate).
"""

from probes.sae.configs import ARCHITECTURES, sae_config
from probes.sae.diff import FeatureDiff, diff_features
from probes.sae.evaluate import SAEEval, evaluate_sae, heldout_tokens
from probes.sae.features import FeatureReport, analyze_features, feature_acts, logit_effects
from probes.sae.io import SAEError, check_fits, load_sae
from probes.sae.outliers import NORM_RATIO, Exclusion
from probes.sae.settings import TrainSettings
from probes.sae.train import TrainResult, train_sae

__all__ = ["ARCHITECTURES", "NORM_RATIO", "Exclusion", "FeatureDiff", "FeatureReport", "SAEError", "SAEEval", "TrainResult", "TrainSettings",
           "analyze_features",
           "check_fits", "diff_features", "evaluate_sae", "feature_acts", "heldout_tokens", "load_sae",
           "logit_effects", "sae_config", "train_sae"]
