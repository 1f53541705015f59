"""Prompt data shipped with the probes (JSONL)."""
