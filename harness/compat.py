"""Is a pair of models comparable position by position? Same architecture, same tokenizer.

    check_pair(base, aligned)              # raises PairMismatchError naming what differs
    differences(base, aligned)             # the list of differences, empty when comparable

Here in harness because the paired activation cache needs the rule too; probes.compat re-exports it.
"""

from __future__ import annotations

from harness.errors import HarnessError

# The ModelConfig fields that decide whether two models' hooks have the same names and shapes.
SHAPE_FIELDS = ("family", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_head", "d_mlp", "d_vocab",
                "n_experts", "experts_per_token", "d_expert", "kv_lora_rank", "v_head_dim", "positional", "mixers")


class PairMismatchError(HarnessError):
    """Two models that a method needs to be the same architecture or tokenizer are not."""


def architecture_differences(a, b) -> list[str]:
    return [f"{f} {getattr(a.cfg, f)} vs {getattr(b.cfg, f)}" for f in SHAPE_FIELDS
            if getattr(a.cfg, f, None) != getattr(b.cfg, f, None)]


def tokenizer_differences(a, b) -> list[str]:
    ta, tb = a.tokenizer, b.tokenizer
    if ta is None or tb is None:
        return [] if ta is tb else ["one model has no tokenizer"]
    va, vb = ta.get_vocab(), tb.get_vocab()
    out = []
    if len(va) != len(vb):
        out.append(f"tokenizer vocabulary {len(va)} vs {len(vb)} tokens")
    moved = [t for t, i in va.items() if vb.get(t) != i]
    if moved:
        out.append(f"{len(moved)} tokens have different ids (e.g. {moved[0]!r})")
    for special in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(ta, special, None) != getattr(tb, special, None):
            out.append(f"{special} {getattr(ta, special, None)} vs {getattr(tb, special, None)}")
    if getattr(ta, "chat_template", None) != getattr(tb, "chat_template", None):
        out.append("chat templates differ")
    return out


def differences(a, b, tokenizer: bool = True) -> list[str]:
    return architecture_differences(a, b) + (tokenizer_differences(a, b) if tokenizer else [])


def _name(model) -> str:
    return model.identity.get("name") or model.cfg.name or model.cfg.family


def check_pair(a, b, tokenizer: bool = True, what: str = "diffing") -> None:
    """Raise PairMismatchError (one line, naming what differs) unless a and b are comparable."""
    arch = architecture_differences(a, b)
    if arch:
        raise PairMismatchError(f"{what} needs two models of the same architecture; {_name(a)} and {_name(b)} "
                                f"differ in {'; '.join(arch[:4])}")
    toks = tokenizer_differences(a, b) if tokenizer else []
    if toks:
        raise PairMismatchError(f"{what} needs two models with the same tokenizer; {_name(a)} and {_name(b)} "
                                f"differ: {'; '.join(toks[:3])}")
