"""Textbook reference losses for the UPGE gradient-equivalence tests.

Each function below writes one recipe's loss the way its paper states it: a scalar to
*minimise*, with PPO-style clipping written as ``min(ratio * A, clip(ratio) * A)``,
preference losses written with ``log sigma`` of a margin, and so on. None of them uses the
unified surrogate ``sg(coef) * exp(logp - sg(logp_ref))`` form; the point of this file is
to be an independent reading of the papers, so the equivalence tests compare
``jax.grad`` of the library's surrogate against ``jax.grad`` of these functions.

Conventions (see ``tests/upge/SPEC.md``):

* ``logp`` ``[B, T]`` float32 is the log-probability of each response token under the
  current policy and is the only differentiated input (``student_logits`` for
  distillation, ``chosen_logp`` / ``rejected_logp`` for preference losses).
* Every other array (``old_logp``, ``ref_logp``, ``rewards``, ``values``, ``entropy``,
  teacher quantities, ...) is treated as a constant: it is wrapped in
  ``jax.lax.stop_gradient`` where it enters a formula, so calling ``jax.grad`` with
  respect to it would give zero.
* ``mask`` ``[B, T]`` is 1 on response tokens and 0 on padding; each row's valid tokens
  are a prefix (right padding). Padded tokens contribute nothing to any loss.
* Groups: ``B = num_groups * group_size`` with the rows of one question contiguous, i.e.
  ``rewards.reshape(num_groups, group_size)``.
* Group statistics use the population standard deviation (``ddof=0``) by default; every
  group-normalised function takes ``ddof`` (0 or 1) and ``eps`` (SPEC ``std_ddof``, ``std_eps``).
* Every loss returns a float32 scalar.

Aggregation modes used below (``l`` is a per-token loss term):

* token-mean:               ``sum_{i,t} m l / sum_{i,t} m``
* seq-mean-token-mean:      ``(1/B) sum_i [sum_t m l / sum_t m]``
* seq-mean-token-sum-norm:  ``(1/B) sum_i sum_t m l / L`` with a constant ``L``

Equation numbers refer to the arXiv versions; where the author of this file was not
sure of a number, the section and the name of the objective are cited instead.

The functions are written for clarity, not speed (Python loops over time steps and
groups are used where the paper states a recursion or a per-group quantity).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tests.upge.textbook_common import (
    _f32,
    _group_mean_std,
    _ppo_clip_objective,
    _row_mean,
    _seq_avg,
    _seq_sum,
    _sg,
    _token_mean,
)

# The 2024-26 losses (issue #24) live in modules of their own, re-exported here so that
# ``textbook.<name>`` is the one place the tests look.
from tests.upge.textbook_pg import clip_cov, gpg, kl_cov, opd_pg, rloo_paper, token_covariance
from tests.upge.textbook_pref import ipo_paper, kto, orpo_paper
from tests.upge.textbook_trust import dppo_kl, dppo_tv, gmpo, sapo

__all__ = [
    "k1",
    "k2",
    "k3",
    "gae",
    "sft",
    "reinforce",
    "ppo",
    "grpo",
    "dr_grpo",
    "dapo",
    "gspo",
    "cispo",
    "rloo",
    "reinforce_pp",
    "remax",
    "dpo",
    "ipo",
    "simpo",
    "orpo",
    "distill_fkl",
    "distill_on_policy",
    "distill_jsd",
    "luffy",
    "srft",
    "hpt",
    "kto",
    "sapo",
    "gmpo",
    "gpg",
    "clip_cov",
    "kl_cov",
    "token_covariance",
    "dppo_tv",
    "dppo_kl",
    "rloo_paper",
    "ipo_paper",
    "orpo_paper",
    "opd_pg",
]


# ----------------------------------------------------------------------------------------
# KL estimators (Schulman, 2020, "Approximating KL Divergence",
# http://joschu.net/blog/kl-approx.html)
# ----------------------------------------------------------------------------------------


def k1(logp, ref_logp):
    """k1 estimator of KL(pi_theta || pi_ref), per token.

    With ``log r = log pi_ref(o_t) - log pi_theta(o_t)`` and ``o_t ~ pi_theta``:
    ``k1 = -log r = logp - ref_logp`` (unbiased, high variance, can be negative).

    Reference: J. Schulman (2020), "Approximating KL Divergence", blog post, estimator k1.

    Args:
      logp: ``[B, T]`` current-policy token log-probs (differentiated).
      ref_logp: ``[B, T]`` reference-model token log-probs (constant).

    Returns:
      ``[B, T]`` per-token estimates (no masking, no reduction).
    """
    return _f32(logp) - _sg(_f32(ref_logp))


def k2(logp, ref_logp):
    """k2 estimator of KL(pi_theta || pi_ref), per token: ``0.5 * (log r)^2`` (>= 0).

    Reference: J. Schulman (2020), "Approximating KL Divergence", estimator k2.
    Shapes as in :func:`k1`.
    """
    log_r = _sg(_f32(ref_logp)) - _f32(logp)
    return 0.5 * log_r**2


def k3(logp, ref_logp):
    """k3 estimator of KL(pi_theta || pi_ref), per token: ``(r - 1) - log r`` (>= 0).

    ``r = pi_ref(o_t) / pi_theta(o_t)``. This is the estimator used in the GRPO loss
    (Shao et al., 2024, arXiv:2402.03300, Eq. 4:
    ``D_KL = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1``).

    Reference: J. Schulman (2020), "Approximating KL Divergence", estimator k3.
    Shapes as in :func:`k1`.
    """
    log_r = _sg(_f32(ref_logp)) - _f32(logp)
    return jnp.exp(log_r) - 1.0 - log_r


# ----------------------------------------------------------------------------------------
# SFT, REINFORCE, PPO
# ----------------------------------------------------------------------------------------


def sft(logp, mask):
    """Supervised fine-tuning: token-mean negative log-likelihood.

    ``L = - sum_{i,t} m_{i,t} log pi_theta(y_{i,t} | x_i, y_{i,<t}) / sum_{i,t} m_{i,t}``

    Reference: standard maximum-likelihood / cross-entropy objective (e.g. Ouyang et al.,
    2022, arXiv:2203.02155, SFT stage). Aggregation: token-mean (SPEC.md).

    Args:
      logp: ``[B, T]`` log-probs of the demonstration tokens (differentiated).
      mask: ``[B, T]`` 1 on response tokens.

    Returns:
      scalar float32 loss.
    """
    return _token_mean(-_f32(logp), mask)


def reinforce(logp, mask, rewards):
    """REINFORCE with the raw sequence reward as the (token-broadcast) return.

    ``L = - sum_{i,t} m_{i,t} r_i log pi_theta(o_{i,t}) / sum_{i,t} m_{i,t}``

    Reference: R. J. Williams (1992), "Simple statistical gradient-following algorithms
    for connectionist reinforcement learning", Machine Learning 8, Eq. for the REINFORCE
    update ``Delta w = alpha (r - b) e`` with baseline ``b = 0``. Aggregation: token-mean.

    Args:
      logp: ``[B, T]`` (differentiated).
      mask: ``[B, T]``.
      rewards: ``[B]`` scalar outcome rewards (constant).
    """
    r = _sg(_f32(rewards))[:, None]
    return _token_mean(-r * _f32(logp), mask)


def gae(rewards_per_token, values, mask, gamma, lam):
    """Generalised Advantage Estimation by the textbook backward recursion.

    ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)``
    ``A_t = delta_t + gamma * lam * A_{t+1}``

    The episode of row ``i`` ends after its last valid token: the state after it is
    terminal, so ``V(s_{t+1}) = 0`` and ``A_{t+1} = 0`` there (implemented by multiplying
    the next-step value and advantage by ``mask[:, t+1]``, and taking 0 beyond ``T``).
    Advantages on padded positions are set to 0.

    Reference: Schulman, Moritz, Levine, Jordan, Abbeel (2016), "High-Dimensional
    Continuous Control Using Generalized Advantage Estimation", arXiv:1506.02438,
    Eq. (16) (``A^GAE = sum_l (gamma lam)^l delta_{t+l}``), written recursively.

    Args:
      rewards_per_token: ``[B, T]`` per-token rewards.
      values: ``[B, T]`` critic values ``V(s_t)``.
      mask: ``[B, T]`` 1 on valid tokens (prefix of each row).
      gamma: discount.
      lam: GAE lambda.

    Returns:
      ``[B, T]`` advantages (constants; wrapped in stop_gradient).
    """
    rewards_per_token = _sg(_f32(rewards_per_token))
    values = _sg(_f32(values))
    mask = _f32(mask)
    batch, horizon = values.shape
    advantages = [None] * horizon
    next_adv = jnp.zeros((batch,), jnp.float32)
    for t in reversed(range(horizon)):
        if t + 1 < horizon:
            next_mask = mask[:, t + 1]
            next_value = values[:, t + 1] * next_mask
        else:
            next_mask = jnp.zeros((batch,), jnp.float32)
            next_value = jnp.zeros((batch,), jnp.float32)
        delta = rewards_per_token[:, t] + gamma * next_value - values[:, t]
        adv_t = (delta + gamma * lam * next_mask * next_adv) * mask[:, t]
        advantages[t] = adv_t
        next_adv = adv_t
    return jnp.stack(advantages, axis=1)


def _last_token_rewards(rewards, mask):
    """Per-token rewards: ``r_i`` on the last valid token of row i, 0 elsewhere."""
    mask = _f32(mask)
    lengths = jnp.sum(mask, axis=-1).astype(jnp.int32)
    horizon = mask.shape[1]
    last = jax.nn.one_hot(jnp.maximum(lengths - 1, 0), horizon, dtype=jnp.float32)
    last = last * (lengths > 0)[:, None]
    return _f32(rewards)[:, None] * last


def ppo(logp, old_logp, mask, rewards, values, *, gamma=1.0, lam=0.95, clip_eps=0.2):
    """PPO clipped policy loss (policy term only; value loss is separate).

    ``rho_t = exp(logp_t - old_logp_t)``,
    ``L = - sum_{i,t} m min(rho A_t, clip(rho, 1-eps, 1+eps) A_t) / sum_{i,t} m``

    Advantages: :func:`gae` with per-token reward ``r_i`` on the last valid token of row i
    and 0 elsewhere, ``gamma=1.0``, ``lam=0.95``; no advantage whitening (SPEC.md).

    Reference: Schulman, Wolski, Dhariwal, Radford, Klimov (2017), "Proximal Policy
    Optimization Algorithms", arXiv:1707.06347, Eq. (7) (L^CLIP); GAE from
    arXiv:1506.02438 Eq. (16). Aggregation: token-mean.

    Args:
      logp: ``[B, T]`` (differentiated).
      old_logp: ``[B, T]`` behaviour-policy log-probs (constant).
      mask: ``[B, T]``.
      rewards: ``[B]`` outcome rewards.
      values: ``[B, T]`` critic values.
    """
    adv = gae(_last_token_rewards(rewards, mask), values, mask, gamma, lam)
    ratio = jnp.exp(_f32(logp) - _sg(_f32(old_logp)))
    obj = _ppo_clip_objective(ratio, adv, clip_eps, clip_eps)
    return _token_mean(-obj, mask)


# ----------------------------------------------------------------------------------------
# GRPO family
# ----------------------------------------------------------------------------------------


def grpo(logp, old_logp, mask, rewards, *, group_size, clip_eps=0.2, beta=0.0, ref_logp=None, eps=1e-6, ddof=0):
    """GRPO (outcome supervision) with optional k3 KL penalty in the loss.

    ``A_i = (r_i - mean_g(r)) / (std_g(r) + eps)``, std with ``ddof`` (default 0);
    ``J = (1/G) sum_i (1/|o_i|) sum_t [ min(rho A_i, clip(rho, 1-eps_c, 1+eps_c) A_i)
                                         - beta * D_KL^{k3}(pi_theta || pi_ref) ]``
    and ``L = -J`` averaged over all ``B`` rows (seq-mean-token-mean).

    Reference: Shao et al. (2024), "DeepSeekMath: Pushing the Limits of Mathematical
    Reasoning in Open Language Models", arXiv:2402.03300, Eq. (3) (objective), Eq. (4)
    (k3 KL), and Sec. 4.1.2 (outcome-supervised advantage).

    Args:
      logp, old_logp, mask: ``[B, T]``.
      rewards: ``[B]``, ``B = num_groups * group_size``.
      group_size: G, rows per question.
      clip_eps: PPO clip range.
      beta: KL coefficient (0 disables the term; then ``ref_logp`` may be None).
      ref_logp: ``[B, T]`` reference log-probs (constant) for the k3 term.
      eps: added to the group std.
      ddof: 0 (population std, default) or 1 (sample std), SPEC ``std_ddof``.
    """
    logp = _f32(logp)
    mean, std = _group_mean_std(_sg(rewards), group_size, ddof)
    adv = ((_f32(rewards) - mean) / (std + eps))[:, None]
    ratio = jnp.exp(logp - _sg(_f32(old_logp)))
    per_token = _ppo_clip_objective(ratio, _sg(adv), clip_eps, clip_eps)
    if beta != 0.0:
        per_token = per_token - beta * k3(logp, ref_logp)
    return jnp.mean(_row_mean(-per_token, mask))


def dr_grpo(logp, old_logp, mask, rewards, *, group_size, clip_eps=0.2, max_len=None):
    """Dr. GRPO ("GRPO done right"): no std normalisation, no per-response length division.

    ``A_i = r_i - mean_g(r)``;
    ``L = -(1/B) sum_i sum_t m min(rho A_i, clip(rho, 1-eps, 1+eps) A_i) / L_const``
    with ``L_const = max_len`` (defaults to ``T``, SPEC.md: seq-mean-token-sum-norm).

    Reference: Liu et al. (2025), "Understanding R1-Zero-Like Training: A Critical
    Perspective", arXiv:2503.20783, Sec. 3.2, the Dr. GRPO objective (the GRPO objective
    with the ``1/|o_i|`` and ``std`` terms removed; constant normaliser in their code).

    Args:
      logp, old_logp, mask: ``[B, T]``; rewards ``[B]``; group_size G.
      max_len: the constant ``L``; ``None`` means ``T = logp.shape[1]``.
    """
    logp = _f32(logp)
    horizon = logp.shape[1] if max_len is None else max_len
    mean, _ = _group_mean_std(_sg(rewards), group_size)
    adv = _sg(_f32(rewards) - mean)[:, None]
    ratio = jnp.exp(logp - _sg(_f32(old_logp)))
    per_token = _ppo_clip_objective(ratio, adv, clip_eps, clip_eps)
    per_row = jnp.sum(-per_token * _f32(mask), axis=-1) / horizon
    return jnp.mean(per_row)


def dapo(logp, old_logp, mask, rewards, *, group_size, eps_low=0.2, eps_high=0.28, eps=1e-6, ddof=0):
    """DAPO policy loss: clip-higher and token-level (token-mean) aggregation.

    ``A_i = (r_i - mean_g(r)) / (std_g(r) + eps)``;
    ``L = - sum_{i,t} m min(rho A_i, clip(rho, 1-eps_low, 1+eps_high) A_i) / sum_{i,t} m``
    (the normaliser is the total number of tokens in the batch).

    Reference: Yu et al. (2025), "DAPO: An Open-Source LLM Reinforcement Learning System
    at Scale", arXiv:2503.14476, Sec. 3 (the J_DAPO objective of Algorithm 1 with the
    group-normalised advantage). Dynamic
    sampling and the overlong penalty act on data/rewards and are not part of this loss.
    """
    logp = _f32(logp)
    mean, std = _group_mean_std(_sg(rewards), group_size, ddof)
    adv = _sg((_f32(rewards) - mean) / (std + eps))[:, None]
    ratio = jnp.exp(logp - _sg(_f32(old_logp)))
    per_token = _ppo_clip_objective(ratio, adv, eps_low, eps_high)
    return _token_mean(-per_token, mask)


def gspo(logp, old_logp, mask, rewards, *, group_size, eps_low=3e-4, eps_high=4e-4, eps=1e-6, ddof=0):
    """GSPO: sequence-level, length-normalised importance ratio with sequence clipping.

    ``s_i = (pi_theta(y_i|x) / pi_old(y_i|x))^{1/|y_i|}
          = exp( (1/|y_i|) sum_t m (logp - old_logp) )``;
    ``A_i = (r_i - mean_g(r)) / (std_g(r) + eps)``;
    ``L = -(1/B) sum_i min(s_i A_i, clip(s_i, 1-eps_low, 1+eps_high) A_i)``.
    The gradient flows through ``s_i`` (one term per sequence: seq-mean).

    Reference: Zheng et al. (2025), "Group Sequence Policy Optimization",
    arXiv:2507.18071, Sec. 4.1 (the J_GSPO objective, its group-normalised advantage and
    the length-normalised sequence ratio ``s_i``).
    """
    logp = _f32(logp)
    mean, std = _group_mean_std(_sg(rewards), group_size, ddof)
    adv = _sg((_f32(rewards) - mean) / (std + eps))
    log_s = _row_mean(logp - _sg(_f32(old_logp)), mask)
    s = jnp.exp(log_s)
    per_seq = jnp.minimum(s * adv, jnp.clip(s, 1.0 - eps_low, 1.0 + eps_high) * adv)
    return jnp.mean(-per_seq)


def cispo(logp, old_logp, mask, rewards, *, group_size, eps_low=1e9, eps_high=0.28, eps=1e-6, ddof=0):
    """CISPO: clipped, stop-gradient importance-sampling weight on a REINFORCE term.

    ``r_t = exp(logp - old_logp)``, ``w_t = sg(clip(r_t, 1-eps_low, 1+eps_high))``;
    ``A_i = (r_i - mean_g(r)) / (std_g(r) + eps)``;
    ``L = - sum_{i,t} m w_t A_i log pi_theta(o_{i,t}) / sum_{i,t} m``.
    No token is ever dropped: the gradient of every token is kept, only its weight is
    capped. ``eps_low=1e9`` means no lower clip.

    Reference: MiniMax et al. (2025), "MiniMax-M1: Scaling Test-Time Compute Efficiently
    with Lightning Attention", arXiv:2506.13585, Sec. 3.1 (the J_CISPO objective and its
    clipped IS weight). Aggregation: token-mean.
    """
    logp = _f32(logp)
    mean, std = _group_mean_std(_sg(rewards), group_size, ddof)
    adv = _sg((_f32(rewards) - mean) / (std + eps))[:, None]
    ratio = jnp.exp(_sg(logp) - _sg(_f32(old_logp)))
    weight = _sg(jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high))
    return _token_mean(-weight * adv * logp, mask)


def rloo(logp, old_logp, mask, rewards, *, group_size, clip_eps=0.2):
    """RLOO advantage (leave-one-out baseline) with the PPO clipped loss.

    ``A_i = r_i - (1/(G-1)) sum_{j != i} r_j``;
    ``L = - sum_{i,t} m min(rho A_i, clip(rho, 1-eps, 1+eps) A_i) / sum_{i,t} m``.

    Reference: Ahmadian et al. (2024), "Back to Basics: Revisiting REINFORCE Style
    Optimization for Learning from Human Feedback in LLMs", arXiv:2402.14740, Sec. 3
    (the RLOO estimator of Kool et al. 2019). Clip and token-mean per SPEC.md.
    """
    logp = _f32(logp)
    r = _f32(_sg(rewards)).reshape(-1, group_size)
    baseline = (jnp.sum(r, axis=1, keepdims=True) - r) / (group_size - 1)
    adv = (r - baseline).reshape(-1)[:, None]
    ratio = jnp.exp(logp - _sg(_f32(old_logp)))
    per_token = _ppo_clip_objective(ratio, adv, clip_eps, clip_eps)
    return _token_mean(-per_token, mask)


def reinforce_pp(logp, old_logp, mask, rewards, *, group_size, clip_eps=0.2, eps=1e-8):
    """REINFORCE++ (baseline form): group-centred reward, then batch whitening over tokens.

    ``A0_{i,t} = r_i - mean_g(r)`` broadcast to every valid token;
    ``mu = sum m A0 / sum m``, ``sigma = sqrt(sum m (A0 - mu)^2 / sum m)`` (ddof=0, over
    all valid tokens of the batch); ``A = (A0 - mu) / (sigma + eps)``;
    ``L = - sum m min(rho A, clip(rho, 1-eps_c, 1+eps_c) A) / sum m``.

    Reference: J. Hu (2025), "REINFORCE++: A Simple and Efficient Approach for Aligning
    Large Language Models", arXiv:2501.03262, Sec. 3 (global advantage normalisation,
    ``A_norm = (A - mean_batch) / std_batch``) and the "REINFORCE++-baseline" variant
    (group mean subtracted first). Clip and token-mean per SPEC.md.
    """
    logp = _f32(logp)
    mask = _f32(mask)
    mean, _ = _group_mean_std(_sg(rewards), group_size)
    adv0 = jnp.broadcast_to((_f32(rewards) - mean)[:, None], logp.shape)
    n_tok = jnp.sum(mask)
    mu = jnp.sum(adv0 * mask) / n_tok
    sigma = jnp.sqrt(jnp.sum(((adv0 - mu) ** 2) * mask) / n_tok)
    adv = _sg((adv0 - mu) / (sigma + eps))
    ratio = jnp.exp(logp - _sg(_f32(old_logp)))
    per_token = _ppo_clip_objective(ratio, adv, clip_eps, clip_eps)
    return _token_mean(-per_token, mask)


def remax(logp, mask, rewards, baseline_rewards):
    """ReMax: REINFORCE with the greedy-decoding reward as baseline.

    ``L = - sum_{i,t} m (r_i - r_greedy_i) log pi_theta(o_{i,t}) / sum_{i,t} m``

    Reference: Li et al. (2023), "ReMax: A Simple, Effective, and Efficient Reinforcement
    Learning Method for Aligning Large Language Models", arXiv:2310.10505, Algorithm 1
    (gradient with the greedy-reward baseline). Aggregation: token-mean (SPEC.md).

    Args:
      baseline_rewards: ``[B]`` rewards of the greedy responses (constant).
    """
    adv = _sg(_f32(rewards) - _f32(baseline_rewards))[:, None]
    return _token_mean(-adv * _f32(logp), mask)


def grpo_process(logp, old_logp, mask, step_rewards, step_mask, *, group_size, clip_eps=0.2, eps=1e-6, ddof=0):
    """GRPO with process supervision, written with explicit loops over groups, rows and steps.

    For each question's group, collect the PRM rewards of all its steps,
    ``r~ = (r - mean(R)) / (std(R) + eps)`` (std ``ddof``, default 0); a token's advantage is the sum of
    ``r~`` over the steps of its row whose last token is at or after it; then GRPO's clipped
    objective with seq-mean-token-mean.

    Reference: Shao et al. (2024), DeepSeekMath, arXiv:2402.03300, Sec. 4.1.3.
    """
    import numpy as _np

    b, t = logp.shape
    sm = _np.asarray(step_mask) * _np.asarray(mask)
    sr = _np.asarray(step_rewards, _np.float64)
    adv = _np.zeros((b, t))
    for g0 in range(0, b, group_size):
        vals = [sr[i, j] for i in range(g0, g0 + group_size) for j in range(t) if sm[i, j] > 0]
        mu = _np.mean(vals) if vals else 0.0
        sd = _np.std(vals, ddof=ddof) if len(vals) > ddof else 0.0
        for i in range(g0, g0 + group_size):
            for j in range(t):
                if _np.asarray(mask)[i, j] > 0:
                    adv[i, j] = sum((sr[i, s] - mu) / (sd + eps) for s in range(j, t) if sm[i, s] > 0)
    adv = jnp.asarray(adv, jnp.float32)
    ratio = jnp.exp(_f32(logp) - _sg(_f32(old_logp)))
    per_token = _ppo_clip_objective(ratio, adv, clip_eps, clip_eps)
    return jnp.mean(_row_mean(-per_token, mask))


def rft(logp, mask, rewards, *, threshold=0.5):
    """Rejection-sampling fine-tuning: the NLL of the verifier-accepted rollouts only.

    ``L = - sum_{i: r_i > tau} sum_t m log pi_theta(o_{i,t}) / sum_{i: r_i > tau} sum_t m``

    Reference: Yuan et al. (2023), "Scaling Relationship on Learning Mathematical Reasoning
    with Large Language Models", arXiv:2308.01825 (RFT: fine-tune on correct sampled paths);
    Zelikman et al. (2022), STaR, arXiv:2203.14465. Aggregation: token-mean over kept rows.
    """
    keep = (_f32(rewards) > threshold).astype(jnp.float32)[:, None]
    return _token_mean(-_f32(logp), _f32(mask) * keep)


# ----------------------------------------------------------------------------------------
# Preference optimisation (DPO family). Inputs are per-token log-probs; sequence
# log-probabilities are masked sums (DPO) or masked means (IPO as in TRL, SimPO, ORPO).
# ----------------------------------------------------------------------------------------


def dpo(
    chosen_logp,
    rejected_logp,
    chosen_mask,
    rejected_mask,
    ref_chosen_logp,
    ref_rejected_logp,
    *,
    beta=0.1,
    label_smoothing=0.0,
):
    """DPO (sigmoid loss) with conservative-DPO label smoothing.

    ``h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)]`` with
    sequence log-probs = masked token sums;
    ``L = mean_pairs[ -(1 - eps) log sigma(beta h) - eps log sigma(-beta h) ]``.

    Reference: Rafailov et al. (2023), "Direct Preference Optimization: Your Language
    Model is Secretly a Reward Model", arXiv:2305.18290, Eq. (7); label smoothing from
    Mitchell (2023), "A note on DPO with noisy preferences & relationship to IPO"
    (cDPO), as implemented in TRL's ``sigmoid`` loss.

    Args:
      chosen_logp, rejected_logp: ``[B, T]`` policy token log-probs (differentiated).
      chosen_mask, rejected_mask: ``[B, T]``.
      ref_chosen_logp, ref_rejected_logp: ``[B, T]`` reference token log-probs (constant).
    """
    pi_w = _seq_sum(chosen_logp, chosen_mask)
    pi_l = _seq_sum(rejected_logp, rejected_mask)
    ref_w = _sg(_seq_sum(ref_chosen_logp, chosen_mask))
    ref_l = _sg(_seq_sum(ref_rejected_logp, rejected_mask))
    h = (pi_w - ref_w) - (pi_l - ref_l)
    losses = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * h) - label_smoothing * jax.nn.log_sigmoid(-beta * h)
    return jnp.mean(losses)


def ipo(chosen_logp, rejected_logp, chosen_mask, rejected_mask, ref_chosen_logp, ref_rejected_logp, *, beta=0.1):
    """IPO: squared loss on the preference log-ratio margin.

    ``h = [avg log pi(y_w) - avg log pi_ref(y_w)] - [avg log pi(y_l) - avg log pi_ref(y_l)]``
    with length-averaged (masked mean) log-probs for policy *and* reference, as in TRL;
    ``L = mean_pairs (h - 1/(2 beta))^2``  (``beta`` is the paper's ``tau``).

    Reference: Azar et al. (2023), "A General Theoretical Paradigm to Understand Learning
    from Human Preferences", arXiv:2310.12036, Eq. (17) (empirical IPO loss).
    """
    pi_w = _seq_avg(chosen_logp, chosen_mask)
    pi_l = _seq_avg(rejected_logp, rejected_mask)
    ref_w = _sg(_seq_avg(ref_chosen_logp, chosen_mask))
    ref_l = _sg(_seq_avg(ref_rejected_logp, rejected_mask))
    h = (pi_w - ref_w) - (pi_l - ref_l)
    return jnp.mean((h - 1.0 / (2.0 * beta)) ** 2)


def simpo(chosen_logp, rejected_logp, chosen_mask, rejected_mask, *, beta=2.0, gamma=0.5):
    """SimPO: reference-free, length-normalised reward with a target margin.

    ``L = mean_pairs[ -log sigma( beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma ) ]``
    (the margin ``gamma`` is subtracted as is, not ``gamma/beta``).

    Reference: Meng, Xia, Chen (2024), "SimPO: Simple Preference Optimization with a
    Reference-Free Reward", arXiv:2405.14734, Eq. (6).
    """
    avg_w = _seq_avg(chosen_logp, chosen_mask)
    avg_l = _seq_avg(rejected_logp, rejected_mask)
    return jnp.mean(-jax.nn.log_sigmoid(beta * avg_w - beta * avg_l - gamma))


def orpo(chosen_logp, rejected_logp, chosen_mask, rejected_mask, *, lam=0.1):
    """ORPO: NLL on the chosen response plus an odds-ratio preference term.

    ``P(y) = exp(avg_t log pi(y_t))`` (length-averaged), ``odds(y) = P / (1 - P)``,
    ``log OR = log odds(y_w) - log odds(y_l)``
    ``     = (avg_w - avg_l) - (log(1 - exp(avg_w)) - log(1 - exp(avg_l)))``;
    ``L = mean_pairs[ -avg_w + lam * (-log sigma(log OR)) ]``,
    i.e. the SFT term is the chosen NLL as a token-mean *per sequence*, then averaged
    over pairs.

    Reference: Hong, Lee, Thorne (2024), "ORPO: Monolithic Preference Optimization without
    Reference Model", arXiv:2403.07691, Eq. (6) (L_ORPO = L_SFT + lambda L_OR), Eq. (7)
    (L_OR), Eq. (4) (odds).
    """
    avg_w = _seq_avg(chosen_logp, chosen_mask)
    avg_l = _seq_avg(rejected_logp, rejected_mask)
    log_odds = (avg_w - avg_l) - (jnp.log1p(-jnp.exp(avg_w)) - jnp.log1p(-jnp.exp(avg_l)))
    nll = -avg_w
    l_or = -jax.nn.log_sigmoid(log_odds)
    return jnp.mean(nll + lam * l_or)


# ----------------------------------------------------------------------------------------
# Distillation
# ----------------------------------------------------------------------------------------


def distill_fkl(student_logits, teacher_logits, mask, *, temperature=1.0, top_k=None):
    """Forward-KL distillation KL(teacher || student) per token, token-mean.

    ``p = softmax(teacher_logits / tau)``, ``log q = log_softmax(student_logits / tau)``;
    full vocabulary: ``KL_t = sum_v p(v) (log p(v) - log q(v))``.
    Top-k variant (``top_k=k``): keep the teacher's k most likely tokens and renormalise
    the teacher over them, ``p~(v) = p(v) / sum_{u in topk} p(u)`` for v in top-k; the
    student keeps its *full-vocabulary* log-softmax:
    ``KL_t = sum_{v in topk} p~(v) (log p~(v) - log q(v))``.
    No ``tau^2`` factor is applied (the tests use ``tau = 1``).
    ``L = sum_{i,t} m KL_{i,t} / sum_{i,t} m``.

    Reference: Hinton, Vinyals, Dean (2015), "Distilling the Knowledge in a Neural
    Network", arXiv:1503.02531, Sec. 2 (soft-target cross-entropy, equivalently forward
    KL up to the teacher entropy).

    Args:
      student_logits: ``[B, T, V]`` (differentiated).
      teacher_logits: ``[B, T, V]`` (constant).
      mask: ``[B, T]``.
    """
    s = _f32(student_logits) / temperature
    t = _sg(_f32(teacher_logits)) / temperature
    log_q = jax.nn.log_softmax(s, axis=-1)
    log_p = jax.nn.log_softmax(t, axis=-1)
    if top_k is None:
        kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
    else:
        top_vals, top_idx = jax.lax.top_k(log_p, top_k)  # [B, T, k]
        log_p_k = top_vals - jax.nn.logsumexp(top_vals, axis=-1, keepdims=True)
        log_q_k = jnp.take_along_axis(log_q, top_idx, axis=-1)
        kl = jnp.sum(jnp.exp(log_p_k) * (log_p_k - log_q_k), axis=-1)
    return _token_mean(kl, mask)


def distill_on_policy(logp, teacher_logp, mask):
    """On-policy (reverse-KL) distillation on the student's own samples.

    Per-token reward ``A_t = -(log pi_theta(o_t) - log pi_T(o_t))`` (stop-gradient), a
    single-sample estimate of ``-KL(pi_theta || pi_T)`` at that position; policy gradient
    ``L = - sum_{i,t} m sg(A_t) log pi_theta(o_t) / sum_{i,t} m``.

    Reference: Agarwal et al. (2024), "On-Policy Distillation of Language Models: Learning
    from Self-Generated Mistakes" (GKD), arXiv:2306.13649, Sec. 3 (on-policy objective
    with the reverse KL divergence); per-token reverse-KL advantage as in
    Lu & Thinking Machines Lab (2025),
    "On-Policy Distillation". Aggregation: token-mean.

    Args:
      logp: ``[B, T]`` student log-probs of its sampled tokens (differentiated).
      teacher_logp: ``[B, T]`` teacher log-probs of the same tokens (constant).
    """
    logp = _f32(logp)
    adv = -_sg(logp - _f32(teacher_logp))
    return _token_mean(-adv * logp, mask)


def distill_jsd(student_logits, teacher_logits, mask, beta=0.5, *, temperature=1.0):
    """Generalised Jensen-Shannon divergence JSD(beta) between teacher and student.

    ``p = teacher``, ``q = student`` (softmax at temperature ``tau``),
    ``M = beta p + (1 - beta) q``,
    ``JSD_beta = beta KL(p || M) + (1 - beta) KL(q || M)`` per token;
    ``L = sum_{i,t} m JSD_{i,t} / sum_{i,t} m``.
    The mixture form vanishes identically at ``beta = 0`` and ``beta = 1``; as in TRL's
    ``generalized_jsd_loss`` these end points are defined as the limits the paper
    describes: ``beta = 0`` -> forward ``KL(p || q)``, ``beta = 1`` -> reverse
    ``KL(q || p)``.

    Reference: Agarwal et al. (2024), "On-Policy Distillation of Language Models: Learning
    from Self-Generated Mistakes" (GKD), arXiv:2306.13649, Sec. 3 (definition of the
    generalised JSD(beta)); TRL ``GKDTrainer.generalized_jsd_loss``.

    Args:
      student_logits: ``[B, T, V]`` (differentiated).
      teacher_logits: ``[B, T, V]`` (constant).
      mask: ``[B, T]``.
      beta: interpolation coefficient in [0, 1].
    """
    log_q = jax.nn.log_softmax(_f32(student_logits) / temperature, axis=-1)
    log_p = jax.nn.log_softmax(_sg(_f32(teacher_logits)) / temperature, axis=-1)
    p, q = jnp.exp(log_p), jnp.exp(log_q)
    if beta == 0.0:
        per_tok = jnp.sum(p * (log_p - log_q), axis=-1)
    elif beta == 1.0:
        per_tok = jnp.sum(q * (log_q - log_p), axis=-1)
    else:
        log_m = jnp.logaddexp(log_p + jnp.log(beta), log_q + jnp.log(1.0 - beta))
        kl_p_m = jnp.sum(p * (log_p - log_m), axis=-1)
        kl_q_m = jnp.sum(q * (log_q - log_m), axis=-1)
        per_tok = beta * kl_p_m + (1.0 - beta) * kl_q_m
    return _token_mean(per_tok, mask)


# ----------------------------------------------------------------------------------------
# Mixed on-/off-policy recipes: LUFFY, SRFT, HPT
# ----------------------------------------------------------------------------------------


def luffy(logp, old_logp, mask, rewards, *, group_size, clip_eps=0.2, shaping_gamma=0.1, eps=1e-6, ddof=0):
    """LUFFY: mixed-policy GRPO with one off-policy demonstration per group.

    Layout: each group of ``group_size`` contiguous rows holds ``group_size - 1`` on-policy
    rollouts followed by the demonstration (last row of the group).

    * Advantage over the union of rollouts and demonstration:
      ``A_i = (r_i - mean(group)) / (std(group) + eps)``, std ``ddof`` (default 0).
    * Rollout tokens: ``min(rho A_i, clip(rho, 1-eps_c, 1+eps_c) A_i)`` with
      ``rho = exp(logp - old_logp)``.
    * Demonstration tokens: behaviour policy unknown, ``pi_ref = 1`` so the ratio is
      ``pi_theta(o_t)``; no clipping; policy shaping ``f(x) = x / (x + gamma)``:
      term ``f(pi_theta(o_t)) A_i``. (``old_logp`` of demo rows is ignored.)
    * ``L = - sum over all valid tokens of all rows / total number of valid tokens``.

    Reference: Yan et al. (2025), "Learning to Reason under Off-Policy Guidance" (LUFFY),
    arXiv:2504.14945, Sec. 3 (mixed-policy GRPO: advantage over G_on U G_off, the mixed
    objective with its 1/Z token normalisation, and regularised importance sampling by
    policy shaping ``f(x) = x/(x+gamma)``, gamma = 0.1).
    """
    logp = _f32(logp)
    mask = _f32(mask)
    batch = logp.shape[0]
    mean, std = _group_mean_std(_sg(rewards), group_size, ddof)
    adv = _sg((_f32(rewards) - mean) / (std + eps))[:, None]
    is_demo = (jnp.arange(batch) % group_size == group_size - 1)[:, None]
    # On-policy rollouts: PPO clip.
    ratio = jnp.exp(logp - _sg(_f32(old_logp)))
    on_obj = _ppo_clip_objective(ratio, adv, clip_eps, clip_eps)
    # Off-policy demonstration: shaped probability, pi_ref = 1, no clip.
    prob = jnp.exp(logp)
    off_obj = prob / (prob + shaping_gamma) * adv
    per_token = jnp.where(is_demo, off_obj, on_obj)
    return _token_mean(-per_token, mask)


def srft(
    logp,
    mask,
    rewards,
    entropy,
    demo_logp,
    demo_mask,
    demo_entropy,
    *,
    group_size,
    demo_rewards=None,
    clip_eps=0.2,
    sft_coef=0.5,
    rl_coef=0.1,
    eps=1e-6,
    ddof=0,
):
    """SRFT: single-stage SFT + RL with entropy-aware weights (as stated in the paper).

    Inputs: ``B = num_groups * group_size`` on-policy rollouts (``logp``, ``mask``,
    ``rewards``, per-token policy ``entropy``) and one demonstration per question
    (``demo_logp``, ``demo_mask``, ``demo_entropy`` of shape ``[num_groups, T]``;
    ``demo_rewards`` ``[num_groups]``, default all 1: demonstrations are correct).
    Entropies are constants. For a row, ``H_i = sum_t m H_{i,t} / sum_t m`` is the
    mean-token policy entropy of that row.

    ``L_SRFT = L_SFT^demo + L_RL^demo + L_RL^self`` (paper Eq. 12), each term a token-mean
    over its own tokens:

    1. ``L_SFT^demo``: demo NLL with per-demo weight
       ``w_SFT,j = sft_coef * exp(-H_demo_j)`` (stop-gradient; sft_coef = 0.5):
       ``sum_{j,t} dm w_SFT,j (-demo_logp) / sum dm``.
    2. ``L_RL^demo``: demonstrations joined to their question's group for the advantage,
       ``A_j = (R_demo_j - mean(G rollouts + demo)) / (std(...) + eps)`` (``ddof``, default 0); the
       behaviour policy of a demo is unknown and set to 1, so the ratio is
       ``pi_theta(y_t) = exp(demo_logp)``; PPO-clipped:
       ``- sum dm min(pi A_j, clip(pi, 1-eps_c, 1+eps_c) A_j) / sum dm``.
       (For ``A_j >= 0`` -- always the case with a correct demo and rewards in [0, 1] --
       the clip is inactive and this equals ``- A_j pi``.)
    3. ``L_RL^self``: on-policy REINFORCE with rewards +1/-1 split into positive and
       negative samples (paper Sec. 4.2), positives weighted by
       ``w_RL,i = rl_coef * exp(+H_i)`` (stop-gradient; rl_coef = 0.1):
       ``sum_{i,t} m [ pos_i w_RL,i (-logp) + neg_i logp ] / sum m``, with
       ``pos_i = (r_i > 0.5)``, ``neg_i = 1 - pos_i``. No importance ratio and no clip
       (the term is on-policy, gradient = grad log pi); no group-normalised advantage.

    Reference: Fu et al. (2025), "SRFT: A Single-Stage Method with Supervised and
    Reinforcement Fine-Tuning for Reasoning", arXiv:2506.19767, Sec. 4: the weighted
    demo SFT loss with ``w_SFT = 0.5 * sg(exp(-H(pi_theta)))``, the demo off-policy RL
    term, the self-rollout positive/negative decomposition with
    ``w_RL = 0.1 * sg(exp(H(pi_theta)))``, and Eq. 12 (the sum of the three). The
    weights' signs and constants agree with the SRFT reproduction in the HPT authors'
    code (``mix_actor.py``, ``offline_loss_type="srft"``:
    ``sft_coef = 0.5 * exp(-H)``, ``on_coef = 0.1 * exp(H)``, H the per-row token-mean
    entropy).

    Args:
      logp, mask, entropy: ``[B, T]`` rollouts (``logp`` differentiated).
      rewards: ``[B]`` rollout rewards.
      demo_logp, demo_mask, demo_entropy: ``[num_groups, T]`` (``demo_logp``
        differentiated).
      group_size: G rollouts per question.
      demo_rewards: ``[num_groups]`` or None (= 1).
    """
    logp = _f32(logp)
    demo_logp = _f32(demo_logp)
    mask = _f32(mask)
    demo_mask = _f32(demo_mask)
    rewards = _sg(_f32(rewards))
    num_groups = demo_logp.shape[0]
    if demo_rewards is None:
        demo_rewards = jnp.ones((num_groups,), jnp.float32)
    demo_rewards = _sg(_f32(demo_rewards))

    # 1. SFT on demonstrations, entropy-aware weight (decreases with entropy).
    h_demo = _sg(_row_mean(_f32(demo_entropy), demo_mask))
    w_sft = sft_coef * jnp.exp(-h_demo)
    l_sft = _token_mean(w_sft[:, None] * (-demo_logp), demo_mask)

    # 2. Off-policy RL on demonstrations (pi_beta = 1), advantage over group U demo.
    demo_adv = []
    r_groups = rewards.reshape(num_groups, group_size)
    for j in range(num_groups):
        union = jnp.concatenate([r_groups[j], demo_rewards[j : j + 1]])
        mean = jnp.mean(union)
        std = jnp.sqrt(jnp.sum((union - mean) ** 2) / (group_size + 1 - ddof))
        demo_adv.append((demo_rewards[j] - mean) / (std + eps))
    demo_adv = _sg(jnp.stack(demo_adv))[:, None]
    prob = jnp.exp(demo_logp)
    demo_obj = _ppo_clip_objective(prob, demo_adv, clip_eps, clip_eps)
    l_rl_demo = _token_mean(-demo_obj, demo_mask)

    # 3. Self-rollout RL: positives (weighted, SFT-like) and negatives (unlikelihood).
    h_roll = _sg(_row_mean(_f32(entropy), mask))
    w_rl = rl_coef * jnp.exp(h_roll)
    pos = (rewards > 0.5).astype(jnp.float32)
    neg = 1.0 - pos
    per_token = (pos * w_rl)[:, None] * (-logp) + neg[:, None] * logp
    l_rl_self = _token_mean(per_token, mask)

    return l_sft + l_rl_demo + l_rl_self


def hpt(
    logp,
    old_logp,
    mask,
    rewards,
    demo_logp,
    demo_mask,
    *,
    group_size,
    variant="paper_text",
    gate=0.0,
    clip_eps=0.2,
    eps=1e-6,
    max_len=None,
    offline="sft",
    shaping_gamma=0.1,
    sft_loss_coef=1.0,
    ddof=0,
):
    """HPT: per-question switch between RL on the rollouts and SFT on the demonstration.

    For question j with G rollouts: ``P_j = mean_g(r > 0.5)``. If ``P_j > gate`` the
    question contributes its G rollouts to the RL term (alpha=1, beta=0); otherwise
    (``P_j <= gate``) it contributes its demonstration to the SFT term (alpha=0, beta=1);
    ``L = L_RL + sft_loss_coef * L_SFT`` (the paper: coefficient 1). Default ``gate = 0``.

    ``variant="paper_text"`` (paper Eq. 11 / the GRPO-style text):
      ``A_i = (r_i - mean_g) / (std_g + eps)`` (``ddof``, default 0), PPO clip ``eps_c = 0.2``;
      ``L_RL = - sum_{RL rows} sum_t m min(rho A, clip(rho) A) / sum_{RL rows} sum_t m``
      (token-mean over the rollouts of RL-routed questions; 0 if there are none);
      ``L_SFT = - sum_{SFT demos} sum_t dm demo_logp / sum_{SFT demos} sum_t dm``
      (token-mean over the demonstrations of SFT-routed questions; 0 if none).

    ``variant="released_code"`` (the authors' released script ``exp_scripts/train.sh``:
    ``offline_loss_type=sft``, ``grpo_use_std=False``, ``loss_remove_clip=True``,
    ``loss_remove_token_mean=True``, ``sft_loss_coef=1.0``; the loss is built in
    ``mix_src/mix_actor.py::MIXDataParallelPPOActor.update_policy`` as
    ``pg_loss + sft_loss_coef * sft_loss``):
      RL part (``core_algos.compute_policy_loss`` on the on-policy rows):
      ``A_i = r_i - mean_g`` and no clip (ratio ``rho = exp(logp - old_logp)``),
      ``L_RL = - sum_{RL rows} sum_t m rho A / (L_const * n_rows)``
      with ``L_const = max_len`` (default ``T = logp.shape[1]``) and
      ``n_rows = G * (#RL-routed questions) + (#SFT-routed questions)``, the number of
      rows left in the batch after the switch (rollouts of SFT-routed questions are
      dropped, one demonstration row is added per SFT-routed question);
      SFT part (``mix_core_alg.compute_sft_pure_loss`` on the demonstration rows): the
      NLL averaged over all demonstration tokens of SFT-routed questions together,
      ``L_SFT = - sum_{SFT demos} sum_t dm demo_logp / sum_{SFT demos} sum_t dm``
      (0 if there are none);
      ``L = L_RL + sft_loss_coef * L_SFT`` (the coefficient scales the SFT part only).

    ``offline`` (paper_text only; the offline-signal ablation): what an SFT-routed question
    learns from its demonstration: ``"sft"`` (``L_SFT`` above), ``"rl"`` (off-policy RL
    on the demonstration as in LUFFY: ``pi_ref = 1``, shaped ``f(pi) = pi / (pi + shaping_gamma)``,
    ``A_demo = (1 - mean(r_1..r_G, 1)) / (std(r_1..r_G, 1) + eps)`` over the question's rollouts
    and its demo, ``L_RLdemo = - sum_{SFT demos} sum_t dm f(pi) A_demo / sum_{SFT demos} sum_t dm``)
    or ``"both"`` (``L_SFT + L_RLdemo``).

    Reference: Lv et al. (2025), "Towards a Unified View of Large Language Model
    Post-Training", arXiv:2509.04419, Sec. 4 (Hybrid Post-Training: Eq. 11 and its
    algorithm box); released code github.com/TsinghuaC3I/Unify-Post-Training
    (``exp_scripts/train.sh``, ``hpt/verl/verl/mix_src/mix_actor.py``,
    ``mix_src/mix_core_alg.py::compute_sft_pure_loss``,
    ``verl/trainer/ppo/core_algos.py::compute_policy_loss``).

    Args:
      logp, old_logp, mask: ``[B, T]`` rollouts, ``B = num_groups * group_size``.
      rewards: ``[B]``.
      demo_logp, demo_mask: ``[num_groups, T]`` one demonstration per question
        (``demo_logp`` differentiated).
      variant: ``"paper_text"`` or ``"released_code"``.
      gate: the threshold gamma on P.
      sft_loss_coef: multiplies the SFT part (the released ``sft_loss_coef``, default 1).
    """
    logp = _f32(logp)
    demo_logp = _f32(demo_logp)
    mask = _f32(mask)
    demo_mask = _f32(demo_mask)
    rewards = _sg(_f32(rewards))
    num_groups = demo_logp.shape[0]

    success = (rewards > 0.5).astype(jnp.float32).reshape(num_groups, group_size)
    p_solved = jnp.mean(success, axis=1)
    rl_q = (p_solved > gate).astype(jnp.float32)  # [num_groups]
    sft_q = 1.0 - rl_q
    rl_rows = jnp.repeat(rl_q, group_size)[:, None]  # [B, 1]
    rl_mask = mask * rl_rows
    sft_mask = demo_mask * sft_q[:, None]

    mean, std = _group_mean_std(rewards, group_size, ddof)
    ratio = jnp.exp(logp - _sg(_f32(old_logp)))

    if variant == "paper_text":
        adv = ((rewards - mean) / (std + eps))[:, None]
        obj = _ppo_clip_objective(ratio, adv, clip_eps, clip_eps)
        l_rl = jnp.sum(-obj * rl_mask) / jnp.maximum(jnp.sum(rl_mask), 1.0)
        l_sft = jnp.sum(-demo_logp * sft_mask) / jnp.maximum(jnp.sum(sft_mask), 1.0)
        # off-policy RL on the demonstration: statistics over the G rollouts and the demo (r = 1)
        union = jnp.concatenate([rewards.reshape(num_groups, group_size), jnp.ones((num_groups, 1))], 1)
        u_mean = jnp.mean(union, axis=1)
        u_std = jnp.sqrt(jnp.sum((union - u_mean[:, None]) ** 2, axis=1) / (group_size + 1 - ddof))
        demo_adv = ((1.0 - u_mean) / (u_std + eps))[:, None]
        prob = jnp.exp(demo_logp)
        shaped = prob / (prob + shaping_gamma) * demo_adv
        l_rl_demo = jnp.sum(-shaped * sft_mask) / jnp.maximum(jnp.sum(sft_mask), 1.0)
        l_sft = sft_loss_coef * l_sft
        return l_rl + {"sft": l_sft, "rl": l_rl_demo, "both": l_sft + l_rl_demo}[offline]
    if variant == "released_code":
        horizon = logp.shape[1] if max_len is None else max_len
        adv = (rewards - mean)[:, None]
        n_rows = group_size * jnp.sum(rl_q) + jnp.sum(sft_q)
        pg_loss = jnp.sum(-ratio * adv * rl_mask) / (horizon * n_rows)
        n_demo_tokens = jnp.sum(sft_mask)
        sft_loss = jnp.where(n_demo_tokens > 0, jnp.sum(-demo_logp * sft_mask) / jnp.maximum(n_demo_tokens, 1.0), 0.0)
        return pg_loss + sft_loss_coef * sft_loss
    raise ValueError(f"unknown HPT variant: {variant!r}")
