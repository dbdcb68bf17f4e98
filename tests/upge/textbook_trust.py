"""Textbook forms of the 2025-26 losses that replace PPO's ratio clip: SAPO, GMPO, DPPO.

Independent readings of the papers for the UPGE gradient-equivalence tests; conventions as
in ``tests/upge/textbook.py`` and ``tests/upge/SPEC.md``: ``logp`` ``[B, T]`` is the only
differentiated input, every other array is a constant (``stop_gradient`` where it enters),
``mask`` ``[B, T]`` marks response tokens, the ``G = group_size`` rows of a question are
contiguous, and each function returns a float32 scalar to minimise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tests.upge.textbook_common import (
    _f32,
    _group_mean_std,
    _group_normalised,
    _row_mean,
    _sg,
)

__all__ = ["sapo", "gmpo", "dppo_tv", "dppo_kl"]


def sapo(logp, old_logp, mask, rewards, *, group_size, tau_pos=1.0, tau_neg=1.05, eps=1e-6, ddof=0):
    """SAPO: a temperature-controlled sigmoid gate on the token ratio instead of a hard clip.

    ``r_{i,t} = exp(logp - old_logp)``; ``A_i = (r_i - mean_g) / (std_g + eps)``;
    ``tau_i = tau_pos`` if ``A_i > 0`` else ``tau_neg``;
    gate ``f_i(x) = sigma(tau_i (x - 1)) * 4 / tau_i``;
    ``L = -(1/B) sum_i (1/|o_i|) sum_t m f_i(r_{i,t}) A_i``  (seq-mean-token-mean).

    ``d f / d log pi = 4 sigma (1 - sigma) * r``: 1 at ``r = 1`` (the on-policy gradient is
    GRPO's, for every temperature), decaying smoothly away from ``r = 1``, faster for larger
    ``tau``; as ``tau -> 0`` it tends to ``r`` (unclipped importance sampling).

    Reference: Gao et al. (2025), "Soft Adaptive Policy Optimization", arXiv:2511.20347,
    the SAPO objective J_SAPO (with the soft gate ``f_{i,t}(x) = sigma(tau_{i,t}(x-1)) 4/tau_{i,t}``
    and the asymmetric temperatures, tau_pos = 1.0, tau_neg = 1.05); verl
    ``compute_policy_loss_sapo`` (seq-mean-token-mean).

    Args:
      logp, old_logp, mask: ``[B, T]`` (``logp`` differentiated).
      rewards: ``[B]``; group_size: G.
      tau_pos, tau_neg: gate temperatures for positive / non-positive advantages.
    """
    logp = _f32(logp)
    adv = _group_normalised(rewards, group_size, eps, ddof)[:, None]
    ratio = jnp.exp(logp - _sg(_f32(old_logp)))
    tau = jnp.where(adv > 0, tau_pos, tau_neg)
    gate = jax.nn.sigmoid(tau * (ratio - 1.0)) * 4.0 / tau
    return jnp.mean(_row_mean(-gate * adv, mask))


def gmpo(logp, old_logp, mask, rewards, *, group_size, eps_low=0.4, eps_high=0.4, eps=1e-6, ddof=0):
    """GMPO: the geometric mean of token-clipped ratios per sequence (clip in log space).

    ``l_{i,t} = logp - old_logp``; ``A_i = (r_i - mean_g) / (std_g + eps)``, ``s_i = sign(A_i)``;
    token clip, one-sided by the advantage sign (PPO's trust region in log space):
    ``l~_{i,t} = s_i * min(s_i l_{i,t}, s_i clip(l_{i,t}, -eps_low, eps_high))``;
    ``rho_i = exp( (1/|o_i|) sum_t m l~_{i,t} ) = (prod_t r~_{i,t})^{1/|o_i|}``;
    ``L = -(1/B) sum_i rho_i A_i``  (one term per sequence).
    For ``|o_i| = 1`` this is PPO's ``min(r A, clip(r, e^-eps_low, e^eps_high) A)``.

    Reference: Zhao et al. (2025), "Geometric-Mean Policy Optimization", arXiv:2507.20673,
    the J_GMPO objective (geometric mean of the token-level clipped ratios, times
    the group-normalised advantage) and Sec. 4 (clip range (e^-0.4, e^0.4)); verl
    ``compute_policy_loss_geo_mean``; TRL ``GMPOTrainer``.

    Args:
      logp, old_logp, mask: ``[B, T]`` (``logp`` differentiated).
      rewards: ``[B]``; group_size: G.
      eps_low, eps_high: the clip range of the *log* ratio.
    """
    logp = _f32(logp)
    adv = _group_normalised(rewards, group_size, eps, ddof)
    sgn = jnp.sign(adv)[:, None]
    log_r = logp - _sg(_f32(old_logp))
    clipped = jnp.clip(log_r, -eps_low, eps_high)
    log_r_kept = sgn * jnp.minimum(sgn * log_r, sgn * clipped)
    rho = jnp.exp(_row_mean(log_r_kept, mask))
    return jnp.mean(-rho * adv)


def _dppo(logp, old_logp, mask, rewards, keep_fn, *, group_size, is_cap, max_len):
    """Shared DPPO surrogate: ``-A_i keep_{i,t} sg(min(r, C)) log pi``, seq-mean-token-sum-norm.

    ``keep_fn(lp, lp_old, pos)`` (token log-probs, advantage > 0) -> ``[B, T]`` bool: the
    divergence trust region (constant).
    """
    logp = _f32(logp)
    old_logp = _sg(_f32(old_logp))
    mean, _ = _group_mean_std(_sg(rewards), group_size)
    adv = _sg(_f32(rewards) - mean)[:, None]
    pos = jnp.broadcast_to(adv > 0, logp.shape)
    keep = _sg(keep_fn(_sg(logp), old_logp, pos).astype(jnp.float32))
    weight = _sg(jnp.minimum(jnp.exp(logp - old_logp), is_cap))
    per_token = -adv * keep * weight * logp
    horizon = logp.shape[1] if max_len is None else max_len
    return jnp.mean(jnp.sum(per_token * _f32(mask), axis=-1) / horizon)


def dppo_tv(logp, old_logp, mask, rewards, *, group_size, delta_low=0.15, delta_high=0.15, is_cap=20.0, max_len=None):
    """DPPO-Binary-TV: a total-variation trust region on the sampled token's probability.

    ``p = pi_theta(o_t)``, ``p_old = pi_old(o_t)``; ``A_i = r_i - mean_g`` (no std);
    a token is kept (gradient on) unless it already moved too far in the advantage's
    direction: ``A_i > 0``: keep iff ``p - p_old <= delta_high``; ``A_i <= 0``: keep iff
    ``p - p_old >= -delta_low`` (binary TV ``|p - p_old|``, one-sided as PPO's clip);
    gradient weight: truncated importance sampling ``sg(min(p / p_old, C))``;
    ``L = -(1/B) sum_i sum_t m keep A_i sg(min(r, C)) log pi / L_const``
    (seq-mean-token-sum-norm, ``L_const = max_len``, default ``T``).

    Reference: Qi et al. (2026), "Rethinking the Trust Region in LLM Reinforcement Learning"
    (DPPO), arXiv:2602.04879, the DPPO objective (the divergence mask with the Binary
    approximation of TV) and Sec. 5.4 (truncated IS instead of dual clip); verl
    ``compute_policy_loss_dppo_tv`` and ``examples/dppo_trainer`` (delta = 0.15,
    ``norm_adv_by_std_in_grpo=False``, ``loss_agg_mode=seq-mean-token-sum-norm``).

    Args:
      logp, old_logp, mask: ``[B, T]`` (``logp`` differentiated).
      rewards: ``[B]``; group_size: G.
      delta_low, delta_high: TV thresholds; is_cap: the IS truncation C.
    """

    def keep(lp, lp_old, pos):
        move = jnp.exp(lp) - jnp.exp(lp_old)
        return jnp.where(pos, move <= delta_high, move >= -delta_low)

    return _dppo(logp, old_logp, mask, rewards, keep, group_size=group_size, is_cap=is_cap, max_len=max_len)


def dppo_kl(logp, old_logp, mask, rewards, *, group_size, delta_low=0.05, delta_high=0.05, is_cap=20.0, max_len=None):
    """DPPO-Binary-KL: as :func:`dppo_tv` with the binary KL divergence as the trust region.

    ``D = p_old log(p_old / p) + (1 - p_old) log((1 - p_old + 1e-8) / (1 - p + 1e-8))``
    (KL between Bernoulli(p_old) and Bernoulli(p), the 1e-8 as in verl);
    ``A_i > 0``: keep iff ``D <= delta_high`` or ``p <= p_old``;
    ``A_i <= 0``: keep iff ``D <= delta_low`` or ``p >= p_old``;
    the rest (advantage, truncated IS weight, aggregation) as :func:`dppo_tv`.

    Reference: Qi et al. (2026), arXiv:2602.04879 (the Binary-KL approximation);
    verl ``compute_policy_loss_dppo_kl`` (delta = 0.05).
    """

    def keep(lp, lp_old, pos):
        p, p_old = jnp.exp(lp), jnp.exp(lp_old)
        div = p_old * (lp_old - lp) + (1.0 - p_old) * jnp.log((1.0 - p_old + 1e-8) / (1.0 - p + 1e-8))
        return jnp.where(pos, (div <= delta_high) | (p <= p_old), (div <= delta_low) | (p >= p_old))

    return _dppo(logp, old_logp, mask, rewards, keep, group_size=group_size, is_cap=is_cap, max_len=max_len)
