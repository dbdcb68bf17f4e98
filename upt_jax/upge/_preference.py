"""Preference terms (DPO, IPO, SimPO, ORPO) in the UPGE vocabulary.

A pairwise loss ``ℓ(h)`` of a margin ``h`` built from the chosen and rejected
sequence log-likelihoods has gradient ``ℓ'(h) ∇h``; ``∇h`` is a signed sum of
``∇log π_θ`` over the tokens of the two responses. So each of these losses is
the UPGE surrogate with

* reference: the current policy (``∇log π_θ``; the frozen π_ref model enters only
  through the margin),
* advantage: the **implicit advantage** ``Â_w = −ℓ'(h) ∂h/∂ log π(y_w)`` on the
  chosen tokens and ``Â_l = −ℓ'(h) ∂h/∂ log π(y_l)`` on the rejected ones,
  computed from the *stop-gradient* margin,
* aggregation: token sum (DPO, IPO) or token mean (SimPO, ORPO, TRL's IPO) per
  response, mean over pairs.

Inputs are ``[P, T]`` arrays for ``P`` pairs. Each loss returns
``(loss_sum, denominator, metrics)`` with ``denominator = P`` (pairs with a
non-empty chosen response); ``metrics['objective']`` is the method's own loss
value (mean over pairs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from upt_jax.upge._common import masked_sum, safe_div, sg
from upt_jax.upge._surrogate import upge_token_terms


def sequence_logps(logp: jax.Array, mask: jax.Array, average: bool = False) -> jax.Array:
    """Sequence log-likelihood ``Σ_t m log π`` (or its token mean): ``[P, T] → [P]``.

    Args:
      logp: ``[P, T]`` token log-probs.
      mask: ``[P, T]`` mask.
      average: divide by ``|y| = Σ_t m`` (length normalisation).

    Returns:
      ``[P]`` sequence log-likelihoods.
    """
    s = masked_sum(logp, mask, axis=-1)
    return safe_div(s, jnp.sum(mask, axis=-1)) if average else s


def _smoothed_sigmoid_coef(h, label_smoothing):
    # −dℓ/dh for ℓ(h) = −(1−ε) log σ(h) − ε log σ(−h).
    return (1.0 - label_smoothing) * jax.nn.sigmoid(-h) - label_smoothing * jax.nn.sigmoid(h)


def _smoothed_sigmoid_loss(h, label_smoothing):
    return -(1.0 - label_smoothing) * jax.nn.log_sigmoid(h) - label_smoothing * jax.nn.log_sigmoid(-h)


def dpo_advantages(
    chosen_logp,
    rejected_logp,
    chosen_mask,
    rejected_mask,
    ref_chosen_logp,
    ref_rejected_logp,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
):
    """DPO's implicit advantage (Rafailov et al. 2023; conservative DPO with ``ε``).

    Math: ``h = β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]``
    with sequence sums, ``ℓ = −(1−ε) log σ(h) − ε log σ(−h)``, so
    ``Â_w = β[(1−ε) σ(−h) − ε σ(h)]`` on every chosen token and ``Â_l = −Â_w`` on
    every rejected token (aggregation: token sum, mean over pairs).

    Args:
      chosen_logp, rejected_logp: ``[P, T]`` policy log-probs.
      chosen_mask, rejected_mask: ``[P, T]`` masks.
      ref_chosen_logp, ref_rejected_logp: ``[P, T]`` reference log-probs.
      beta: ``β``.
      label_smoothing: ``ε`` (0 is plain DPO).

    Returns:
      ``(adv_chosen [P], adv_rejected [P], h [P], loss [P])``, no gradient.
    """
    h = beta * (
        (sequence_logps(sg(chosen_logp), chosen_mask) - sequence_logps(ref_chosen_logp, chosen_mask))
        - (sequence_logps(sg(rejected_logp), rejected_mask) - sequence_logps(ref_rejected_logp, rejected_mask))
    )
    a = beta * _smoothed_sigmoid_coef(h, label_smoothing)
    return a, -a, h, _smoothed_sigmoid_loss(h, label_smoothing)


def ipo_advantages(
    chosen_logp,
    rejected_logp,
    chosen_mask,
    rejected_mask,
    ref_chosen_logp,
    ref_rejected_logp,
    *,
    beta: float = 0.1,
    length_average: bool = False,
):
    """IPO's implicit advantage (Azar et al. 2023).

    Math: ``h = (log π − log π_ref)(y_w) − (log π − log π_ref)(y_l)`` with sequence
    log-likelihoods (the paper's; ``length_average=True``: token means, as TRL),
    ``ℓ = (h − 1/(2β))²``, so ``Â_w = −2(h − 1/(2β))``, ``Â_l = −Â_w`` per token, with
    token-sum aggregation per response (token-mean with ``length_average``).

    Args:
      chosen_logp, rejected_logp: ``[P, T]`` policy log-probs.
      chosen_mask, rejected_mask: ``[P, T]`` masks.
      ref_chosen_logp, ref_rejected_logp: ``[P, T]`` reference log-probs.
      beta: ``β`` (the paper's ``τ``; target margin ``1/(2β)``).
      length_average: log-ratios averaged over each response's tokens (TRL) instead of summed.

    Returns:
      ``(adv_chosen [P], adv_rejected [P], h [P], loss [P])``.
    """
    avg = length_average
    h = (sequence_logps(sg(chosen_logp), chosen_mask, avg) - sequence_logps(ref_chosen_logp, chosen_mask, avg)) - (
        sequence_logps(sg(rejected_logp), rejected_mask, avg) - sequence_logps(ref_rejected_logp, rejected_mask, avg)
    )
    g = h - 1.0 / (2.0 * beta)
    return -2.0 * g, 2.0 * g, h, jnp.square(g)


def simpo_advantages(
    chosen_logp,
    rejected_logp,
    chosen_mask,
    rejected_mask,
    *,
    beta: float = 2.0,
    gamma: float = 0.5,
    label_smoothing: float = 0.0,
):
    """SimPO's implicit advantage (Meng et al. 2024): reference-free, length-normalised.

    Math: ``h = β (mean_t log π(y_w) − mean_t log π(y_l)) − γ`` (margin ``γ``, not
    ``γ/β``), ``ℓ = −(1−ε) log σ(h) − ε log σ(−h)``, so
    ``Â_w = β[(1−ε)σ(−h) − εσ(h)]``, ``Â_l = −Â_w`` with token-mean aggregation.

    Args:
      chosen_logp, rejected_logp: ``[P, T]`` policy log-probs.
      chosen_mask, rejected_mask: ``[P, T]`` masks.
      beta: ``β``.
      gamma: target reward margin ``γ``.
      label_smoothing: ``ε``.

    Returns:
      ``(adv_chosen [P], adv_rejected [P], h [P], loss [P])``.
    """
    h = (
        beta
        * (sequence_logps(sg(chosen_logp), chosen_mask, True) - sequence_logps(sg(rejected_logp), rejected_mask, True))
        - gamma
    )
    a = beta * _smoothed_sigmoid_coef(h, label_smoothing)
    return a, -a, h, _smoothed_sigmoid_loss(h, label_smoothing)


def _log_odds(avg_logp):
    # log(p / (1 − p)) with p = exp(avg_logp) < 1.
    return avg_logp - jnp.log(-jnp.expm1(avg_logp))


def orpo_advantages(chosen_logp, rejected_logp, chosen_mask, rejected_mask, *, lam: float = 0.1):
    """ORPO's implicit advantage (Hong et al. 2024): SFT plus an odds-ratio term.

    Math: ``a = mean_t log π(y)``, ``odds(y) = e^a / (1 − e^a)``,
    ``z = log odds(y_w) − log odds(y_l)``, ``ℓ = −a_w − λ log σ(z)``. Since
    ``∂ log odds/∂a = 1/(1 − e^a)``:

        Â_w = 1 + λ σ(−z) / (1 − e^{a_w}),      Â_l = −λ σ(−z) / (1 − e^{a_l})

    per token with token-mean aggregation per response, mean over pairs (the paper's Eq. 6).

    Args:
      chosen_logp, rejected_logp: ``[P, T]`` policy log-probs.
      chosen_mask, rejected_mask: ``[P, T]`` masks.
      lam: ``λ``.

    Returns:
      ``(adv_chosen [P], adv_rejected [P], z [P], loss [P])``.
    """
    aw = sequence_logps(sg(chosen_logp), chosen_mask, True)
    al = sequence_logps(sg(rejected_logp), rejected_mask, True)
    z = _log_odds(aw) - _log_odds(al)
    s = jax.nn.sigmoid(-z)
    adv_w = 1.0 + lam * s / (-jnp.expm1(aw))
    adv_l = -lam * s / (-jnp.expm1(al))
    return adv_w, adv_l, z, -aw - lam * jax.nn.log_sigmoid(z)


def preference_surrogate(
    chosen_logp, rejected_logp, chosen_mask, rejected_mask, adv_chosen, adv_rejected, *, length_normalise: bool
):
    """UPGE surrogate of a pairwise loss: ``(loss_sum, denominator)``.

    Math: ``loss_sum = Σ_p Σ_t c_{p,t} ℓ^w_{p,t} + c'_{p,t} ℓ^l_{p,t}`` with
    ``ℓ = −sg(Â) exp(log π − sg(log π))`` (value ``−Â``, gradient ``−Â ∇log π``)
    and ``c = m`` or ``m/|y|`` (``length_normalise``); ``denominator`` = number of
    pairs with a non-empty chosen response.

    Args:
      chosen_logp, rejected_logp: ``[P, T]`` policy log-probs (differentiated).
      chosen_mask, rejected_mask: ``[P, T]`` masks.
      adv_chosen, adv_rejected: ``[P]`` implicit advantages.
      length_normalise: token mean (True) or token sum (False) per response.

    Returns:
      ``(loss_sum [], denominator [])``.
    """
    total = 0.0
    for lp, m, a in ((chosen_logp, chosen_mask, adv_chosen), (rejected_logp, rejected_mask, adv_rejected)):
        terms = upge_token_terms(lp, sg(lp), a, None, m)
        w = m * safe_div(1.0, jnp.sum(m, -1))[:, None] if length_normalise else m
        total = total + jnp.sum(jnp.where(m > 0, w * terms, 0.0))
    denom = jnp.sum((jnp.sum(chosen_mask, -1) > 0).astype(jnp.float32))
    return total, denom


def _finish(chosen_logp, rejected_logp, chosen_mask, rejected_mask, out, length_normalise):
    aw, al, h, loss = out
    s, d = preference_surrogate(
        chosen_logp, rejected_logp, chosen_mask, rejected_mask, aw, al, length_normalise=length_normalise
    )
    metrics = {
        "objective": jnp.mean(loss),
        "margin": jnp.mean(h),
        "accuracy": jnp.mean((h > 0).astype(jnp.float32)),
        "adv_chosen_mean": jnp.mean(aw),
    }
    return s, d, metrics


def dpo_loss(
    chosen_logp,
    rejected_logp,
    chosen_mask,
    rejected_mask,
    ref_chosen_logp,
    ref_rejected_logp,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
):
    """DPO (sigmoid, with label smoothing) as a UPGE loss: ``(loss_sum, denominator, metrics)``.

    Gradient equals that of ``mean_p −(1−ε) log σ(h_p) − ε log σ(−h_p)``; see
    `dpo_advantages` for ``h``.

    Args:
      chosen_logp, rejected_logp: ``[P, T]`` policy log-probs (differentiated).
      chosen_mask, rejected_mask: ``[P, T]`` masks.
      ref_chosen_logp, ref_rejected_logp: ``[P, T]`` frozen reference log-probs.
      beta: ``β``.
      label_smoothing: ``ε``.

    Returns:
      ``(loss_sum [], denominator [], metrics)``.
    """
    out = dpo_advantages(
        chosen_logp,
        rejected_logp,
        chosen_mask,
        rejected_mask,
        ref_chosen_logp,
        ref_rejected_logp,
        beta=beta,
        label_smoothing=label_smoothing,
    )
    return _finish(chosen_logp, rejected_logp, chosen_mask, rejected_mask, out, False)


def ipo_loss(
    chosen_logp,
    rejected_logp,
    chosen_mask,
    rejected_mask,
    ref_chosen_logp,
    ref_rejected_logp,
    *,
    beta: float = 0.1,
    length_average: bool = False,
):
    """IPO as a UPGE loss: ``(loss_sum, denominator, metrics)``; see `ipo_advantages`.

    Gradient equals that of ``mean_p (h_p − 1/(2β))²`` with ``h`` the difference of the
    chosen and rejected responses' log-ratios (sequence sums; token means with
    ``length_average``, as TRL).

    Args:
      chosen_logp, rejected_logp: ``[P, T]`` policy log-probs (differentiated).
      chosen_mask, rejected_mask: ``[P, T]`` masks.
      ref_chosen_logp, ref_rejected_logp: ``[P, T]`` reference log-probs.
      beta: ``β``.
      length_average: token-mean log-ratios (the ``ipo_length_avg`` recipe).

    Returns:
      ``(loss_sum [], denominator [], metrics)``.
    """
    out = ipo_advantages(
        chosen_logp,
        rejected_logp,
        chosen_mask,
        rejected_mask,
        ref_chosen_logp,
        ref_rejected_logp,
        beta=beta,
        length_average=length_average,
    )
    return _finish(chosen_logp, rejected_logp, chosen_mask, rejected_mask, out, length_average)


def simpo_loss(
    chosen_logp,
    rejected_logp,
    chosen_mask,
    rejected_mask,
    *,
    beta: float = 2.0,
    gamma: float = 0.5,
    label_smoothing: float = 0.0,
):
    """SimPO as a UPGE loss: ``(loss_sum, denominator, metrics)``; see `simpo_advantages`.

    Gradient equals that of ``mean_p −log σ(β(mean_t log π(y_w) − mean_t log π(y_l)) − γ)``
    (with label smoothing ``ε`` as in DPO).

    Args:
      chosen_logp, rejected_logp: ``[P, T]`` policy log-probs (differentiated).
      chosen_mask, rejected_mask: ``[P, T]`` masks.
      beta: ``β``.
      gamma: margin ``γ``.
      label_smoothing: ``ε``.

    Returns:
      ``(loss_sum [], denominator [], metrics)``.
    """
    out = simpo_advantages(
        chosen_logp, rejected_logp, chosen_mask, rejected_mask, beta=beta, gamma=gamma, label_smoothing=label_smoothing
    )
    return _finish(chosen_logp, rejected_logp, chosen_mask, rejected_mask, out, True)


def orpo_loss(chosen_logp, rejected_logp, chosen_mask, rejected_mask, *, lam: float = 0.1):
    """ORPO as a UPGE loss: ``(loss_sum, denominator, metrics)``; see `orpo_advantages`.

    Gradient equals that of ``mean_p [−mean_t log π(y_w) − λ log σ(log odds(y_w) − log odds(y_l))]``.

    Args:
      chosen_logp, rejected_logp: ``[P, T]`` policy log-probs (differentiated).
      chosen_mask, rejected_mask: ``[P, T]`` masks.
      lam: odds-ratio weight ``λ``.

    Returns:
      ``(loss_sum [], denominator [], metrics)``.
    """
    out = orpo_advantages(chosen_logp, rejected_logp, chosen_mask, rejected_mask, lam=lam)
    return _finish(chosen_logp, rejected_logp, chosen_mask, rejected_mask, out, True)
