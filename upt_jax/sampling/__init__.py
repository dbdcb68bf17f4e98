"""Jit-compiled batched generation with the KV cache; returns tokens and behaviour log-probs."""

from upt_jax.sampling.sampler import (
    SampleOutput,
    Sampler,
    SamplingParams,
    kept_set_threshold,
    policy_temperature,
    process_logits,
    round_up,
)

__all__ = [
    "SampleOutput",
    "Sampler",
    "SamplingParams",
    "kept_set_threshold",
    "policy_temperature",
    "process_logits",
    "round_up",
]
