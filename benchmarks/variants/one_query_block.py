"""``upt_jax.models.transformer.causal_query_block`` as it was before session 20: every row in one
block, so the attention computes the full ``[T, T]`` scores and masks the upper half.

    python -m benchmarks.update_ab --config tiny small --batch 4 --seq 1024 \
        --patch upt_jax.models.transformer.causal_query_block=benchmarks.variants.one_query_block:causal_query_block

Arm A is the code with causal query blocks, arm B this: a speed-up below 1 is the blocks' gain
(B's time over A's is its inverse). Measured in session 20: docs/performance.md.
"""


def causal_query_block(t: int) -> None:
    """One block for every row length ``t``."""
    return None
