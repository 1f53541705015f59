"""lm-eval imports `!function hx_utils.<name>` from this file; the logic lives in evals.suites.metrics."""

from evals.suites.metrics import (  # noqa: F401
    flip_rate,
    process_arithmetic,
    process_instructions,
    process_over_refusal,
    process_refusal,
    process_sycophancy,
)
