"""Replacements for upt_jax functions that earlier sessions measured and did not land, kept so that
``python -m benchmarks.update_ab --patch ...`` reproduces each measurement (docs/performance.md)."""
