"""Soft and divergence trust regions of the 2025–26 losses: SAPO, GMPO, DPPO.

Each is a stabiliser weight ``1_stable`` (or, for GMPO, a reference ``π_ref``) of the UPGE
surrogate ``− w · sg(1_stable · Â) · exp(log π_θ − sg(log π_ref))``; everything returned is
stop-gradient. ``log_ratio = log π_θ − log π_old`` ``[B, T]``, ``r = exp(log_ratio)``,
advantages ``[B]`` or ``[B, T]`` (only their sign is used, except in the values).

| method | objective per token | UPGE |
|---|---|---|
| SAPO (Gao et al. 2025) | ``f(r) Â``, ``f(r) = (4/τ) σ(τ(r − 1))`` | reference ``behaviour``, weight ``f'(r) = 4 σ(1 − σ)`` |
| GMPO (Zhao et al. 2025) | ``Â · exp(mean_t clip_±(log r_t))`` per sequence | reference ``gmpo`` (value ``s̃_i``), mask ``gmpo_clip`` |
| DPPO (Qi et al. 2026) | ``M_t · sg(min(r, C)) · Â · log π_θ`` | reference ``current``, mask ``dppo`` × weight ``min(r, C)`` |
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from upt_jax.upge._common import masked_mean, sg


def _like(advantages, x):
    a = jnp.asarray(sg(advantages))
    return a[:, None] if a.ndim == 1 and x.ndim == 2 else a


def _sapo_tau(advantages, like, tau_pos, tau_neg):
    return jnp.where(_like(advantages, like) > 0, tau_pos, tau_neg)


def sapo_gate_value(ratio: jax.Array, advantages: jax.Array, tau_pos: float = 1.0, tau_neg: float = 1.05) -> jax.Array:
    """SAPO's soft gate ``f(r) = (4/τ) σ(τ (r − 1))``, ``τ = τ_pos`` if ``Â > 0`` else ``τ_neg``.

    Args:
      ratio: ``[B, T]`` importance ratios ``r``.
      advantages: ``[B]`` or ``[B, T]``.
      tau_pos, tau_neg: gate temperatures (paper: 1.0 and 1.05).

    Returns:
      ``[B, T]`` gate values (``2/τ`` at ``r = 1``).
    """
    tau = _sapo_tau(advantages, ratio, tau_pos, tau_neg)
    return 4.0 / tau * jax.nn.sigmoid(tau * (ratio - 1.0))


def sapo_weight(log_ratio: jax.Array, advantages: jax.Array, tau_pos: float = 1.0, tau_neg: float = 1.05) -> jax.Array:
    """SAPO's stabiliser: the gate's slope ``f'(r) = 4 σ(τ(r − 1)) σ(−τ(r − 1))``.

    Math: ``∇(f(r) Â) = f'(r) Â r ∇log π_θ``; with `behaviour_reference` (factor ``r``) the
    stabiliser is ``f'(r)``: 1 on-policy, decaying smoothly as ``r`` leaves 1 (faster for
    ``Â ≤ 0`` when ``τ_neg > τ_pos``).

    Args:
      log_ratio: ``[B, T]`` ``log π_θ − log π_old``.
      advantages: ``[B]`` or ``[B, T]``.
      tau_pos, tau_neg: gate temperatures.

    Returns:
      ``[B, T]`` weights in ``(0, 1]``.
    """
    lr = sg(log_ratio)
    tau = _sapo_tau(advantages, lr, tau_pos, tau_neg)
    x = tau * (jnp.exp(lr) - 1.0)
    return 4.0 * jax.nn.sigmoid(x) * jax.nn.sigmoid(-x)


def _gmpo_clipped(log_ratio, advantages, eps_low, eps_high):
    """Per token ``sgn(Â) · min(sgn(Â) ℓ, sgn(Â) clip(ℓ, −ε_low, ε_high))`` (GMPO's token clip in log space)."""
    s = jnp.sign(_like(advantages, log_ratio))
    return s * jnp.minimum(s * log_ratio, s * jnp.clip(log_ratio, -eps_low, eps_high))


def gmpo_clip(log_ratio: jax.Array, advantages: jax.Array, eps_low: float = 0.4, eps_high: float = 0.4) -> jax.Array:
    """GMPO's token mask: 0 where the clip in log space holds the token's log-ratio constant.

    Math: ``1_stable = 0`` iff (``Â > 0`` and ``ℓ > ε_high``) or (``Â < 0`` and ``ℓ < −ε_low``),
    ``ℓ = log π_θ − log π_old`` (the clip range ``(e^{−ε_low}, e^{ε_high})`` of the ratio).

    Args:
      log_ratio: ``[B, T]``.
      advantages: ``[B]`` or ``[B, T]``.
      eps_low, eps_high: clip in log space (paper: 0.4).

    Returns:
      ``[B, T]`` 0/1 mask.
    """
    lr = sg(log_ratio)
    a = _like(advantages, lr)
    clipped = ((a > 0) & (lr > eps_high)) | ((a < 0) & (lr < -eps_low))
    return jnp.where(clipped, 0.0, 1.0)


def gmpo_sequence_log_ratio(
    logp: jax.Array,
    old_logp: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    eps_low: float = 0.4,
    eps_high: float = 0.4,
) -> jax.Array:
    """``log s̃_i``: the mean over the sequence of GMPO's clipped token log-ratios (no gradient).

    Math: ``s̃_i = (Π_t ρ̃_{i,t})^{1/|o_i|}``, the geometric mean of the clipped ratios.

    Args:
      logp, old_logp: ``[B, T]``.
      advantages: ``[B]`` or ``[B, T]``.
      mask: ``[B, T]``.
      eps_low, eps_high: clip in log space.

    Returns:
      ``[B]``.
    """
    lr = sg(logp) - sg(old_logp)
    return masked_mean(_gmpo_clipped(lr, advantages, eps_low, eps_high), mask, axis=-1)


def gmpo_reference(
    logp: jax.Array,
    old_logp: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    eps_low: float = 0.4,
    eps_high: float = 0.4,
) -> jax.Array:
    """GMPO's reference ``log π_ref,t = sg(log π_θ,t − log s̃_i)``.

    Math: the surrogate factor has value ``s̃_i`` and gradient ``s̃_i ∇log π_θ,t``; with the
    ``gmpo_clip`` mask and seq-mean-token-mean aggregation this is the gradient of GMPO's
    ``Â_i s̃_i = Â_i exp((1/|o_i|) Σ_t ℓ̃_t)``, whose clipped tokens carry no gradient.
    Arguments as `gmpo_sequence_log_ratio`; returns ``[B, T]`` stop-gradient reference log-probs.
    """
    log_s = gmpo_sequence_log_ratio(logp, old_logp, advantages, mask, eps_low, eps_high)
    return sg(logp - log_s[:, None])


def binary_tv(logp: jax.Array, old_logp: jax.Array) -> jax.Array:
    """Signed binary total variation ``π_θ(o_t) − π_old(o_t)`` of the sampled token: ``[B, T]``."""
    return jnp.exp(sg(logp)) - jnp.exp(sg(old_logp))


def binary_kl(logp: jax.Array, old_logp: jax.Array) -> jax.Array:
    """``KL(Bern(μ) ‖ Bern(π))`` with ``μ = π_old(o_t)``, ``π = π_θ(o_t)``: ``[B, T]``, no gradient.

    Math: ``μ log(μ/π) + (1 − μ) log((1 − μ + 10⁻⁸)/(1 − π + 10⁻⁸))`` (the sampled token against
    the rest; the 10⁻⁸ as the authors' code, finite when a probability is 1).
    """
    lp, lo = sg(logp), sg(old_logp)
    mu, p = jnp.exp(lo), jnp.exp(lp)
    return mu * (lo - lp) + (1.0 - mu) * jnp.log((1.0 - mu + 1e-8) / (1.0 - p + 1e-8))


def dppo_mask(
    logp: jax.Array,
    old_logp: jax.Array,
    advantages: jax.Array,
    divergence: str = "tv",
    delta_low: float = 0.15,
    delta_high: float = 0.15,
) -> jax.Array:
    """DPPO's trust-region mask on a divergence of the sampled token's binary distribution.

    Math: a token keeps its gradient unless the update would push the divergence from the
    behaviour policy past ``δ``:

    * ``'tv'``: ``Â > 0``: ``π − μ ≤ δ_high``; ``Â ≤ 0``: ``π − μ ≥ −δ_low``;
    * ``'kl'``: ``Â > 0``: ``D ≤ δ_high`` or ``π ≤ μ``; ``Â ≤ 0``: ``D ≤ δ_low`` or ``π ≥ μ``,
      ``D = KL(Bern(μ) ‖ Bern(π))``.

    Args:
      logp, old_logp: ``[B, T]`` ``log π_θ`` and ``log μ``.
      advantages: ``[B]`` or ``[B, T]``.
      divergence: ``'tv'`` (paper: δ = 0.15) or ``'kl'`` (paper: δ = 0.05).
      delta_low, delta_high: thresholds for negative and positive advantages.

    Returns:
      ``[B, T]`` 0/1 mask.
    """
    a = _like(advantages, logp)
    if divergence == "tv":
        d = binary_tv(logp, old_logp)
        keep = jnp.where(a > 0, d <= delta_high, d >= -delta_low)
    elif divergence == "kl":
        kl = binary_kl(logp, old_logp)
        up = sg(logp) > sg(old_logp)
        down = sg(logp) < sg(old_logp)
        keep = jnp.where(a > 0, (kl <= delta_high) | ~up, (kl <= delta_low) | ~down)
    else:
        raise ValueError(f"DPPO divergence={divergence!r}: 'tv' or 'kl'")
    return keep.astype(jnp.float32)
