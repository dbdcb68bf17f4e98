"""What a sampling call asks (`SamplingParams`) and returns (`SampleOutput`), the token draws
(`sample_inverse_cdf`, `sample_from_weights`, `first_argmax`: one uniform per row, so a draw does
not depend on how rows are batched), and the shape buckets calls are compiled for (`round_up`,
`chunk_bounds`, `DEFAULT_LEN_BUCKETS`). See `upt_jax.sampling.sampler`."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "SamplingParams",
    "policy_temperature",
    "SampleOutput",
    "first_argmax",
    "sample_inverse_cdf",
    "sample_from_weights",
    "round_up",
    "chunk_bounds",
    "DEFAULT_LEN_BUCKETS",
]


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to sample.

    ``temperature=0`` or ``greedy=True`` means argmax. ``top_k=0`` and ``top_p=1`` disable
    truncation. ``stop_token_ids`` end a row (the stop token is kept and counted in its length).
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    n: int = 1
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be ≥ 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be ≥ 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.n < 1:
            raise ValueError(f"top_k must be ≥ 0 and n ≥ 1, got top_k={self.top_k}, n={self.n}")

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0


def policy_temperature(params: SamplingParams) -> float:
    """The temperature τ of the policy the rollouts of ``params`` come from: ``params.temperature``,
    or 1 for greedy decoding (an argmax has no temperature; its log-probs are the model's own).

    The sampler's ``logprobs`` are log softmax(z / τ); a trainer that computes its log π_θ at the
    same τ (``sequence_logprobs(..., temperature=τ)``) has ratio 1 at the first update.
    """
    return 1.0 if params.is_greedy else float(params.temperature)


@dataclasses.dataclass
class SampleOutput:
    """Generated continuations, row ``i`` belongs to prompt ``prompt_index[i]``.

    Attributes:
      tokens: ``[N, L]`` int32 (``N = num_prompts · n``), pad after the end.
      logprobs: ``[N, L]`` fp32 log-probs of the tokens under the policy at the sampling
        temperature τ, untruncated (`policy_temperature`; 0 after the end).
      sampling_logprobs: ``[N, L]`` fp32 log-probs under the processed sampling distribution.
      thresholds: ``[N, L]`` fp32 kept-set threshold of each token's sampling distribution on the
        tempered logits (`kept_set_threshold`; ``−inf``: nothing removed, and after the end).
      lengths: ``[N]`` number of generated tokens (stop token included).
      finished: ``[N]`` bool, a stop token was produced.
      prompt_index: ``[N]`` index of the prompt each row continues.
      compile_s, run_s: seconds spent compiling (0 when cached) and generating.
    """

    tokens: np.ndarray
    logprobs: np.ndarray
    sampling_logprobs: np.ndarray
    lengths: np.ndarray
    finished: np.ndarray
    prompt_index: np.ndarray
    compile_s: float = 0.0
    run_s: float = 0.0
    thresholds: np.ndarray | None = None

    def new_tokens(self) -> int:
        return int(self.lengths.sum())

    def sequences(self) -> list[list[int]]:
        return [self.tokens[i, : self.lengths[i]].tolist() for i in range(len(self.lengths))]


def first_argmax(x: jax.Array) -> jax.Array:
    """``argmax`` over the last axis (first index on ties) as two plain reductions.

    Same result as ``jnp.argmax``, several times faster on XLA CPU inside a decode loop.
    ``x: [B, V] → [B]`` int32.
    """
    iota = jnp.arange(x.shape[-1], dtype=jnp.int32)
    hit = x == jnp.max(x, axis=-1, keepdims=True)
    return jnp.min(jnp.where(hit, iota, x.shape[-1] - 1), axis=-1)


def _prefix_sum(x: jax.Array) -> jax.Array:
    """Inclusive prefix sum over the last axis (associative scan: fast on XLA CPU for short axes)."""
    return jax.lax.associative_scan(jnp.add, x, axis=-1)


def sample_inverse_cdf(key: jax.Array, logp: jax.Array, block: int = 64, *, u: jax.Array | None = None) -> jax.Array:
    """Draw one index per row from ``softmax(logp)`` by inverting the CDF, in two levels.

    One uniform ``u`` per row (instead of ``V`` Gumbel draws). The vocabulary is cut into blocks
    of ``block`` entries: the block is the first whose cumulative mass exceeds ``u · total``,
    then the entry inside it the same way. Work is ``O(V)`` with prefix sums only over
    ``V / block`` and ``block`` entries.

    Args:
      key: PRNG key.
      logp: ``[B, V]`` log-probs (very negative / −inf for removed entries; need not be normalised).
      u: ``[B]`` uniforms in ``[0, 1)``, one per row, instead of drawing them from ``key``.
    Returns:
      ``[B]`` int32 token ids, each with probability ``softmax(logp)``.
    """
    return sample_from_weights(key, jnp.exp(logp - jnp.max(logp, axis=-1, keepdims=True)), block, u=u)


def sample_from_weights(key: jax.Array, p: jax.Array, block: int = 64, *, u: jax.Array | None = None) -> jax.Array:
    """``sample_inverse_cdf`` on unnormalised probabilities ``p [B, V]`` (≥ 0, a positive sum per
    row), e.g. ``exp(logits − max)`` already computed for the log-sum-exp: one ``exp`` pass fewer.
    ``u [B]``: the rows' uniforms in ``[0, 1)`` (default: drawn from ``key``)."""
    b, v = p.shape
    nb = -(-v // block)
    p = jnp.pad(p, ((0, 0), (0, nb * block - v))).reshape(b, nb, block)
    block_cdf = _prefix_sum(jnp.sum(p, axis=-1))  # [B, nb]
    u = (jax.random.uniform(key, (b,), jnp.float32) if u is None else u)[:, None] * block_cdf[:, -1:]
    # first block whose cumulative mass exceeds u; never past the last block with mass
    blk = jnp.sum(block_cdf <= u, axis=-1)
    has_mass = jnp.sum(p, axis=-1) > 0
    last_blk = nb - 1 - jnp.argmax(has_mass[:, ::-1], axis=-1)
    blk = jnp.minimum(blk, last_blk)
    before = jnp.where(blk > 0, jnp.take_along_axis(block_cdf, jnp.maximum(blk - 1, 0)[:, None], axis=-1)[:, 0], 0.0)
    inner = jnp.take_along_axis(p, blk[:, None, None], axis=1)[:, 0]  # [B, block]
    inner_cdf = _prefix_sum(inner)
    idx = jnp.sum(inner_cdf <= (u[:, 0] - before)[:, None], axis=-1)
    last_idx = block - 1 - jnp.argmax((inner > 0)[:, ::-1], axis=-1)
    idx = jnp.minimum(idx, last_idx)
    return (blk * block + idx).astype(jnp.int32)


def round_up(x: int, buckets: Sequence[int] | int) -> int:
    """Smallest bucket ≥ x: from a sorted list, or a multiple of an int (at least 1)."""
    if isinstance(buckets, int):
        return max(buckets, -(-x // buckets) * buckets)
    for b in buckets:
        if b >= x:
            return b
    step = buckets[-1]
    return -(-x // step) * step


def chunk_bounds(num: int, chunks: int, multiple: int = 1) -> list[tuple[int, int]]:
    """``[start, stop)`` of at most ``chunks`` contiguous pieces of ``range(num)``.

    Every piece but the last holds ``ceil(num / chunks)`` items rounded up to a multiple of
    ``multiple`` (so all pieces fit one compiled batch shape), the last the rest; at least one
    piece, never an empty one.
    """
    if num < 1:
        raise ValueError(f"nothing to split: num={num}")
    if chunks < 1:
        raise ValueError(f"chunks must be ≥ 1, got {chunks}")
    size = round_up(-(-num // min(chunks, num)), multiple)
    return [(a, min(a + size, num)) for a in range(0, num, size)]


# half-octave length buckets: at most 1.5× padding (1.33× above 32) for ≤ 2 shapes per octave
DEFAULT_LEN_BUCKETS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)
