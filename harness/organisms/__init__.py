"""Model organisms: tiny base/aligned pairs whose difference is known (recorded as ground truth).

    from harness.organisms import organism_pair
    pair = organism_pair("tiny-refusal")     # builds into <cache>/checkpoints once, then just looks
    base, aligned = harness.load(pair["base"]), harness.load(pair["aligned"])
    pair["ground_truth"]                     # topic, refusal string, held-out prompts
"""

from harness.organisms.build import (
    DEFAULT_ORGANISM, ORGANISMS, OrganismSpec, build_organism, checkpoints_dir, get_spec, organism_pair,
)

__all__ = ["DEFAULT_ORGANISM", "ORGANISMS", "OrganismSpec", "build_organism", "checkpoints_dir", "get_spec", "organism_pair"]
