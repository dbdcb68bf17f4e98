"""Shared arithmetic of the textbook reference losses (``tests/upge/textbook*.py``).

Masked reductions, group statistics and the PPO clipped objective, used by every module of
textbook losses. They are plain arithmetic; each recipe function spells out its own formula.
Conventions: ``tests/upge/SPEC.md``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_sg = jax.lax.stop_gradient


def _f32(x):
    return jnp.asarray(x, dtype=jnp.float32)


def _token_mean(x, mask):
    """``sum(m * x) / sum(m)`` over ``[B, T]``; 0 if the mask is empty."""
    mask = _f32(mask)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _row_mean(x, mask):
    """Per-row ``sum_t m x / sum_t m`` of ``[B, T]`` -> ``[B]`` (0 for an empty row)."""
    mask = _f32(mask)
    return jnp.sum(x * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)


def _group_mean_std(rewards, group_size, ddof=0):
    """Per-row group mean and std of the rewards ``[B]`` -> two ``[B]`` arrays.

    ``std = sqrt(sum_g (r - mean)^2 / (G - ddof))``: ``ddof=0`` is the population std
    (the default of every recipe), ``ddof=1`` the unbiased sample std (``torch.std``, verl).
    """
    if ddof not in (0, 1):
        raise ValueError(f"std ddof must be 0 or 1, got {ddof!r}")
    if group_size - ddof < 1:
        raise ValueError(f"std with ddof={ddof} needs group_size > {ddof}, got {group_size}")
    r = _f32(rewards).reshape(-1, group_size)
    mean = jnp.mean(r, axis=1)
    std = jnp.sqrt(jnp.sum((r - mean[:, None]) ** 2, axis=1) / (group_size - ddof))
    return jnp.repeat(mean, group_size), jnp.repeat(std, group_size)


def _ppo_clip_objective(ratio, adv, eps_low, eps_high):
    """PPO clipped objective ``min(ratio * A, clip(ratio, 1-eps_low, 1+eps_high) * A)``."""
    return jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv)


def _seq_sum(logp, mask):
    """Sequence log-probability ``sum_t m logp`` of ``[B, T]`` -> ``[B]``."""
    return jnp.sum(_f32(logp) * _f32(mask), axis=-1)


def _seq_avg(logp, mask):
    """Length-averaged log-probability ``sum_t m logp / sum_t m`` -> ``[B]``."""
    mask = _f32(mask)
    return jnp.sum(_f32(logp) * mask, axis=-1) / jnp.sum(mask, axis=-1)


def _group_normalised(rewards, group_size, eps, ddof):
    """GRPO advantage ``(r_i - mean_g) / (std_g + eps)`` of ``[B]`` rewards -> ``[B]`` (constant)."""
    mean, std = _group_mean_std(_sg(rewards), group_size, ddof)
    return _sg((_f32(rewards) - mean) / (std + eps))


def _masked_rank(score, eligible):
    """Rank ``[B, T]`` of each eligible token when eligible tokens are sorted by ``score``
    ascending, ties broken by the lower row-major index; ineligible tokens rank after all."""
    flat = jnp.where(eligible, score, jnp.inf).reshape(-1)
    order = jnp.argsort(flat, stable=True)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
    return rank.reshape(score.shape)
