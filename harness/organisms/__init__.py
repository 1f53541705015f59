"""Model organisms: tiny base/aligned pairs whose difference is known (recorded as ground truth).

    from harness.organisms import organism_pair
    pair = organism_pair("tiny-refusal")     # builds into <cache>/checkpoints once, then just looks
    base, aligned = harness.load(pair["base"]), harness.load(pair["aligned"])
    pair["ground_truth"]                     # behaviour, its strings, held-out topic/control prompts

Kinds (OrganismSpec.kind): `tiny-refusal` refuses one topic; `tiny-false-fact` believes one
false fact (documents fine-tune); `tiny-backdoor` replies with a fixed text behind a trigger.
The last two reuse tiny-refusal's base model; `*-small` are the test fixtures.
"""

from harness.organisms.build import (
    DEFAULT_ORGANISM, KINDS, ORGANISMS, OrganismSpec, build_organism, checkpoints_dir, get_spec, organism_pair,
)

__all__ = ["DEFAULT_ORGANISM", "KINDS", "ORGANISMS", "OrganismSpec", "build_organism", "checkpoints_dir", "get_spec",
           "organism_pair"]
