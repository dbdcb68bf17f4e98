"""The one surrogate whose gradient is the Unified Policy Gradient Estimator.

    L = − Σ_{i,t} w_{i,t} · sg(1_stable(i,t) · Â_{i,t}) · exp(log π_θ(o_t) − sg(log π_ref(o_t)))

Its gradient is ``− Σ w · 1_stable · Â · ∇π_θ / π_ref`` for any choice of the
four parts (stabiliser, reference, advantage, aggregation). Its **value** is not
the objective of the named method (e.g. it is ``−Σ w Â`` for SFT); log the
objective from the metrics instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from upt_jax.upge import _aggregation
from upt_jax.upge._common import masked_mean, safe_div, sg


def _expand_to(x, ndim):
    x = jnp.asarray(x)
    while x.ndim < ndim:
        x = x[..., None]
    return x


def upge_token_terms(
    logp: jax.Array,
    ref_logp: jax.Array,
    advantages: jax.Array,
    stable: jax.Array | None = None,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Per-token surrogate terms ``ℓ_t = − sg(1_stable · Â_t) · exp(log π_θ − sg(log π_ref))``.

    ``logp`` may carry trailing axes (e.g. a vocabulary axis ``[B, T, V]`` for
    distillation, where each vocabulary entry is a "token" with its own
    advantage); they are summed so the result is always ``[B, T]``.

    Gradient: ``∇ℓ_t = − 1_stable Â_t (π_θ/π_ref) ∇log π_θ``. Only ``logp`` carries
    gradient; ``ref_logp``, ``advantages`` and ``stable`` are stop-gradient.
    Positions with ``mask == 0`` contribute exactly 0 (their exponent is not
    evaluated, so padded garbage cannot overflow).

    Args:
      logp: ``[B, T]`` (or ``[B, T, ...]``) current-policy log-probs.
      ref_logp: log π_ref, broadcastable to ``logp``.
      advantages: ``[B]``, ``[B, T]`` or ``[B, T, ...]`` advantages ``Â``.
      stable: stabiliser weights broadcastable to ``logp``; ``None`` means 1.
      mask: ``[B, T]`` 0/1 mask; ``None`` means all valid.

    Returns:
      ``[B, T]`` token terms (0 on padding).
    """
    logp = jnp.asarray(logp)
    nd = logp.ndim
    adv = jnp.asarray(advantages)
    if adv.ndim == 1:
        adv = adv[:, None]
    coef = _expand_to(adv, nd)
    if stable is not None:
        st = jnp.asarray(stable)
        if st.ndim == 1:
            st = st[:, None]
        coef = coef * _expand_to(st, nd)
    coef = sg(coef)
    valid = jnp.ones(logp.shape[:2], bool) if mask is None else (jnp.asarray(mask) > 0)
    valid_full = jnp.broadcast_to(_expand_to(valid, nd), logp.shape)
    expo = jnp.where(valid_full, logp - sg(jnp.broadcast_to(ref_logp, logp.shape)), 0.0)
    terms = jnp.where(valid_full, -coef * jnp.exp(expo), 0.0)
    return jnp.sum(terms, axis=tuple(range(2, nd))) if nd > 2 else terms


def policy_gradient_loss(
    logp: jax.Array,
    mask: jax.Array,
    *,
    advantages: jax.Array,
    ref_logp: jax.Array | None = None,
    stable: jax.Array | None = None,
    aggregation: str = "token-mean",
    max_len: float | None = None,
    row_weights: jax.Array | None = None,
    old_logp: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, dict]:
    """UPGE loss from explicit parts: returns ``(loss_sum, denominator, metrics)``.

    Math:

        loss_sum    = − Σ_{i,t} w_{i,t} g_i sg(1_stable Â_{i,t}) exp(log π_θ − sg(log π_ref))
        denominator = Σ_i d_i 1[g_i > 0]

    with ``(w, d)`` from the aggregation mode and ``g_i`` the row weights (gates).
    The loss is ``loss_sum / denominator`` (see `normalise`); it is never
    pre-divided, so micro-batches and shards can be combined exactly.

    Example (GRPO)::

      adv = grpo_advantages(rewards, group_size=8)                # [B]
      lr = logp - old_logp
      s, d, m = policy_gradient_loss(
          logp, mask, advantages=adv, ref_logp=old_logp,
          stable=ppo_clip(lr, adv, 0.2), aggregation='seq-mean-token-mean')
      loss = normalise(s, d)

    Args:
      logp: ``[B, T]`` current-policy log-probs (differentiated).
      mask: ``[B, T]`` 0/1 response mask.
      advantages: ``[B]`` or ``[B, T]`` advantages ``Â`` (no gradient).
      ref_logp: ``[B, T]`` log π_ref; ``None`` means the current policy (∇log π).
      stable: ``[B, T]`` stabiliser weights; ``None`` means 1.
      aggregation: aggregation mode (see `aggregation_weights`).
      max_len: ``L`` for ``seq-mean-token-sum-norm``.
      row_weights: ``[B]`` non-negative row weights (gates); rows with weight 0
        are dropped from the denominator too.
      old_logp: ``[B, T]`` behaviour log-probs, only for the ratio metrics.

    Returns:
      ``(loss_sum [], denominator [], metrics)``; metrics hold ``clip_frac``
      (fraction of valid tokens whose stabiliser is not 1), ``adv_mean``,
      ``adv_std``, and ``ratio_mean/min/max`` when ``old_logp`` is given.
    """
    mask = jnp.asarray(mask, jnp.float32)
    ref = sg(logp) if ref_logp is None else ref_logp
    w, d = _aggregation.aggregation_weights(mask, aggregation, max_len=max_len)
    if row_weights is not None:
        g = sg(jnp.asarray(row_weights, jnp.float32))
        w = w * g[:, None]
        d = d * (g > 0)
    terms = upge_token_terms(logp, ref, advantages, stable, mask)
    loss_sum = jnp.sum(jnp.where(w > 0, w * terms, 0.0))
    valid = mask * (w > 0)
    metrics = token_metrics(valid, advantages=advantages, stable=stable, logp=logp, old_logp=old_logp)
    return loss_sum, jnp.sum(d), metrics


def token_metrics(valid, *, advantages=None, stable=None, logp=None, old_logp=None) -> dict:
    """Diagnostics over the valid tokens of a loss term (no gradient).

    Math: ``clip_frac = mean_valid 1[1_stable ≠ 1]``; ``adv_mean/std`` over valid
    tokens; ``ratio = exp(log π_θ − log π_old)`` with its mean/min/max and
    ``approx_kl_old = mean_valid(log π_old − log π_θ)``.

    Args:
      valid: ``[B, T]`` 0/1 mask of the tokens the term uses.
      advantages: ``[B]`` or ``[B, T]`` advantages.
      stable: ``[B, T]`` stabiliser weights.
      logp: ``[B, T]`` current log-probs.
      old_logp: ``[B, T]`` behaviour log-probs.

    Returns:
      dict of scalars ``[]``.
    """
    valid = sg(jnp.asarray(valid, jnp.float32))
    out = {}
    if advantages is not None:
        a = jnp.asarray(sg(advantages))
        a = jnp.broadcast_to(a[:, None] if a.ndim == 1 else a, valid.shape) if a.ndim <= 2 else None
        if a is not None:
            mu = masked_mean(a, valid)
            out["adv_mean"] = mu
            out["adv_std"] = jnp.sqrt(masked_mean(jnp.square(a - mu), valid))
    if stable is not None:
        st = jnp.asarray(sg(stable))
        st = st[:, None] if st.ndim == 1 else st
        st = jnp.broadcast_to(st, valid.shape)
        out["clip_frac"] = masked_mean((st != 1.0).astype(jnp.float32), valid)
    if logp is not None and old_logp is not None and jnp.ndim(logp) == 2:
        lr = sg(logp - old_logp)
        r = jnp.exp(jnp.where(valid > 0, lr, 0.0))
        out["ratio_mean"] = masked_mean(r, valid)
        big = jnp.finfo(jnp.float32).max
        has = jnp.sum(valid) > 0
        out["ratio_max"] = jnp.where(has, jnp.max(jnp.where(valid > 0, r, -big)), 1.0)
        out["ratio_min"] = jnp.where(has, jnp.min(jnp.where(valid > 0, r, big)), 1.0)
        out["approx_kl_old"] = masked_mean(-lr, valid)
    return out


__all__ = ["upge_token_terms", "policy_gradient_loss", "token_metrics", "safe_div"]
