"""The base/aligned pair rule, from harness (the paired cache uses it too): same architecture,
same tokenizer, or one PairMismatchError line naming what differs."""

from harness.compat import (SHAPE_FIELDS, PairMismatchError, architecture_differences, check_pair, differences,
                            tokenizer_differences)

__all__ = ["SHAPE_FIELDS", "PairMismatchError", "architecture_differences", "check_pair", "differences",
           "tokenizer_differences"]
