"""Clip-Cov and KL-Cov (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs").

The policy entropy falls in proportion to the covariance between a token's log-probability and
its advantage; both methods pick the few tokens of the batch with the largest per-token
covariance

    Cov_t = (Â_t − mean(Â)) · (log π(o_t) − mean(log π))        (means over the batch's tokens)

and restrain only them: Clip-Cov removes their gradient (``r·N`` tokens drawn at random among
those with ``ω_low < Cov < ω_high``), KL-Cov adds ``β |log π_θ − log π_old|`` to their loss
(the ``r·N`` tokens of largest covariance; ``N`` = the batch's tokens).

The selection is batch-global, so it is made in `upt_jax.upge.prepare` on the whole batch,
before any micro-batching, from the policy's log-probs given to it (``prepare(..., logp=)``;
`compute_loss` on an unprepared batch gives its own), else from the behaviour log-probs
``old_logp``, which are the policy's own at a step's first update (the trainer's case; with
several update epochs the selection stays that of the rollout policy). Everything here is
stop-gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from upt_jax.upge._common import masked_mean, sg


def token_covariance(advantages: jax.Array, logp: jax.Array, mask: jax.Array) -> jax.Array:
    """``Cov_t = (Â_t − mean Â)(log π_t − mean log π)`` over the valid tokens: ``[B, T]`` (0 on padding).

    Args:
      advantages: ``[B, T]`` (or ``[B]``, broadcast over tokens).
      logp: ``[B, T]`` log-probs of the sampled tokens.
      mask: ``[B, T]`` tokens taking part.
    """
    m = jnp.asarray(mask, jnp.float32)
    a = jnp.broadcast_to(jnp.asarray(sg(advantages))[:, None] if jnp.ndim(advantages) == 1 else sg(advantages), m.shape)
    lp = sg(logp)
    cov = (a - masked_mean(a, m)) * (lp - masked_mean(lp, m))
    return jnp.where(m > 0, cov, 0.0)


def _budget(mask, ratio):
    """``max(1, ⌊ratio · N⌋)`` with ``N`` the valid tokens (as the papers' code counts)."""
    return jnp.maximum(1, jnp.floor(ratio * jnp.sum(mask > 0)).astype(jnp.int32))


def _lowest(key, chosen, k):
    """0/1 ``[B, T]``: the ``k`` entries of smallest ``key`` among ``chosen`` (flat order breaks ties)."""
    flat = jnp.where(chosen, key, jnp.inf).reshape(-1)
    order = jnp.argsort(flat, stable=True)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
    return ((rank < k) & chosen.reshape(-1)).reshape(chosen.shape).astype(jnp.float32)


def clip_cov_selection(
    cov: jax.Array,
    mask: jax.Array,
    uniforms: jax.Array,
    ratio: float = 2e-4,
    cov_low: float = 1.0,
    cov_high: float = 5.0,
    budget_mask: jax.Array | None = None,
) -> jax.Array:
    """Clip-Cov: ``min(⌊r·N⌋ ∨ 1, |C|)`` tokens drawn uniformly from ``C = {t : ω_low < Cov_t < ω_high}``.

    Drawing without replacement is taking the candidates with the smallest of i.i.d. uniforms
    (ties by the lower row-major index).

    Args:
      cov: ``[B, T]`` (`token_covariance`).
      mask: ``[B, T]`` tokens that may be candidates.
      uniforms: ``[B, T]`` i.i.d. uniforms in ``[0, 1)``: the draw.
      ratio: ``r`` (paper: 2e-4).
      cov_low, cov_high: ``ω_low``, ``ω_high`` (paper: 1 and 5).
      budget_mask: ``[B, T]`` the ``N`` tokens of ``r·N`` (default ``mask``).

    Returns:
      ``[B, T]`` 0/1, the tokens whose gradient is removed.
    """
    candidates = (jnp.asarray(mask) > 0) & (cov > cov_low) & (cov < cov_high)
    n = _budget(mask if budget_mask is None else budget_mask, ratio)
    return _lowest(jnp.asarray(uniforms, jnp.float32), candidates, n)


def kl_cov_selection(cov: jax.Array, mask: jax.Array, ratio: float = 2e-4) -> jax.Array:
    """KL-Cov: the ``⌊r·N⌋ ∨ 1`` valid tokens of largest covariance: ``[B, T]`` 0/1.

    Args:
      cov: ``[B, T]`` (`token_covariance`).
      mask: ``[B, T]``.
      ratio: ``r`` (paper: 2e-3 for Qwen2.5-7B, 2e-4 for 32B; verl's default 2e-4).
    """
    valid = jnp.asarray(mask) > 0
    return _lowest(-cov, valid, _budget(mask, ratio))


def selection_uniforms(old_logp: jax.Array, mask: jax.Array, seed: int = 0) -> jax.Array:
    """Clip-Cov's draw when the batch brings none: uniforms from ``key(seed)`` folded with a hash of
    the batch's behaviour log-probs (a new draw for every batch, the same for the same batch).

    Args:
      old_logp, mask: ``[B, T]``.
      seed: the draw's seed.

    Returns:
      ``[B, T]`` uniforms in ``[0, 1)``.
    """
    bits = jax.lax.bitcast_convert_type(jnp.where(mask > 0, sg(old_logp), 0.0).astype(jnp.float32), jnp.uint32)
    key = jax.random.fold_in(jax.random.key(seed), jnp.sum(bits * jnp.uint32(2654435761)))
    return jax.random.uniform(key, jnp.shape(mask))
