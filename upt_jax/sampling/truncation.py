"""Temperature and top-k / top-p truncation of next-token logits, and the kept set's threshold.

Both truncations keep the entries at or above a per-row threshold found by a 32-step descent over
order keys (masked counts or sums over the vocabulary, no sort); `kept_set_threshold` turns the
kept set into one number per row that a trainer can apply to its own logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG_INF = -1e30


def process_logits(logits: jax.Array, temperature: float, top_k: int, top_p: float) -> jax.Array:
    """Temperature, then top-k, then top-p (nucleus) truncation; removed entries → −inf.

    Both truncations keep the entries at or above a per-row threshold found by ``_descend_threshold``
    (32 masked counts or sums over ``V``, no sort: ``lax.top_k`` and ``sort`` made a top-k decode
    step about 6× slower on CPU). Ties at the threshold are kept.

    Args:
      logits: ``[B, V]`` fp32.
    Returns:
      ``[B, V]`` processed logits; ``log_softmax`` of them is the sampling distribution.
    """
    x = logits / temperature if temperature not in (0.0, 1.0) else logits
    v = x.shape[-1]
    if 0 < top_k < v:  # the k-th largest value: the largest t with ≥ k entries ≥ t
        keys = _order_key(x)
        x = jnp.where(keys >= _descend_threshold(keys, lambda kept: jnp.sum(kept, axis=-1) >= top_k), x, _NEG_INF)
    if top_p < 1.0:  # the smallest set of largest entries with mass ≥ top_p (the top-1 always kept)
        keys, probs = _order_key(x), jax.nn.softmax(x, axis=-1)
        enough = lambda kept: jnp.sum(jnp.where(kept, probs, 0.0), axis=-1) >= top_p
        x = jnp.where(keys >= _descend_threshold(keys, enough), x, _NEG_INF)
    return x


def kept_set_threshold(scaled: jax.Array, processed: jax.Array) -> jax.Array:
    """One number per row that recovers the kept set of ``processed = process_logits(scaled, ...)``.

    Math: ``θ = (min_{v kept} s_v + max_{v removed} s_v) / 2`` on the tempered logits ``s``, so the
    kept set is ``{v : s_v ≥ θ}`` (ties at the cut are kept, hence min kept > max removed); ``−inf``
    when nothing was removed. The midpoint keeps the set the same for any recomputation of ``s``
    within half the gap at the cut (a trainer's forward pass differs from the decode's in the last
    bits).

    Args:
      scaled: ``[B, V]`` tempered logits ``z / τ``.
      processed: ``[B, V]`` the same after truncation (removed entries ``−1e30``).
    Returns:
      ``[B]`` fp32 thresholds.
    """
    kept = processed > _NEG_INF
    lo = jnp.min(jnp.where(kept, scaled, jnp.inf), axis=-1)
    hi = jnp.max(jnp.where(kept, -jnp.inf, scaled), axis=-1)
    return jnp.where(jnp.isfinite(hi), 0.5 * (lo + hi), -jnp.inf).astype(jnp.float32)


def _order_key(x: jax.Array) -> jax.Array:
    """fp32 → uint32 with the same order (sign bit flipped for positives, all bits for negatives;
    −0 taken as +0, as ``<`` does)."""
    x = x.astype(jnp.float32)
    u = jax.lax.bitcast_convert_type(jnp.where(x == 0, jnp.float32(0), x), jnp.uint32)
    return jnp.where(u >> 31 == 1, ~u, u | jnp.uint32(1 << 31))


def _descend_threshold(keys: jax.Array, enough) -> jax.Array:
    """The largest per-row ``t`` with ``enough(keys ≥ t)``, for order ``keys [B, V]`` (``_order_key``).

    ``enough`` maps a ``[B, V]`` bool mask to ``[B]`` bool and must be monotone (true for a mask,
    true for every larger one); where it is false even for the all-true mask (a top-p mass lost to
    rounding), ``t = 0`` keeps every entry. The answer is built bit by bit from the top (32 masked
    reductions over ``V``): it is always some entry's key, and that entry is the threshold a sort
    would find.
    Returns ``[B, 1]`` uint32.
    """
    t = jnp.zeros(keys.shape[:-1] + (1,), jnp.uint32)
    for bit in range(31, -1, -1):
        cand = t | jnp.uint32(1 << bit)
        t = jnp.where(enough(keys >= cand)[..., None], cand, t)
    return t
