"""Textbook forms of policy-gradient losses of 2024-26: GPG, RLOO (paper form), Clip-Cov,
KL-Cov and on-policy distillation mixed with GRPO.

Independent readings of the papers for the UPGE gradient-equivalence tests; conventions as
in ``tests/upge/textbook.py`` and ``tests/upge/SPEC.md``: ``logp`` ``[B, T]`` is the only
differentiated input, every other array is a constant, ``mask`` ``[B, T]`` marks response
tokens, the ``G = group_size`` rows of a question are contiguous, and each function returns
a float32 scalar to minimise. Randomness (Clip-Cov) enters as an explicit PRNG key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tests.upge.textbook_common import (
    _f32,
    _group_mean_std,
    _group_normalised,
    _masked_rank,
    _ppo_clip_objective,
    _sg,
    _token_mean,
)

__all__ = ["gpg", "rloo_paper", "clip_cov", "kl_cov", "opd_pg", "token_covariance"]


def gpg(logp, mask, rewards, *, group_size, scale_by_std=False, eps=1e-6, ddof=0):
    """GPG: plain policy gradient with the group-mean baseline and the AGE correction.

    ``A_i = alpha (r_i - mean_g) / F_norm`` with ``F_norm = 1`` (default) or
    ``std_g + eps`` (``scale_by_std``); the accurate-gradient-estimation factor
    ``alpha = B / (B - M)``, ``M`` = number of rows whose group has all-equal rewards
    (those rows have ``A = 0``; ``alpha = 1`` if every group is such);
    ``L = - sum_{i,t} m A_i log pi(o_{i,t}) / sum_{i,t} m``  (no ratio, no clip; token-mean).

    Reference: Chu et al. (2025), "GPG: A Simple and Strong Reinforcement Learning Baseline
    for Model Reasoning", arXiv:2504.02546, the J_GPG objective (with the
    ``1 / sum_i |o_i|`` normalisation, the advantage ``(r - mean) / F_norm`` and AGE's
    ``alpha = B / (B - M)``; best setting F_norm = 1); released code
    github.com/AMAP-ML/GPG (``loss / inverse_alpha``, inverse_alpha = valid / all groups).

    Args:
      logp, mask: ``[B, T]`` (``logp`` differentiated).
      rewards: ``[B]``; group_size: G.
    """
    r = _sg(_f32(rewards))
    mean, std = _group_mean_std(r, group_size, ddof)
    groups = r.reshape(-1, group_size)
    flat = jnp.repeat(jnp.max(groups, axis=1) == jnp.min(groups, axis=1), group_size)
    n_rows, n_flat = r.shape[0], jnp.sum(flat)
    alpha = jnp.where(n_flat < n_rows, n_rows / jnp.maximum(n_rows - n_flat, 1), 1.0)
    f_norm = std + eps if scale_by_std else 1.0
    adv = (alpha * (r - mean) / f_norm)[:, None]
    return _token_mean(-adv * _f32(logp), mask)


def rloo_paper(logp, mask, rewards, *, group_size):
    """RLOO as in the paper: sequence-level REINFORCE with the leave-one-out baseline.

    ``A_i = r_i - (1/(G-1)) sum_{j != i} r_j`` (G >= 2);
    ``L = -(1/B) sum_i A_i log pi(o_i | q)`` with ``log pi(o_i | q) = sum_t m logp_{i,t}``
    (one term per sequence, mean over the B sequences; no ratio, no clip).

    Reference: Ahmadian et al. (2024), "Back to Basics: Revisiting REINFORCE Style
    Optimization for Learning from Human Feedback in LLMs", arXiv:2402.14740, Sec. 3 (the
    RLOO estimator ``1/k sum_i [R(y_i) - 1/(k-1) sum_{j!=i} R(y_j)] grad log pi(y_i|x)``,
    from Kool et al. 2019), whole completions as single actions.
    """
    if group_size < 2:
        raise ValueError(f"RLOO needs group_size >= 2, got {group_size}")
    r = _sg(_f32(rewards)).reshape(-1, group_size)
    baseline = (jnp.sum(r, axis=1, keepdims=True) - r) / (group_size - 1)
    adv = (r - baseline).reshape(-1)
    seq_logp = jnp.sum(_f32(logp) * _f32(mask), axis=-1)
    return jnp.mean(-adv * seq_logp)


def token_covariance(logp, adv, mask):
    """Per-token centred cross-product of log-probability and advantage, ``[B, T]``.

    ``Cov_{i,t} = (sg(logp_{i,t}) - mean(sg(logp))) (A_{i,t} - mean(A))``, both means over
    the valid tokens of the whole batch (token-weighted); 0 on padding. ``adv`` is ``[B, T]``
    or ``[B, 1]`` (broadcast). Cui et al. (2025), arXiv:2505.22617 (the per-token
    covariance of log-probability and advantage that drives the entropy change).
    """
    mask = _f32(mask)
    lp = _sg(_f32(logp))
    adv = jnp.broadcast_to(_sg(_f32(adv)), lp.shape)
    n = jnp.maximum(jnp.sum(mask), 1.0)
    lp_bar, adv_bar = jnp.sum(lp * mask) / n, jnp.sum(adv * mask) / n
    return (lp - lp_bar) * (adv - adv_bar) * mask


def clip_cov(
    logp,
    old_logp,
    mask,
    rewards,
    key,
    *,
    group_size,
    clip_ratio=2e-4,
    cov_low=1.0,
    cov_high=5.0,
    eps_low=0.2,
    eps_high=0.2,
    eps=1e-6,
    ddof=0,
):
    """Clip-Cov: detach a random few high-covariance tokens from the PPO-clipped loss.

    ``A_i = (r_i - mean_g) / (std_g + eps)``; ``Cov`` = :func:`token_covariance`;
    ``rho = exp(logp - old_logp)``, ``obj = min(rho A, clip(rho, 1-eps_low, 1+eps_high) A)``.
    Eligible tokens: valid, ``cov_low < Cov < cov_high``, and not already clipped by PPO
    (``clip(rho) A < rho A``). ``n_clip = max(floor(clip_ratio * N), 1)``, N = valid tokens.
    Randomness: ``u = jax.random.uniform(key, [B, T], float32)``; the ``n_clip`` eligible
    tokens with the smallest ``u`` (all if fewer; ties by lower row-major index) are
    selected and contribute nothing (value and gradient 0);
    ``L = - sum_{unselected} m obj / N``  (token-mean over all valid tokens).

    Reference: Cui et al. (2025), "The Entropy Mechanism of Reinforcement Learning for
    Reasoning Language Models", arXiv:2505.22617, the Clip-Cov objective (a random r-fraction of
    tokens with covariance in [omega_low, omega_high] has its gradient detached; r = 2e-4,
    omega = [1, 5]); their code / verl ``compute_policy_loss_clip_cov`` (PPO-clipped
    tokens excluded from the candidates; selected tokens multiplied by 0).

    Args:
      logp, old_logp, mask: ``[B, T]`` (``logp`` differentiated).
      rewards: ``[B]``; group_size: G.
      key: a ``jax.random`` PRNG key (the only source of randomness).
    """
    logp, mask = _f32(logp), _f32(mask)
    adv = _group_normalised(rewards, group_size, eps, ddof)[:, None]
    ratio = jnp.exp(logp - _sg(_f32(old_logp)))
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    obj = jnp.minimum(unclipped, clipped)
    cov = token_covariance(logp, adv, mask)
    eligible = (mask > 0) & ~(clipped < unclipped) & (cov > cov_low) & (cov < cov_high)
    n_clip = jnp.maximum(jnp.floor(clip_ratio * jnp.sum(mask)), 1.0)
    u = jax.random.uniform(key, logp.shape, jnp.float32)
    selected = eligible & (_masked_rank(u, eligible) < n_clip)
    per_token = jnp.where(selected, 0.0, -obj)
    return _token_mean(per_token, mask)


def kl_cov(logp, old_logp, mask, rewards, *, group_size, kl_cov_ratio=2e-4, kl_coef=1.0, eps=1e-6, ddof=0):
    """KL-Cov: an |log-ratio| penalty on the top-k covariance tokens; no ratio clip.

    ``A_i = (r_i - mean_g) / (std_g + eps)``; ``Cov`` = :func:`token_covariance`;
    ``k = max(floor(kl_cov_ratio * N), 1)``; the k valid tokens of largest ``Cov`` (ties by
    lower row-major index) are selected; ``rho = exp(logp - old_logp)``;
    ``l_{i,t} = -rho A_i + [selected] kl_coef |logp - old_logp|``;
    ``L = sum m l / sum m``  (token-mean). The gradient of ``|x|`` at 0 is taken as 0
    (``sign(0) = 0``, as in PyTorch).

    Reference: Cui et al. (2025), arXiv:2505.22617, the KL-Cov objective (a KL penalty between
    the current and the old policy on the top-k proportion of tokens by covariance;
    beta = 1, k = 2e-3 (7B) / 2e-4 (32B)); their code / verl ``compute_policy_loss_kl_cov``
    (penalty ``|log pi - log pi_old|``, unclipped ``-A rho`` elsewhere).
    """
    logp, mask = _f32(logp), _f32(mask)
    old_logp = _sg(_f32(old_logp))
    adv = _group_normalised(rewards, group_size, eps, ddof)[:, None]
    cov = token_covariance(logp, adv, mask)
    k = jnp.maximum(jnp.floor(kl_cov_ratio * jnp.sum(mask)), 1.0)
    selected = (mask > 0) & (_masked_rank(-cov, mask > 0) < k)
    diff = logp - old_logp
    abs_diff = _sg(jnp.sign(diff)) * diff
    per_token = -jnp.exp(diff) * adv + jnp.where(selected, kl_coef * abs_diff, 0.0)
    return _token_mean(per_token, mask)


def opd_pg(logp, old_logp, teacher_logp, mask, rewards, *, group_size, alpha=1.0, clip_eps=0.2, eps=1e-6, ddof=0):
    """On-policy distillation plus a GRPO outcome term, one coefficient ``alpha``, PPO-clipped.

    Per-token advantage (constant):
    ``A_{i,t} = -(old_logp_{i,t} - teacher_logp_{i,t}) + alpha (r_i - mean_g) / (std_g + eps)``
    (the reverse-KL reward of the sampled token, measured with the behaviour log-prob, plus the
    group-normalised outcome advantage); ``rho = exp(logp - old_logp)``;
    ``L = - sum m min(rho A, clip(rho, 1-eps_c, 1+eps_c) A) / sum m``  (token-mean).
    With ``alpha = 0`` and ``old_logp = logp`` this is :func:`textbook.distill_on_policy`.

    Reference: Agarwal et al. (2024), GKD, arXiv:2306.13649, Sec. 3 (on-policy reverse KL);
    Lu & Thinking Machines Lab (2025), "On-Policy Distillation" (per-token
    ``-(log pi - log pi_teacher)`` of the sampled token as the advantage, importance-sampled
    against the sampler's log-probs); Shao et al. (2024), arXiv:2402.03300, Eq. (3) (GRPO's
    clipped objective and group-normalised outcome advantage).

    Args:
      logp, old_logp, teacher_logp, mask: ``[B, T]`` (``logp`` differentiated).
      rewards: ``[B]``; group_size: G; alpha: weight of the outcome advantage.
    """
    logp = _f32(logp)
    old_logp = _sg(_f32(old_logp))
    kl_adv = -(old_logp - _sg(_f32(teacher_logp)))
    adv = kl_adv + alpha * _group_normalised(rewards, group_size, eps, ddof)[:, None]
    ratio = jnp.exp(logp - old_logp)
    return _token_mean(-_ppo_clip_objective(ratio, adv, clip_eps, clip_eps), mask)
