"""Distillation terms in the UPGE vocabulary.

Logit-level distillation differentiates the student's log-probabilities of
*every* vocabulary entry ``v``: each entry is a "token" with its own implicit
advantage and reference ``π_ref = π_θ`` (``∇log q_v``). For a loss ``F(q)`` of the
student distribution ``q``, ``∇F = Σ_v (∂F/∂q_v) q_v ∇log q_v``, so
``Â_v = −q_v ∂F/∂q_v`` (stop-gradient):

| term | ``Â_v`` |
|---|---|
| forward KL ``KL(p‖q)`` | ``p_v`` |
| reverse KL ``KL(q‖p)`` | ``−q_v (log q_v − log p_v)`` |
| generalised JSD_β | ``−(1−β) q_v log(q_v / m_v)``, ``m = βp + (1−β)q`` |

On-policy (sampled-token) reverse KL is `teacher_log_ratio_advantages` with the
ordinary surrogate. All losses here use token-mean aggregation over ``[B, T]``
and return ``(loss_sum, denominator, metrics)`` with ``metrics['kl']`` (or
``metrics['jsd']``) the divergence's mean value. Logits are divided by
``temperature`` before the softmax (no ``τ²`` factor).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from upt_jax.upge._common import masked_mean, sg
from upt_jax.upge._surrogate import upge_token_terms


def _token_mean(terms, mask):
    m = jnp.asarray(mask, jnp.float32)
    return jnp.sum(jnp.where(m > 0, m * terms, 0.0)), jnp.sum(m)


def forward_kl_advantages(teacher_logits: jax.Array, *, temperature: float = 1.0, top_k: int | None = None):
    """Implicit advantages of forward KL: the teacher's probabilities.

    Math: ``Â_v = p_T(v)``; with ``top_k``, ``p_T`` is restricted to the teacher's
    ``k`` most likely entries and renormalised over them.

    Args:
      teacher_logits: ``[B, T, V]`` teacher logits.
      temperature: softmax temperature ``τ``.
      top_k: keep the teacher's top-``k`` entries (``None``: full vocabulary).

    Returns:
      ``(advantages, indices)``: ``advantages`` ``[B, T, V]`` and ``indices=None``
      for the full vocabulary, or ``[B, T, k]`` and the ``[B, T, k]`` entry ids.
    """
    t = sg(teacher_logits) / temperature
    if top_k is None:
        return jax.nn.softmax(t, axis=-1), None
    vals, idx = jax.lax.top_k(t, top_k)
    return jax.nn.softmax(vals, axis=-1), idx


def forward_kl_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    mask: jax.Array,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
):
    """Forward KL ``KL(p_T ‖ q_θ)`` per token, token-mean: ``(loss_sum, denominator, metrics)``.

    Math: ``ℓ_t = Σ_v p_T(v) (log p_T(v) − log q_θ(v))`` with gradient
    ``−Σ_v p_T(v) ∇log q_θ(v)``, which is the UPGE surrogate with ``Â_v = p_T(v)``
    and ``π_ref = q_θ``. Top-``k``: ``p_T`` renormalised over the teacher's top-``k``
    entries; the student keeps its full-vocabulary log-probs.

    Args:
      student_logits: ``[B, T, V]`` student logits (differentiated).
      teacher_logits: ``[B, T, V]`` teacher logits.
      mask: ``[B, T]`` mask.
      temperature: ``τ`` for both softmaxes.
      top_k: teacher top-``k`` (``None``: full vocabulary).

    Returns:
      ``(loss_sum [], denominator [], metrics)``.
    """
    logq = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    p, idx = forward_kl_advantages(teacher_logits, temperature=temperature, top_k=top_k)
    if idx is not None:
        logq = jnp.take_along_axis(logq, idx, axis=-1)
    terms = upge_token_terms(logq, sg(logq), p, None, mask)
    s, d = _token_mean(terms, mask)
    kl = jnp.sum(p * (jnp.log(jnp.maximum(p, 1e-30)) - sg(logq)), axis=-1)
    return s, d, {"kl": masked_mean(kl, mask)}


def reverse_kl_loss(student_logits: jax.Array, teacher_logits: jax.Array, mask: jax.Array, *, temperature: float = 1.0):
    """Full-vocabulary reverse KL ``KL(q_θ ‖ p_T)`` per token, token-mean.

    Math: ``ℓ_t = Σ_v q(v)(log q(v) − log p_T(v))``; since ``Σ_v q ∇log q = 0``,
    ``∇ℓ_t = Σ_v q(v)(log q(v) − log p_T(v)) ∇log q(v)``: UPGE with
    ``Â_v = −q(v)(log q(v) − log p_T(v))``.

    Args:
      student_logits: ``[B, T, V]`` (differentiated).
      teacher_logits: ``[B, T, V]``.
      mask: ``[B, T]``.
      temperature: ``τ``.

    Returns:
      ``(loss_sum [], denominator [], metrics)``.
    """
    logq = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    logp = jax.nn.log_softmax(sg(teacher_logits) / temperature, axis=-1)
    q = jnp.exp(sg(logq))
    adv = -q * (sg(logq) - logp)
    terms = upge_token_terms(logq, sg(logq), adv, None, mask)
    s, d = _token_mean(terms, mask)
    return s, d, {"kl": masked_mean(-jnp.sum(adv, -1), mask)}


def generalized_jsd_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    mask: jax.Array,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
):
    """Generalised Jensen–Shannon divergence (GKD, Agarwal et al. 2024), token-mean.

    Math: ``m = β p_T + (1−β) q``,
    ``JSD_β = β KL(p_T ‖ m) + (1−β) KL(q ‖ m)``; ``∂JSD/∂q_v = (1−β) log(q_v/m_v)``,
    so UPGE with ``Â_v = −(1−β) q_v log(q_v / m_v)``. As in TRL, ``β = 0`` is the
    forward KL ``KL(p_T‖q)`` and ``β = 1`` the reverse KL ``KL(q‖p_T)``.

    Args:
      student_logits: ``[B, T, V]`` (differentiated).
      teacher_logits: ``[B, T, V]``.
      mask: ``[B, T]``.
      beta: interpolation ``β ∈ [0, 1]``.
      temperature: ``τ``.

    Returns:
      ``(loss_sum [], denominator [], metrics)`` with ``metrics['jsd']``.
    """
    if beta == 0.0:
        return forward_kl_loss(student_logits, teacher_logits, mask, temperature=temperature)
    if beta == 1.0:
        return reverse_kl_loss(student_logits, teacher_logits, mask, temperature=temperature)
    logq = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    logp = jax.nn.log_softmax(sg(teacher_logits) / temperature, axis=-1)
    lq = sg(logq)
    logm = jnp.logaddexp(logp + jnp.log(beta), lq + jnp.log1p(-beta))
    q = jnp.exp(lq)
    adv = -(1.0 - beta) * q * (lq - logm)
    terms = upge_token_terms(logq, lq, adv, None, mask)
    s, d = _token_mean(terms, mask)
    jsd = beta * jnp.sum(jnp.exp(logp) * (logp - logm), -1) + (1.0 - beta) * jnp.sum(q * (lq - logm), -1)
    return s, d, {"jsd": masked_mean(jsd, mask)}
