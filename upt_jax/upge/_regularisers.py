"""Regularisers: KL to a reference policy (k1 / k2 / k3, in the reward or in the
loss, straight-through k3) and the entropy bonus.

Notation: samples ``x ~ π_θ`` (on-policy), ``δ = log π_θ(x) − log π_ref(x)``,
``ρ = π_ref(x)/π_θ(x) = e^{−δ}``; Schulman's estimators of ``KL(π_θ ‖ π_ref)``:

    k1 = δ                 E[k1] = KL          (unbiased value, high variance)
    k2 = δ² / 2            E[k2] ≠ KL          (biased value, low variance)
    k3 = ρ − 1 − log ρ     E[k3] = KL, k3 ≥ 0  (unbiased value, low variance)

Their **gradients** when used as a loss term on fixed samples (`kl_loss_terms`):

    ∇k1 = ∇log π_θ               E[∇k1] = 0                  biased for ∇KL(π_θ‖π_ref)
    ∇k2 = δ ∇log π_θ             E[∇k2] = ∇KL(π_θ ‖ π_ref)    UNBIASED
    ∇k3 = (1 − ρ) ∇log π_θ       E[∇k3] = ∇KL(π_ref ‖ π_θ)    biased (it is the forward KL's)
    k3_st: value k3, gradient δ ∇log π_θ                      UNBIASED (straight-through)

Used in the reward (`kl_penalised_rewards`), the penalty enters a score-function
(REINFORCE) gradient ``E[sg(k) ∇log π_θ]``: unbiased for ``∇KL`` with ``k1``
only (``E[δ ∇log π] = ∇KL`` because ``E[∇log π] = 0``); ``k2`` and ``k3`` in the
reward are biased. ``tests/upge/test_kl_estimators.py`` checks every line of
this table by Monte Carlo on a categorical policy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from upt_jax.upge._advantages import last_token_rewards
from upt_jax.upge._common import sg

KL_ESTIMATORS = ("k1", "k2", "k3", "k3_st")


def kl_estimate(logp: jax.Array, ref_logp: jax.Array, kind: str = "k3") -> jax.Array:
    """Per-token KL estimate ``k(x)`` of ``KL(π_θ ‖ π_ref)`` on samples ``x ~ π_θ``.

    Math (``δ = log π_θ − log π_ref``): ``k1 = δ``, ``k2 = δ²/2``,
    ``k3 = e^{−δ} − 1 + δ``; ``k3_st`` has the value of ``k3`` and the gradient of
    ``k2`` (``δ ∇log π_θ``, unbiased for ``∇KL(π_θ‖π_ref)``): ``k3_st = k2 + sg(k3 − k2)``.
    Differentiable in ``logp`` (``ref_logp`` is stop-gradient). See the module
    docstring for which gradients are unbiased.

    Args:
      logp: ``[B, T]`` policy log-probs of the sampled tokens.
      ref_logp: ``[B, T]`` reference-model log-probs of the same tokens.
      kind: ``'k1' | 'k2' | 'k3' | 'k3_st'``.

    Returns:
      ``[B, T]`` per-token estimates.
    """
    delta = logp - sg(ref_logp)
    k2 = 0.5 * jnp.square(delta)
    if kind == "k1":
        return delta
    if kind == "k2":
        return k2
    # exp(-δ) − 1 + δ, written with expm1 for accuracy near δ = 0.
    k3 = jnp.expm1(-delta) + delta
    if kind == "k3":
        return k3
    if kind == "k3_st":
        return k2 + sg(k3 - k2)
    raise ValueError(f"unknown KL estimator {kind!r}; expected one of {KL_ESTIMATORS}")


def kl_loss_terms(logp: jax.Array, ref_logp: jax.Array, mask: jax.Array, coef: float, kind: str = "k3") -> jax.Array:
    """KL penalty in the loss: token terms ``coef · k(x_t)`` (0 on padding).

    Aggregate them with the same weights as the policy-gradient terms (GRPO adds
    ``β k3`` inside the per-sequence token mean). Gradient:
    ``coef · ∇k`` — unbiased for ``coef · ∇KL(π_θ ‖ π_ref)`` only with ``'k2'`` or
    ``'k3_st'`` (on-policy samples).

    Args:
      logp: ``[B, T]`` policy log-probs (differentiated).
      ref_logp: ``[B, T]`` reference log-probs.
      mask: ``[B, T]`` mask.
      coef: ``β``.
      kind: estimator, see `kl_estimate`.

    Returns:
      ``[B, T]`` token terms.
    """
    valid = mask > 0
    k = kl_estimate(jnp.where(valid, logp, 0.0), jnp.where(valid, ref_logp, 0.0), kind)
    return jnp.where(valid, coef * k, 0.0)


def kl_penalised_rewards(
    rewards: jax.Array, logp: jax.Array, ref_logp: jax.Array, mask: jax.Array, coef: float, kind: str = "k1"
) -> jax.Array:
    """KL penalty in the reward: ``r_{i,t} = r_i 1[t = last] − coef · sg(k_{i,t})``.

    ``logp`` should be the sampling policy's log-probs (the old policy); the
    penalty carries no gradient and reaches the policy only through the advantage
    (score function), which is unbiased for ``∇KL`` with ``kind='k1'``.
    Sequence-level estimators use ``r̃_i = Σ_t r_{i,t}``.

    Args:
      rewards: ``[B]`` outcome rewards.
      logp: ``[B, T]`` sampling-policy log-probs.
      ref_logp: ``[B, T]`` reference log-probs.
      mask: ``[B, T]`` mask.
      coef: ``β``.
      kind: estimator, see `kl_estimate`.

    Returns:
      ``[B, T]`` per-token rewards.
    """
    valid = mask > 0
    k = sg(kl_estimate(jnp.where(valid, logp, 0.0), jnp.where(valid, ref_logp, 0.0), kind))
    return last_token_rewards(rewards, mask) - jnp.where(valid, coef * k, 0.0)


def entropy_from_logits(logits: jax.Array) -> jax.Array:
    """Token entropy ``H_t = − Σ_v p_v log p_v`` of ``softmax(logits)``: ``[B, T, V] → [B, T]``.

    Differentiable. Models compute it chunk by chunk over the vocabulary; this
    helper is for tests and small vocabularies.

    Args:
      logits: ``[B, T, V]`` logits.

    Returns:
      ``[B, T]`` entropies.
    """
    logq = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(logq) * logq, axis=-1)


def entropy_bonus_terms(entropy: jax.Array, mask: jax.Array, coef: float) -> jax.Array:
    """Entropy bonus as loss terms ``−coef · H_t`` (0 on padding): ``[B, T] → [B, T]``.

    Aggregate with the same weights as the policy-gradient terms. The gradient
    flows through ``entropy`` (which must be computed differentiably from logits).

    Args:
      entropy: ``[B, T]`` token entropies of the current policy.
      mask: ``[B, T]`` mask.
      coef: bonus coefficient.

    Returns:
      ``[B, T]`` token terms.
    """
    return jnp.where(mask > 0, -coef * entropy, 0.0)
