"""Data files of the bundled evaluation sets; load them with `upt_jax.data.load_benchmark`."""
