"""upt_jax: unified post-training for LLMs in JAX."""

__version__ = "0.1.0"
