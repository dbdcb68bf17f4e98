"""KTO (Ethayarajh et al. 2024): prospect-theoretic loss on unpaired, labelled completions.

Each row is one ``(prompt, completion)`` with a label: desirable (1) or undesirable (0). With
the implicit reward ``r_θ = Σ_t (log π_θ − log π_ref)`` (sequence sums) and the reference point
``z₀`` (a batch-level KL estimate, stop-gradient):

    desirable:    ℓ = λ_D (1 − σ(β (r_θ − z₀)))
    undesirable:  ℓ = λ_U (1 − σ(β (z₀ − r_θ)))

the loss is the mean of ``ℓ`` over rows. In UPGE terms: reference = current policy
(``∇log π``), aggregation seq-mean-token-sum, and the implicit advantage on every token of
the row is ``Â = −∂ℓ/∂r_θ``: ``λ_D β σ(h)σ(−h)`` with ``h = β(r_θ − z₀)`` for desirable rows,
``−λ_U β σ(h)σ(−h)`` with ``h = β(z₀ − r_θ)`` for undesirable ones.

``z₀ = max(0, mean_j Σ_t (log π_θ − log π_ref)(y'_j | x_j))`` over mismatched pairs (prompt
``j`` with another row's completion ``y'_j``), as the paper and TRL estimate it; it is a batch
input (``kto_z0 [B]``, the same value on every row), computed by `kto_reference_point`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from upt_jax.upge._common import masked_sum, sg


def kto_reference_point(kl_logp: jax.Array, kl_ref_logp: jax.Array, kl_mask: jax.Array) -> jax.Array:
    """``z₀ = max(0, mean_j Σ_t m (log π_θ − log π_ref))`` over mismatched pairs: ``[]``, no gradient.

    Args:
      kl_logp: ``[B, T]`` policy log-probs of the mismatched completions.
      kl_ref_logp: ``[B, T]`` reference log-probs of the same tokens.
      kl_mask: ``[B, T]`` their tokens.
    """
    per_row = masked_sum(sg(kl_logp) - sg(kl_ref_logp), kl_mask, axis=-1)
    return jnp.maximum(jnp.mean(per_row), 0.0)


def kto_advantages(
    logp: jax.Array,
    ref_logp: jax.Array,
    mask: jax.Array,
    labels: jax.Array,
    z0: jax.Array,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
):
    """KTO's implicit advantage per row, no gradient.

    Math: ``r = Σ_t m (log π_θ − log π_ref)``; desirable rows ``h = β(r − z₀)``,
    ``Â = λ_D β σ(h)σ(−h)``; undesirable rows ``h = β(z₀ − r)``, ``Â = −λ_U β σ(h)σ(−h)``;
    ``ℓ = λ (1 − σ(h))``.

    Args:
      logp, ref_logp: ``[B, T]`` policy and reference log-probs.
      mask: ``[B, T]`` completion tokens.
      labels: ``[B]`` 1 for desirable, 0 for undesirable completions.
      z0: ``[B]`` (or ``[]``) reference point ``z₀``.
      beta: ``β`` (TRL: 0.1).
      desirable_weight, undesirable_weight: ``λ_D``, ``λ_U`` (TRL: 1.0).

    Returns:
      ``(adv [B], reward [B], loss [B])``: advantages, ``r_θ`` and each row's ``ℓ``.
    """
    r = masked_sum(sg(logp) - sg(ref_logp), mask, axis=-1)
    good = jnp.asarray(labels) > 0.5
    h = beta * jnp.where(good, r - z0, z0 - r)
    slope = beta * jax.nn.sigmoid(h) * jax.nn.sigmoid(-h)
    adv = jnp.where(good, desirable_weight * slope, -undesirable_weight * slope)
    loss = jnp.where(good, desirable_weight, undesirable_weight) * (1.0 - jax.nn.sigmoid(h))
    return adv, r, loss
