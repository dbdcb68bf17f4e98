"""Textbook forms of preference losses as their papers state them: KTO, IPO (summed
log-ratios), ORPO.

Conventions as in ``tests/upge/textbook.py`` / ``tests/upge/SPEC.md``: per-token log-probs
``[B, T]`` with masks; the differentiated inputs are the policy log-probs (``logp`` for KTO,
``chosen_logp`` / ``rejected_logp`` for pairs); references and labels are constants; each
function returns a float32 scalar to minimise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tests.upge.textbook_common import _f32, _seq_avg, _seq_sum, _sg

__all__ = ["kto", "ipo_paper", "orpo_paper"]


def kto(logp, ref_logp, mask, desirable, *, kl_ref, beta=0.1, lambda_d=1.0, lambda_u=1.0):
    """KTO: prospect-theoretic loss on unpaired desirable / undesirable completions.

    ``r_i = sum_t m (logp - ref_logp)`` (sequence log-ratio to the reference);
    ``z_0 = kl_ref``: the reference point, a given constant (no gradient; the caller estimates
    it, e.g. TRL: ``max(0, mean_j sum_t (logp - ref_logp))`` over mismatched (prompt,
    completion) pairs of the batch);
    ``v_i = lambda_d sigma(beta (r_i - z_0))`` if row i is desirable,
    ``v_i = lambda_u sigma(beta (z_0 - r_i))`` if undesirable;
    ``L = (1/B) sum_i (lambda_{y_i} - v_i)``  (mean over all rows).
    A desirable row's gradient pushes its log-probs up, an undesirable row's down.

    Reference: Ethayarajh et al. (2024), "KTO: Model Alignment as Prospect Theoretic
    Optimization", arXiv:2402.01306, the KTO loss (``E[lambda_y - v(x, y)]`` with
    the implied reward ``r_theta``, the reference point ``z_0 = KL(pi_theta || pi_ref)``
    estimated from mismatched pairs without back-propagating through it, and the value
    ``v``); TRL ``KTOTrainer`` (beta = 0.1, desirable / undesirable weights 1.0).

    Args:
      logp: ``[B, T]`` policy token log-probs of the completions (differentiated).
      ref_logp: ``[B, T]`` reference token log-probs (constant); mask: ``[B, T]``.
      desirable: ``[B]`` labels, 1 (desirable) or 0 (undesirable).
      kl_ref: scalar z_0 (constant).
    """
    labels = np.asarray(desirable, dtype=np.float64)
    if labels.ndim != 1 or not np.all((labels == 0.0) | (labels == 1.0)):
        raise ValueError(f"KTO labels must be a [B] array of 0/1, got {desirable!r}")
    good = jnp.asarray(labels > 0.5)
    r = _seq_sum(_f32(logp) - _sg(_f32(ref_logp)), mask)
    z0 = _sg(_f32(kl_ref))
    v = jnp.where(good, lambda_d * jax.nn.sigmoid(beta * (r - z0)), lambda_u * jax.nn.sigmoid(beta * (z0 - r)))
    lam = jnp.where(good, lambda_d, lambda_u)
    return jnp.mean(lam - v)


def ipo_paper(chosen_logp, rejected_logp, chosen_mask, rejected_mask, ref_chosen_logp, ref_rejected_logp, *, beta=0.1):
    """IPO as in the paper: squared loss on the margin of *summed* sequence log-ratios.

    ``h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)]`` with sequence
    log-probs = masked token sums (not length-averaged, unlike TRL's ``ipo``);
    ``L = mean_pairs (h - 1/(2 beta))^2``  (``beta`` is the paper's tau; minimum at
    ``h = 1/(2 beta)``).

    Reference: Azar et al. (2023), "A General Theoretical Paradigm to Understand Learning
    from Human Preferences", arXiv:2310.12036, Sec. 5.2 (the empirical IPO loss, Eq. (17):
    ``(h_pi(y_w, y_l, x) - tau^-1 / 2)^2``).
    """
    h_w = _seq_sum(chosen_logp, chosen_mask) - _sg(_seq_sum(ref_chosen_logp, chosen_mask))
    h_l = _seq_sum(rejected_logp, rejected_mask) - _sg(_seq_sum(ref_rejected_logp, rejected_mask))
    return jnp.mean((h_w - h_l - 0.5 / beta) ** 2)


def orpo_paper(chosen_logp, rejected_logp, chosen_mask, rejected_mask, *, lam=0.1):
    """ORPO exactly as the paper's equations: per-example SFT term plus lambda * odds-ratio term.

    Per pair: ``m_w = |y_w|``, ``L_SFT = -(1/m_w) sum_t log P(y_w,t | x, y_w,<t)`` (the chosen
    NLL as a token mean *within the example*);
    ``P(y|x) = exp((1/|y|) sum_t log P(y_t | ...))`` (length-normalised likelihood),
    ``odds(y|x) = P / (1 - P)``, ``L_OR = -log sigma(log(odds(y_w|x) / odds(y_l|x)))``;
    ``L_ORPO = mean_pairs [L_SFT + lam L_OR]``.
    (Same contract as the ``orpo`` row; the authors' code and TRL instead pool the chosen NLL
    over all chosen tokens of the batch, which differs when lengths differ.)

    Reference: Hong, Lee, Thorne (2024), "ORPO: Monolithic Preference Optimization without
    Reference Model", arXiv:2403.07691, Eq. (6) (L_ORPO = E[L_SFT + lambda L_OR], L_SFT the
    chosen NLL with its 1/m), Eq. (7) (L_OR) and Eq. (4) (odds); lambda = 0.1.
    """
    avg_w = _seq_avg(chosen_logp, chosen_mask)
    avg_l = _seq_avg(rejected_logp, rejected_mask)
    l_sft = -avg_w
    log_odds_w = avg_w - jnp.log(-jnp.expm1(avg_w))
    log_odds_l = avg_l - jnp.log(-jnp.expm1(avg_l))
    l_or = -jax.nn.log_sigmoid(log_odds_w - log_odds_l)
    return jnp.mean(l_sft + lam * l_or)
