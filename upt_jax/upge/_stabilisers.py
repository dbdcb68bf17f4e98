"""Stabilisation masks ``1_stable``: per-token weights in ``[0, ∞)`` with no gradient.

In the surrogate ``− w_t · sg(1_stable(t) · Â_t) · exp(log π_θ − sg(log π_ref))``
the stabiliser decides how much of each token's likelihood gradient is kept.
Each function returns ``[B, T]`` (or ``[B]`` for sequence-level rules), already
stop-gradient; several stabilisers compose by multiplication.

``log_ratio = log π_θ − log π_old`` and ``r = exp(log_ratio)`` throughout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from upt_jax.upge._common import sg


def _adv_like(advantages, like):
    a = jnp.asarray(advantages)
    while a.ndim < like.ndim:
        a = a[..., None]
    return a


def no_stabiliser(logp: jax.Array) -> jax.Array:
    """``1_stable ≡ 1``: keep every token's gradient.

    Args:
      logp: ``[B, T]`` log-probs (only the shape is used).

    Returns:
      ``[B, T]`` ones.
    """
    return jnp.ones_like(sg(logp))


def ppo_clip(
    log_ratio: jax.Array, advantages: jax.Array, eps_low: float = 0.2, eps_high: float | None = None
) -> jax.Array:
    """PPO clip (DAPO's clip-higher when ``eps_high > eps_low``) as a mask.

    The PPO term ``min(r Â, clip(r, 1−ε_low, 1+ε_high) Â)`` has gradient
    ``1_stable · Â · r ∇log π_θ`` with

        1_stable = 0  if (Â > 0 and r > 1+ε_high) or (Â < 0 and r < 1−ε_low),
                   1  otherwise.

    Combine with `behaviour_reference` (the ``r ∇log π`` factor).

    Args:
      log_ratio: ``[B, T]`` ``log π_θ − log π_old``.
      advantages: ``[B, T]`` or ``[B]`` advantages (only the sign is used).
      eps_low: lower clip ``ε_low``.
      eps_high: upper clip ``ε_high``; defaults to ``eps_low``.

    Returns:
      ``[B, T]`` 0/1 mask.
    """
    eps_high = eps_low if eps_high is None else eps_high
    r = jnp.exp(sg(log_ratio))
    a = _adv_like(sg(advantages), r)
    clipped = ((a > 0) & (r > 1.0 + eps_high)) | ((a < 0) & (r < 1.0 - eps_low))
    return jnp.where(clipped, 0.0, 1.0)


def dual_clip(
    log_ratio: jax.Array, advantages: jax.Array, eps_low: float = 0.2, eps_high: float | None = None, c: float = 3.0
) -> jax.Array:
    """Dual-clip PPO (Ye et al. 2020) as a mask.

    For ``Â < 0`` the term is ``max(min(r Â, clip(r) Â), c Â)``, which is flat once
    ``r > c``; so ``1_stable = ppo_clip · (1 − 1[Â < 0 and r > c])``.

    Args:
      log_ratio: ``[B, T]`` ``log π_θ − log π_old``.
      advantages: ``[B, T]`` or ``[B]``.
      eps_low: PPO ``ε_low``.
      eps_high: PPO ``ε_high`` (defaults to ``eps_low``).
      c: the dual-clip constant ``c > 1``.

    Returns:
      ``[B, T]`` 0/1 mask.
    """
    base = ppo_clip(log_ratio, advantages, eps_low, eps_high)
    r = jnp.exp(sg(log_ratio))
    a = _adv_like(sg(advantages), r)
    return jnp.where((a < 0) & (r > c), 0.0, base)


def cispo_weight(log_ratio: jax.Array, eps_low: float = 1e9, eps_high: float = 0.28) -> jax.Array:
    """CISPO's clipped importance weight (MiniMax-M1): ``sg(clip(r, 1−ε_low, 1+ε_high))``.

    CISPO's loss ``− sg(clip(r)) Â log π_θ`` keeps every token's gradient and
    clips only the weight; combine with `current_policy_reference` (``∇log π``).
    With the default ``ε_low = 1e9`` there is no lower clip.

    Args:
      log_ratio: ``[B, T]`` ``log π_θ − log π_old``.
      eps_low: lower clip of the weight.
      eps_high: upper clip of the weight.

    Returns:
      ``[B, T]`` weights in ``[max(0, 1−ε_low), 1+ε_high]``.
    """
    r = jnp.exp(sg(log_ratio))
    return jnp.clip(r, 1.0 - eps_low, 1.0 + eps_high)


def gspo_clip(
    seq_log_ratio: jax.Array, advantages: jax.Array, eps_low: float = 3e-4, eps_high: float = 4e-4
) -> jax.Array:
    """GSPO's sequence-level clip as a mask (also GSPO-token's).

    GSPO clips the sequence ratio ``s_i = exp(log s_i)``: the term
    ``min(s_i Â, clip(s_i, 1−ε_low, 1+ε_high) Â)`` is flat when
    ``(Â > 0 and s_i > 1+ε_high)`` or ``(Â < 0 and s_i < 1−ε_low)``. For GSPO-token
    pass per-token advantages ``[B, T]``: the rule uses ``s_i`` with the sign of
    each ``Â_{i,t}``. Combine with `gspo_reference`.

    Args:
      seq_log_ratio: ``[B]`` ``log s_i`` (see `sequence_log_ratio`).
      advantages: ``[B]`` (GSPO) or ``[B, T]`` (GSPO-token).
      eps_low: ``ε_low`` (paper: 3e-4).
      eps_high: ``ε_high`` (paper: 4e-4).

    Returns:
      ``[B, 1]`` mask for ``[B]`` advantages (broadcasts over ``T``) or ``[B, T]``.
    """
    s = jnp.exp(sg(seq_log_ratio))[:, None]
    a = jnp.asarray(sg(advantages))
    a = a[:, None] if a.ndim == 1 else a
    clipped = ((a > 0) & (s > 1.0 + eps_high)) | ((a < 0) & (s < 1.0 - eps_low))
    return jnp.where(clipped, 0.0, 1.0)


def truncated_is(trainer_logp: jax.Array, rollout_logp: jax.Array, cap: float = 2.0) -> jax.Array:
    """Truncated importance sampling for rollout–trainer mismatch (TIS).

    The rollout engine's log-probs differ from the trainer's recomputation of the
    same (old) policy; TIS reweights each token by
    ``min(π_trainer_old / π_rollout, C)``, stop-gradient.

    Args:
      trainer_logp: ``[B, T]`` old-policy log-probs recomputed by the trainer.
      rollout_logp: ``[B, T]`` log-probs reported by the sampler.
      cap: truncation ``C``.

    Returns:
      ``[B, T]`` weights in ``[0, C]``.
    """
    return jnp.minimum(jnp.exp(sg(trainer_logp - rollout_logp)), cap)


def icepop(trainer_logp: jax.Array, rollout_logp: jax.Array, low: float = 0.5, high: float = 5.0) -> jax.Array:
    """IcePop: drop tokens whose trainer/sampler probability ratio is out of band.

    Math: ``1_stable = 1[low ≤ π_trainer / π_rollout ≤ high]``.

    Args:
      trainer_logp: ``[B, T]`` trainer log-probs.
      rollout_logp: ``[B, T]`` sampler log-probs.
      low: lower bound ``α``.
      high: upper bound ``β``.

    Returns:
      ``[B, T]`` 0/1 mask.
    """
    k = jnp.exp(sg(trainer_logp - rollout_logp))
    return jnp.where((k >= low) & (k <= high), 1.0, 0.0)


def policy_shaping(logp: jax.Array, gamma: float = 0.1) -> jax.Array:
    """LUFFY's policy shaping ``f(π) = π / (π + γ)`` as a weight.

    The shaped off-policy term ``f(π_θ) Â`` has gradient
    ``f'(π_θ) Â ∇π_θ = γ/(π_θ+γ)² · Â ∇π_θ``; with `unit_reference` (factor
    ``π_θ``, gradient ``∇π_θ``) the stabiliser is therefore ``sg(γ / (π_θ + γ)²)``.
    It amplifies low-probability tokens (weight up to ``1/γ``).

    Args:
      logp: ``[B, T]`` current log-probs.
      gamma: shaping constant ``γ``.

    Returns:
      ``[B, T]`` weights in ``(0, 1/γ]``.
    """
    p = jnp.exp(sg(logp))
    return gamma / jnp.square(p + gamma)
