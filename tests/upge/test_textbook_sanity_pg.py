"""Sanity checks of the textbook GPG, RLOO (paper form), Clip-Cov, KL-Cov, OPD+PG, KTO,
IPO (summed) and ORPO (paper form) losses, on inputs small enough to work out by hand.

These test ``tests/upge/textbook*.py`` itself (not the library).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.upge import textbook as tb
from tests.upge.sanity_checks import EPS, close, f32


# ---------------------------------------------------------------------------- GPG, RLOO


def test_gpg_correction_factor_counts_rows_of_flat_groups():
    logp = f32([[-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0]])
    mask = f32([[1, 1], [1, 0], [1, 1], [1, 0]])  # 6 valid tokens
    rewards = f32([1.0, 0.0, 1.0, 1.0])  # group 2 all-equal: M = 2 of B = 4 -> alpha = 2
    g = jax.grad(lambda lp: tb.gpg(lp, mask, rewards, group_size=2))(logp)
    a = 2.0 * 0.5
    close(g, [[-a / 6, -a / 6], [a / 6, 0.0], [0.0, 0.0], [0.0, 0.0]])
    # no flat group: alpha = 1; std scaling divides by std + eps.
    rewards = f32([1.0, 0.0, 0.0, 1.0])
    g = jax.grad(lambda lp: tb.gpg(lp, mask, rewards, group_size=2, scale_by_std=True))(logp)
    a = 0.5 / (0.5 + EPS)
    close(g, [[-a / 6, -a / 6], [a / 6, 0.0], [a / 6, a / 6], [-a / 6, 0.0]])
    # every group flat: alpha = 1, zero gradient, zero loss
    rewards = f32([1.0, 1.0, 0.0, 0.0])
    close(jax.grad(lambda lp: tb.gpg(lp, mask, rewards, group_size=2))(logp), jnp.zeros((4, 2)))


def test_rloo_paper_is_sequence_level_with_leave_one_out_baseline():
    logp = f32([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    mask = f32([[1, 1, 1], [1, 0, 0]])
    # G = 2: the baseline of each row is the other row's reward.
    rewards = f32([1.0, 0.25])
    g = jax.grad(lambda lp: tb.rloo_paper(lp, mask, rewards, group_size=2))(logp)
    close(g, [[-0.75 / 2] * 3, [0.75 / 2, 0.0, 0.0]])  # no division by the length
    close(tb.rloo_paper(logp, mask, rewards, group_size=2), -(0.75 * -6.0 - 0.75 * -1.0) / 2)
    # G = 3, rewards [1, 0, 0]: A = [1, -1/2, -1/2].
    logp3, mask3 = jnp.zeros((3, 2)), f32([[1, 1], [1, 0], [1, 1]])
    g = jax.grad(lambda lp: tb.rloo_paper(lp, mask3, f32([1.0, 0.0, 0.0]), group_size=3))(logp3)
    close(g, [[-1 / 3, -1 / 3], [0.5 / 3, 0.0], [0.5 / 3, 0.5 / 3]])
    with pytest.raises(ValueError, match="group_size"):
        tb.rloo_paper(logp, mask, rewards, group_size=1)


# ---------------------------------------------------------------------------- covariance


def test_token_covariance_is_centred_over_valid_tokens():
    logp = f32([[-1.0, -3.0, 9.0], [-2.0, 9.0, 9.0]])
    mask = f32([[1, 1, 0], [1, 0, 0]])
    adv = f32([[1.0], [-2.0]])
    # valid logp -1, -3, -2 (mean -2); valid A 1, 1, -2 (mean 0)
    close(tb.token_covariance(logp, adv, mask), [[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])


def _cov_batch():
    """G = 2, rewards {1, 0} (A = +-a); row 0's log-probs above row 1's: every Cov = a ~ 1."""
    logp = f32([[-1.0, -1.0], [-3.0, -3.0]])
    return logp, jnp.ones((2, 2)), f32([1.0, 0.0])


def _smallest(u, eligible, n):
    order = np.argsort(np.where(eligible, np.asarray(u), np.inf).ravel(), kind="stable")
    out = np.zeros(u.size, bool)
    out[order[:n]] = True
    return out.reshape(u.shape)


def test_clip_cov_detaches_random_eligible_tokens_chosen_by_the_key():
    logp, mask, rewards = _cov_batch()
    a = 0.5 / (0.5 + EPS)
    dense = np.array([[-a / 4, -a / 4], [a / 4, a / 4]])
    seen = set()
    for seed in range(6):
        key = jax.random.PRNGKey(seed)
        u = jax.random.uniform(key, (2, 2), jnp.float32)
        for ratio, n in [(2e-4, 1), (0.5, 2)]:
            fn = lambda lp: tb.clip_cov(lp, lp, mask, rewards, key, group_size=2, clip_ratio=ratio, cov_low=0.5)
            detached = _smallest(u, np.ones((2, 2), bool), n)
            close(jax.grad(fn)(logp), np.where(detached, 0.0, dense))
            if n == 1:
                seen.add(int(np.argmax(detached.ravel())))
        # the same key gives the same selection
        close(
            jax.grad(lambda lp: tb.clip_cov(lp, lp, mask, rewards, key, group_size=2, cov_low=0.5))(logp),
            jax.grad(lambda lp: tb.clip_cov(lp, lp, mask, rewards, key, group_size=2, cov_low=0.5))(logp),
        )
    assert len(seen) > 1  # the key decides
    # covariance outside (cov_low, cov_high): nothing is detached, plain PPO gradient
    g = jax.grad(lambda lp: tb.clip_cov(lp, lp, mask, rewards, jax.random.PRNGKey(0), group_size=2))(
        logp
    )  # cov_low = 1 > a
    close(g, dense)


def test_clip_cov_never_selects_tokens_already_clipped_by_ppo():
    logp, mask, rewards = _cov_batch()
    a = 0.5 / (0.5 + EPS)
    key = jax.random.PRNGKey(3)
    u = np.asarray(jax.random.uniform(key, (2, 2), jnp.float32))
    first = np.unravel_index(np.argmin(u), u.shape)
    # push the token with the smallest u out of PPO's range in its advantage's direction
    sign = 1.0 if first[0] == 0 else -1.0
    old = np.asarray(logp).copy()
    old[first] -= sign * 0.5  # ratio e^{+-0.5}: clipped, zero gradient from PPO
    eligible = np.ones((2, 2), bool)
    eligible[first] = False
    detached = _smallest(u, eligible, 1) | ~eligible
    dense = np.array([[-a / 4, -a / 4], [a / 4, a / 4]]) * np.exp(np.asarray(logp) - old)
    g = jax.grad(lambda lp: tb.clip_cov(lp, f32(old), mask, rewards, key, group_size=2, cov_low=0.5))(logp)
    close(g, np.where(detached, 0.0, dense))


def test_kl_cov_penalises_the_top_covariance_tokens():
    # Covariances: row 0 tokens (lp - mean)(A - 0) with lp -1, -2 and row 1 with -3, -2:
    # lp mean -2; Cov = [a, 0 | a, 0] -> ties broken by the lower index: (0, 0) first.
    logp = f32([[-1.0, -2.0], [-3.0, -2.0]])
    mask = jnp.ones((2, 2))
    rewards = f32([1.0, 0.0])
    a = 0.5 / (0.5 + EPS)
    old = logp - f32([[0.1, 0.1], [-0.2, 0.0]])
    r = np.exp(np.asarray(logp - old))
    pg = np.array([[-a, -a], [a, a]]) * r
    g = jax.grad(lambda lp: tb.kl_cov(lp, old, mask, rewards, group_size=2))(logp)
    close(g, (pg + np.array([[1.0, 0.0], [0.0, 0.0]])) / 4)  # k = 1, d|x| = sign(0.1)
    g = jax.grad(lambda lp: tb.kl_cov(lp, old, mask, rewards, group_size=2, kl_cov_ratio=0.5, kl_coef=0.3))(logp)
    close(g, (pg + 0.3 * np.array([[1.0, 0.0], [-1.0, 0.0]])) / 4)  # k = 2: both Cov = a
    # at logp == old the penalty's gradient is sign(0) = 0: only the policy gradient remains
    g = jax.grad(lambda lp: tb.kl_cov(lp, lp, mask, rewards, group_size=2))(logp)
    close(g, np.array([[-a, -a], [a, a]]) / 4)


# ---------------------------------------------------------------------------- OPD + PG


def test_opd_pg_reduces_to_distillation_and_to_token_mean_grpo():
    rng = np.random.default_rng(0)
    logp = f32(rng.normal(size=(4, 3)) - 1.0)
    old = logp + f32(rng.normal(scale=0.3, size=(4, 3)))
    teacher = f32(rng.normal(size=(4, 3)) - 1.0)
    mask = f32([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]])
    rewards = f32([1.0, 0.0, 0.5, 0.0])
    # alpha = 0 on-policy: the reverse-KL policy gradient of distill_on_policy
    g = jax.grad(lambda lp: tb.opd_pg(lp, lp, teacher, mask, rewards, group_size=2, alpha=0.0))(logp)
    close(g, jax.grad(lambda lp: tb.distill_on_policy(lp, teacher, mask))(logp))
    # teacher = behaviour policy: the KL advantage is 0, leaving PPO-clipped token-mean GRPO
    g = jax.grad(lambda lp: tb.opd_pg(lp, old, old, mask, rewards, group_size=2, alpha=0.7))(logp)
    g_dapo = jax.grad(lambda lp: tb.dapo(lp, old, mask, rewards, group_size=2, eps_high=0.2))(logp)
    close(g, 0.7 * g_dapo)
    # on-policy, both terms: gradient -(A_kl + alpha A_out) / N
    g = jax.grad(lambda lp: tb.opd_pg(lp, lp, teacher, mask, rewards, group_size=2, alpha=2.0))(logp)
    a_out = np.array([0.5, -0.5, 0.25, -0.25]) / (np.array([0.5, 0.5, 0.25, 0.25]) + EPS)
    adv = -(np.asarray(logp) - np.asarray(teacher)) + 2.0 * a_out[:, None]
    close(g, -adv * np.asarray(mask) / 8.0, atol=1e-5)


# ---------------------------------------------------------------------------- preference


def test_kto_signs_reference_point_and_weights():
    logp = f32([[-1.0, -1.0], [-2.0, -1.0]])
    ref = logp  # r_i = 0
    mask = f32([[1, 1], [1, 0]])
    labels = f32([1.0, 0.0])
    beta = 0.1
    fn = lambda lp, z=0.0, ld=1.0, lu=1.0: tb.kto(lp, ref, mask, labels, kl_ref=z, beta=beta, lambda_d=ld, lambda_u=lu)
    # r = z_0: every value is lambda * sigma(0) = lambda / 2
    close(fn(logp), 0.5)
    g = jax.grad(fn)(logp)
    close(g, [[-beta / 4 / 2, -beta / 4 / 2], [beta / 4 / 2, 0.0]])  # desirable up, undesirable down
    close(fn(logp, 0.0, 2.0, 0.5), (2.0 * 0.5 + 0.5 * 0.5) / 2)  # lambda_y (1 - sigma(0))
    g = jax.grad(lambda lp: fn(lp, 0.0, 2.0, 0.5))(logp)
    close(g, [[-2.0 * beta / 4 / 2] * 2, [0.5 * beta / 4 / 2, 0.0]])
    # a higher reference point makes the desirable row's loss larger, the undesirable's smaller
    s = 1.0 / (1.0 + math.exp(-beta * 3.0))
    close(tb.kto(logp, ref, mask, f32([1.0, 1.0]), kl_ref=3.0), s)  # 1 - sigma(-0.3)
    close(tb.kto(logp, ref, mask, f32([0.0, 0.0]), kl_ref=3.0), 1.0 - s)  # 1 - sigma(0.3)
    assert float(jnp.abs(jax.grad(lambda z: fn(logp, z))(3.0))) == 0.0  # z_0 is a constant
    with pytest.raises(ValueError, match="labels"):
        tb.kto(logp, ref, mask, f32([1.0, 0.5]), kl_ref=0.0)


def test_ipo_paper_minimum_at_half_inverse_beta_with_summed_log_ratios():
    cm, rm = f32([[1, 1, 0]]), f32([[1, 0, 0]])
    ref_c, ref_r = f32([[-1.0, -1.0, 0.0]]), f32([[-1.0, 0.0, 0.0]])
    # h = (sum chosen - sum ref chosen) - (sum rejected - sum ref rejected) = 5 = 1/(2 * 0.1)
    chosen = ref_c + f32([[2.0, 1.0, 7.0]])
    rejected = ref_r + f32([[-2.0, 7.0, 7.0]])
    close(tb.ipo_paper(chosen, rejected, cm, rm, ref_c, ref_r), 0.0, atol=1e-5)
    gc, gr = jax.grad(tb.ipo_paper, argnums=(0, 1))(chosen, rejected, cm, rm, ref_c, ref_r)
    close(gc, jnp.zeros_like(gc), atol=1e-5)
    close(gr, jnp.zeros_like(gr), atol=1e-5)
    # h = 0: L = 25, dL/dh = -10 on every chosen token (not divided by the length)
    gc, gr = jax.grad(tb.ipo_paper, argnums=(0, 1))(ref_c, ref_r, cm, rm, ref_c, ref_r)
    close(gc, [[-10.0, -10.0, 0.0]], atol=1e-4)
    close(gr, [[10.0, 0.0, 0.0]], atol=1e-4)
    # with one-token responses the summed and the length-averaged (TRL) forms agree
    one = f32([[1, 0, 0]])
    close(tb.ipo_paper(chosen, rejected, one, one, ref_c, ref_r), tb.ipo(chosen, rejected, one, one, ref_c, ref_r))


def test_orpo_paper_per_example_nll_and_odds_ratio():
    c = f32([[math.log(0.5), math.log(0.5)]])
    r = f32([[math.log(0.25), math.log(0.25)]])
    m = jnp.ones((1, 2))
    close(tb.orpo_paper(c, r, m, m), -math.log(0.5) + 0.1 * -math.log(0.75))  # odds ratio 3
    rng = np.random.default_rng(1)
    c = f32(-np.abs(rng.normal(size=(3, 4))) - 0.1)
    r = f32(-np.abs(rng.normal(size=(3, 4))) - 0.1)
    cm, rm = f32([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]), f32([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    close(tb.orpo_paper(c, r, cm, rm), tb.orpo(c, r, cm, rm))
    for got, want in zip(
        jax.grad(tb.orpo_paper, argnums=(0, 1))(c, r, cm, rm), jax.grad(tb.orpo, argnums=(0, 1))(c, r, cm, rm)
    ):
        close(got, want)
    # lambda = 0: the chosen NLL is a token mean within each example, then a mean over pairs
    gc = jax.grad(lambda x: tb.orpo_paper(x, r, cm, rm, lam=0.0))(c)
    close(gc, -np.asarray(cm) / np.asarray(cm).sum(1, keepdims=True) / 3)


def test_pg_and_preference_losses_are_float32_scalars():
    logp = f32([[-1.0, -2.0], [-0.5, -0.7]])
    mask, rewards = f32([[1, 1], [1, 0]]), f32([1.0, 0.0])
    outs = [
        tb.gpg(logp, mask, rewards, group_size=2),
        tb.rloo_paper(logp, mask, rewards, group_size=2),
        tb.clip_cov(logp, logp, mask, rewards, jax.random.PRNGKey(0), group_size=2),
        tb.kl_cov(logp, logp, mask, rewards, group_size=2),
        tb.opd_pg(logp, logp, logp, mask, rewards, group_size=2),
        tb.kto(logp, logp, mask, rewards, kl_ref=0.0),
        tb.ipo_paper(logp, logp, mask, mask, logp, logp),
        tb.orpo_paper(logp, logp, mask, mask),
    ]
    for out in outs:
        assert out.shape == () and out.dtype == jnp.float32
