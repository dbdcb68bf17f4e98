"""Advantage estimators ``Â``: per-token coefficients with no gradient.

Sequence-level estimators return ``[B]`` (broadcast over tokens by the
surrogate); token-level ones return ``[B, T]``. Group estimators take
``group_size = G`` (rows of a question are contiguous, ``B = num_groups · G``)
and an optional ``row_mask`` ``[B]``: rows with ``row_mask = 0`` are left out of
the group statistics and get advantage 0 (e.g. demonstrations in HPT's RL term,
or padding rows).

All estimators are batch-global (group or batch statistics), so compute them on
the whole batch before splitting it into micro-batches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from upt_jax.upge._common import group_view, last_token_mask, masked_whiten, safe_div, sg


def _rows(row_mask, b):
    return jnp.ones((b,), jnp.float32) if row_mask is None else jnp.asarray(row_mask, jnp.float32)


def group_statistics(rewards: jax.Array, group_size: int, row_mask: jax.Array | None = None, ddof: int = 0):
    """Per-row mean, std and count of the rewards of the row's group.

    Math: for group ``g`` with member rows ``R_g = {j : row_mask_j = 1}``,
    ``μ_g = mean_{j∈R_g} r_j``, ``σ_g = sqrt(Σ_{j∈R_g} (r_j − μ_g)² / (|R_g| − ddof))``.

    Args:
      rewards: ``[B]`` scalar rewards.
      group_size: ``G``.
      row_mask: ``[B]`` rows that take part (default all).
      ddof: 0 (population std, GRPO default) or 1.

    Returns:
      ``(mean [B], std [B], count [B])``, each row holding its group's value.
    """
    r = sg(jnp.asarray(rewards, jnp.float32))
    m = _rows(row_mask, r.shape[0])
    rg, mg = group_view(r, group_size), group_view(m, group_size)
    n = jnp.sum(mg, axis=1, keepdims=True)
    mu = safe_div(jnp.sum(rg * mg, axis=1, keepdims=True), n)
    var = safe_div(jnp.sum(jnp.square(rg - mu) * mg, axis=1, keepdims=True), n - ddof)
    sd = jnp.sqrt(jnp.maximum(var, 0.0))
    b = r.shape[0]
    return (
        jnp.broadcast_to(mu, rg.shape).reshape(b),
        jnp.broadcast_to(sd, rg.shape).reshape(b),
        jnp.broadcast_to(n, rg.shape).reshape(b),
    )


def constant_advantages(rewards: jax.Array, value: float = 1.0) -> jax.Array:
    """``Â ≡ value`` (SFT: 1): ``[B] → [B]``.

    Args:
      rewards: ``[B]`` (only the shape is used).
      value: the constant.

    Returns:
      ``[B]`` constant advantages.
    """
    return jnp.full(jnp.shape(rewards), value, jnp.float32)


def reinforce_advantages(rewards: jax.Array) -> jax.Array:
    """REINFORCE: ``Â_i = r_i`` (e.g. ±1), no baseline: ``[B] → [B]``.

    Args:
      rewards: ``[B]`` rewards.

    Returns:
      ``[B]`` advantages.
    """
    return sg(jnp.asarray(rewards, jnp.float32))


def sign_advantages(rewards: jax.Array, threshold: float = 0.5) -> jax.Array:
    """REINFORCE with ±1 outcomes: ``Â_i = +1`` if ``r_i > threshold`` else ``−1``: ``[B] → [B]``.

    Positive samples are pushed up and negative samples pushed down with unit
    weight (SRFT's self-rollout term: ``−log π(y⁺)`` and ``+log π(y⁻)``).

    Args:
      rewards: ``[B]`` rewards.
      threshold: a sample is positive when its reward exceeds this.

    Returns:
      ``[B]`` advantages in {−1, +1}.
    """
    return jnp.where(sg(jnp.asarray(rewards, jnp.float32)) > threshold, 1.0, -1.0)


def grpo_advantages(
    rewards: jax.Array, group_size: int, *, eps: float = 1e-6, row_mask: jax.Array | None = None, ddof: int = 0
) -> jax.Array:
    """GRPO group-normalised advantage: ``Â_i = (r_i − μ_g) / (σ_g + eps)``.

    ``σ_g`` is the population std (``ddof=0``) of the group's rewards. Groups whose
    rewards are all equal give ``Â = 0`` (see `zero_variance_fraction`).

    Args:
      rewards: ``[B]`` rewards, groups contiguous.
      group_size: ``G``.
      eps: added to the std.
      row_mask: ``[B]`` rows in the statistics (LUFFY: rollouts and the demo).
      ddof: std degrees of freedom.

    Returns:
      ``[B]`` advantages (0 on rows outside ``row_mask``).
    """
    r = sg(jnp.asarray(rewards, jnp.float32))
    mu, sd, _ = group_statistics(r, group_size, row_mask, ddof)
    return (r - mu) / (sd + eps) * _rows(row_mask, r.shape[0])


def dr_grpo_advantages(rewards: jax.Array, group_size: int, *, row_mask: jax.Array | None = None) -> jax.Array:
    """Dr.GRPO group-centred advantage: ``Â_i = r_i − μ_g`` (no std division).

    Args:
      rewards: ``[B]`` rewards.
      group_size: ``G``.
      row_mask: ``[B]`` rows in the statistics.

    Returns:
      ``[B]`` advantages.
    """
    r = sg(jnp.asarray(rewards, jnp.float32))
    mu, _, _ = group_statistics(r, group_size, row_mask)
    return (r - mu) * _rows(row_mask, r.shape[0])


def rloo_advantages(rewards: jax.Array, group_size: int, *, row_mask: jax.Array | None = None) -> jax.Array:
    """RLOO leave-one-out baseline: ``Â_i = r_i − (1/(n−1)) Σ_{j≠i} r_j``.

    Equivalent to ``n/(n−1) · (r_i − μ_g)``; a group with ``n = 1`` gets 0.

    Args:
      rewards: ``[B]`` rewards.
      group_size: ``G``.
      row_mask: ``[B]`` rows in the statistics.

    Returns:
      ``[B]`` advantages.
    """
    r = sg(jnp.asarray(rewards, jnp.float32))
    m = _rows(row_mask, r.shape[0])
    mu, _, n = group_statistics(r, group_size, row_mask)
    others = safe_div(mu * n - r, n - 1.0)
    return jnp.where(n > 1, r - others, 0.0) * m


def gpg_advantages(
    rewards: jax.Array,
    group_size: int,
    *,
    row_mask: jax.Array | None = None,
    scale_by_std: bool = False,
    eps: float = 1e-6,
    ddof: int = 0,
) -> jax.Array:
    """GPG (Chu et al. 2025): group-centred reward, scaled for the groups that carry no signal.

    Math: ``Â_i = α (r_i − μ_g) / F_norm`` with ``α = B / (B − M)``, ``B`` the rows taking part
    and ``M`` those in groups whose rewards are all equal (their ``Â = 0``; ``α = 1`` when every
    group is so): the gradient of the rows with signal is rescaled as if the whole batch had it.
    ``F_norm = 1`` (the paper's best), or ``σ_g + eps`` with ``scale_by_std``.

    Args:
      rewards: ``[B]`` rewards, groups contiguous.
      group_size: ``G``.
      row_mask: ``[B]`` rows taking part.
      scale_by_std: divide by the group std (``ddof`` degrees of freedom) plus ``eps``.
      eps, ddof: see ``scale_by_std``.

    Returns:
      ``[B]`` advantages (0 on rows outside ``row_mask``).
    """
    r = sg(jnp.asarray(rewards, jnp.float32))
    rows = _rows(row_mask, r.shape[0])
    _, sd, _ = group_statistics(r, group_size, row_mask, ddof)
    b, flat = jnp.sum(rows), jnp.sum(rows * (sd == 0))
    alpha = jnp.where(flat < b, safe_div(b, b - flat), 1.0)
    norm = sd + eps if scale_by_std else 1.0
    return alpha * dr_grpo_advantages(r, group_size, row_mask=row_mask) / norm


def remax_advantages(rewards: jax.Array, baseline_rewards: jax.Array) -> jax.Array:
    """ReMax: ``Â_i = r_i − r(greedy_i)``, the reward of the greedy response as baseline.

    Args:
      rewards: ``[B]`` rewards of the sampled responses.
      baseline_rewards: ``[B]`` rewards of the greedy responses to the same prompts.

    Returns:
      ``[B]`` advantages.
    """
    return sg(jnp.asarray(rewards, jnp.float32) - jnp.asarray(baseline_rewards, jnp.float32))


def last_token_rewards(rewards: jax.Array, mask: jax.Array) -> jax.Array:
    """Places each sequence reward on its last valid token: ``[B] → [B, T]``.

    Math: ``r_{i,t} = r_i · 1[t = last valid token of row i]``.

    Args:
      rewards: ``[B]`` outcome rewards.
      mask: ``[B, T]`` mask.

    Returns:
      ``[B, T]`` token rewards.
    """
    return sg(jnp.asarray(rewards, jnp.float32))[:, None] * last_token_mask(mask)


def reward_to_go(token_rewards: jax.Array, mask: jax.Array, gamma: float = 1.0) -> jax.Array:
    """Discounted return-to-go ``G_t = Σ_{s≥t, valid} γ^{(#valid between)} r_s``: ``[B, T] → [B, T]``.

    Padding positions are skipped (they neither add reward nor discount).

    Args:
      token_rewards: ``[B, T]`` per-token rewards.
      mask: ``[B, T]`` mask.
      gamma: discount ``γ``.

    Returns:
      ``[B, T]`` returns (0 on padding).
    """
    m = jnp.asarray(mask, jnp.float32)

    def step(carry, xs):
        r_t, m_t = xs
        g = r_t + gamma * carry
        return jnp.where(m_t > 0, g, carry), jnp.where(m_t > 0, g, 0.0)

    _, out = jax.lax.scan(step, jnp.zeros(m.shape[0]), (sg(token_rewards).T * m.T, m.T), reverse=True)
    return out.T


def process_advantages(
    step_rewards: jax.Array, step_mask: jax.Array, mask: jax.Array, group_size: int, eps: float = 1e-6, ddof: int = 0
) -> jax.Array:
    """Process-supervised GRPO advantages (Shao et al. 2024, DeepSeekMath §4.1.3).

    A process reward model scores each reasoning step; its score sits at the step's last
    token (``step_mask``). Step rewards are normalised over all steps of the question's group,
    then each token's advantage is the sum of the normalised rewards of the steps ending at or
    after it:

        r̃_s = (r_s − mean_group(r)) / (std_group(r) + ε),      Â_t = Σ_{s: end(s) ≥ t} r̃_s

    Args:
      step_rewards: ``[B, T]`` PRM scores at step ends (ignored elsewhere).
      step_mask: ``[B, T]`` 1 at the last token of each step.
      mask: ``[B, T]`` response mask.
      group_size: ``G`` rows per question (contiguous).
      eps: ``ε``.
      ddof: degrees of freedom of the std over the group's steps (0: population).

    Returns:
      ``[B, T]`` advantages, no gradient, 0 on padding.
    """
    sm = jnp.asarray(step_mask, jnp.float32) * jnp.asarray(mask, jnp.float32)
    r = sg(jnp.asarray(step_rewards, jnp.float32))
    b, t = r.shape
    rg, mg = r.reshape(b // group_size, group_size * t), sm.reshape(b // group_size, group_size * t)
    n = jnp.maximum(jnp.sum(mg, 1, keepdims=True), 1.0)
    mean = jnp.sum(rg * mg, 1, keepdims=True) / n
    std = jnp.sqrt(safe_div(jnp.sum(jnp.square(rg - mean) * mg, 1, keepdims=True), n - ddof))
    norm = (((rg - mean) / (std + eps)) * mg).reshape(b, t)
    return reward_to_go(norm, mask)


def gae_advantages(token_rewards: jax.Array, values: jax.Array, mask: jax.Array, gamma: float = 1.0, lam: float = 0.95):
    """Generalised Advantage Estimation (Schulman et al. 2016) with a critic.

    Math (over valid positions, ``V`` after the last valid token is 0):

        δ_t = r_t + γ V_{t+1} − V_t,      Â_t = δ_t + γλ Â_{t+1},      R_t = Â_t + V_t

    Padding positions are skipped (so masks with holes, e.g. tool output, work).
    With an outcome reward use ``token_rewards = last_token_rewards(r, mask)``.

    Args:
      token_rewards: ``[B, T]`` per-token rewards.
      values: ``[B, T]`` critic values ``V(s_t)``.
      mask: ``[B, T]`` mask.
      gamma: discount ``γ``.
      lam: GAE ``λ``.

    Returns:
      ``(advantages [B, T], returns [B, T])``, no gradient, 0 on padding.
    """
    m = jnp.asarray(mask, jnp.float32)
    r = sg(jnp.asarray(token_rewards, jnp.float32))
    v = sg(jnp.asarray(values, jnp.float32))

    def step(carry, xs):
        next_v, next_a = carry
        r_t, v_t, m_t = xs
        delta = r_t + gamma * next_v - v_t
        a_t = delta + gamma * lam * next_a
        valid = m_t > 0
        new = (jnp.where(valid, v_t, next_v), jnp.where(valid, a_t, next_a))
        return new, jnp.where(valid, a_t, 0.0)

    init = (jnp.zeros(m.shape[0]), jnp.zeros(m.shape[0]))
    _, adv = jax.lax.scan(step, init, (r.T, v.T, m.T), reverse=True)
    adv = adv.T
    return adv, jnp.where(m > 0, adv + v, 0.0)


def reinforce_pp_advantages(
    token_rewards: jax.Array, mask: jax.Array, *, eps: float = 1e-8, row_mask: jax.Array | None = None
) -> jax.Array:
    """REINFORCE++ (Hu 2025): return-to-go of token rewards, whitened over the batch.

    Math: ``G_{i,t} = Σ_{s≥t} r_{i,s}`` with ``r_{i,s} = r_i 1[s = last] − β k_{i,s}``
    (the KL penalty folded into the token reward, see `kl_penalised_rewards`),
    then ``Â = (G − μ) / (σ + eps)`` with ``μ, σ`` over all valid tokens of the batch.

    Args:
      token_rewards: ``[B, T]`` per-token rewards.
      mask: ``[B, T]`` mask.
      eps: whitening epsilon.
      row_mask: ``[B]`` rows taking part.

    Returns:
      ``[B, T]`` advantages.
    """
    m = jnp.asarray(mask, jnp.float32) * _rows(row_mask, mask.shape[0])[:, None]
    return masked_whiten(reward_to_go(token_rewards, m), m, eps)


def reinforce_pp_baseline_advantages(
    rewards: jax.Array, mask: jax.Array, group_size: int, *, eps: float = 1e-8, row_mask: jax.Array | None = None
) -> jax.Array:
    """REINFORCE++-baseline: group-centred reward, then whitened over the batch.

    Math: ``Â_{i,t} = (a_i − μ) / (σ + eps)`` with ``a_i = r_i − mean_g(r)`` and
    ``μ, σ`` the mean and population std of ``a_i`` over all valid *tokens* of the
    batch (longer sequences weigh more).

    Args:
      rewards: ``[B]`` rewards.
      mask: ``[B, T]`` mask.
      group_size: ``G``.
      eps: whitening epsilon.
      row_mask: ``[B]`` rows taking part.

    Returns:
      ``[B, T]`` advantages.
    """
    rows = _rows(row_mask, mask.shape[0])
    a = dr_grpo_advantages(rewards, group_size, row_mask=row_mask)
    m = jnp.asarray(mask, jnp.float32) * rows[:, None]
    return masked_whiten(jnp.broadcast_to(a[:, None], m.shape), m, eps)


def teacher_log_ratio_advantages(logp: jax.Array, teacher_logp: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """On-policy distillation: ``Â_t = −(sg(log π_θ) − log π_teacher)`` per token.

    With `current_policy_reference` on the student's own samples the surrogate's
    gradient is ``E_{π_θ}[(log π_θ − log π_T) ∇log π_θ] = ∇KL(π_θ ‖ π_T)``
    (reverse KL, unbiased per sampled token).

    Args:
      logp: ``[B, T]`` student log-probs of its own samples.
      teacher_logp: ``[B, T]`` teacher log-probs of the same tokens.
      mask: ``[B, T]`` mask (optional; zeroes padding).

    Returns:
      ``[B, T]`` advantages.
    """
    a = -(sg(logp) - sg(teacher_logp))
    return a if mask is None else jnp.where(mask > 0, a, 0.0)


def zero_variance_fraction(rewards: jax.Array, group_size: int, row_mask: jax.Array | None = None) -> jax.Array:
    """Fraction of groups whose rewards are all equal (they give ``Â = 0`` in GRPO).

    Only groups with at least one row in ``row_mask`` count.

    Args:
      rewards: ``[B]`` rewards.
      group_size: ``G``.
      row_mask: ``[B]`` rows taking part.

    Returns:
      Scalar ``[]`` in ``[0, 1]``.
    """
    r = jnp.asarray(rewards, jnp.float32)
    m = group_view(_rows(row_mask, r.shape[0]), group_size)
    rg = group_view(r, group_size)
    big = jnp.finfo(jnp.float32).max
    hi = jnp.max(jnp.where(m > 0, rg, -big), axis=1)
    lo = jnp.min(jnp.where(m > 0, rg, big), axis=1)
    present = jnp.sum(m, axis=1) > 0
    flat = present & (hi == lo)
    return safe_div(jnp.sum(flat.astype(jnp.float32)), jnp.sum(present.astype(jnp.float32)))
