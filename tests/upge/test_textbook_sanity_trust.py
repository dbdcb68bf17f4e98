"""Sanity checks of the textbook SAPO, GMPO and DPPO losses and of the ``ddof`` option of the
group-normalised textbook losses, on inputs small enough to work out by hand.

These test ``tests/upge/textbook*.py`` itself (not the library).
"""

import math

import jax
import jax.numpy as jnp
import pytest

from tests.upge import textbook as tb
from tests.upge.sanity_checks import EPS, close, f32


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------------------- std ddof


def _pair_batch():
    logp = f32([[-1.0, -2.0], [-0.5, -0.7]])
    mask = f32([[1, 1], [1, 0]])
    return logp, mask, f32([1.0, 0.0])


@pytest.mark.parametrize("name", ["grpo", "dapo", "gspo", "cispo", "luffy"])
def test_ddof_one_rescales_the_group_normalised_gradient(name):
    # G = 2, rewards {1, 0}: std is 0.5 (ddof=0) or sqrt(1/2) (ddof=1); at ratio 1 every one
    # of these gradients is linear in A, so ddof=1 scales it by (0.5 + eps) / (sqrt(.5) + eps).
    logp, mask, rewards = _pair_batch()
    fn = getattr(tb, name)
    g0 = jax.grad(lambda lp: fn(lp, lp, mask, rewards, group_size=2))(logp)
    g0_explicit = jax.grad(lambda lp: fn(lp, lp, mask, rewards, group_size=2, ddof=0))(logp)
    g1 = jax.grad(lambda lp: fn(lp, lp, mask, rewards, group_size=2, ddof=1))(logp)
    close(g0_explicit, g0)
    assert float(jnp.abs(g0).max()) > 0.05
    close(g1, g0 * (0.5 + EPS) / (math.sqrt(0.5) + EPS))


def test_ddof_threads_through_hpt_and_srft():
    logp = f32([[-1.0, -1.0], [-1.0, -1.0]])
    mask = f32([[1, 1], [1, 0]])
    rewards = f32([1.0, 0.0])  # one question, RL-routed (P = 0.5 > 0)
    demo_logp, demo_mask = f32([[-2.0, -2.0]]), f32([[1, 1]])
    g = {
        d: jax.grad(lambda lp, d=d: tb.hpt(lp, lp, mask, rewards, demo_logp, demo_mask, group_size=2, ddof=d))(logp)
        for d in (0, 1)
    }
    close(g[1], g[0] * (0.5 + EPS) / (math.sqrt(0.5) + EPS))
    # SRFT's demo advantage: union {1, 0, 1}, std over 3 (ddof=0) or 2 (ddof=1) values.
    ent = jnp.ones((2, 2))
    fn = lambda d: jax.grad(
        lambda dl: tb.srft(logp, mask, rewards, ent, dl, demo_mask, jnp.ones((1, 2)), group_size=2, ddof=d)
    )(demo_logp)
    mean = 2.0 / 3.0
    ss = 2 * (1 - mean) ** 2 + mean**2
    a = {d: (1 - mean) / (math.sqrt(ss / (3 - d)) + EPS) for d in (0, 1)}
    sft_part = -0.5 * math.exp(-1.0) / 2
    p = math.exp(-2.0)
    for d in (0, 1):
        close(fn(d), [[sft_part - a[d] * p / 2] * 2], atol=1e-5)


def test_ddof_rejects_bad_values():
    logp, mask, rewards = _pair_batch()
    with pytest.raises(ValueError, match="ddof"):
        tb.grpo(logp, logp, mask, rewards, group_size=2, ddof=2)
    with pytest.raises(ValueError, match="group_size"):
        tb.grpo(logp, logp, mask, rewards, group_size=1, ddof=1)


# ---------------------------------------------------------------------------- SAPO


def test_sapo_on_policy_gradient_is_grpo_for_every_temperature():
    logp = f32([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0], [-0.5, -0.5, -0.5], [-2.0, -2.0, -2.0]])
    mask = f32([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]])
    rewards = f32([1.0, 0.0, 0.3, 0.0])
    g_grpo = jax.grad(lambda lp: tb.grpo(lp, lp, mask, rewards, group_size=2))(logp)
    for taus in [(1.0, 1.05), (3.0, 0.2), (0.01, 50.0)]:
        g = jax.grad(lambda lp: tb.sapo(lp, lp, mask, rewards, group_size=2, tau_pos=taus[0], tau_neg=taus[1]))(logp)
        close(g, g_grpo, atol=1e-5)
    # value at ratio 1: f(1) = 2 / tau, so L = -(1/B) sum_i (2 / tau_i) A_i
    a = 0.5 / (0.5 + EPS)
    a2 = 0.15 / (0.15 + EPS)
    value = tb.sapo(logp, logp, mask, rewards, group_size=2)
    close(value, -(2.0 * a - 2.0 / 1.05 * a + 2.0 * a2 - 2.0 / 1.05 * a2) / 4.0, atol=1e-5)


def _one_token_pair(log_ratio_pos, log_ratio_neg):
    """Two single-token rows of one group, rewards {1, 0}: A = +a and -a."""
    old = f32([[-1.0], [-1.0]])
    logp = old + f32([[log_ratio_pos], [log_ratio_neg]])
    return logp, old, jnp.ones((2, 1)), f32([1.0, 0.0])


def test_sapo_gate_weight_and_asymmetric_temperature():
    logp, old, mask, rewards = _one_token_pair(math.log(1.3), math.log(1.3))
    g = jax.grad(lambda lp: tb.sapo(lp, old, mask, rewards, group_size=2, tau_pos=1.0, tau_neg=5.0))(logp)
    a = 0.5 / (0.5 + EPS)

    def weight(tau, r):  # d f(r) / d log pi = 4 sigma (1 - sigma) r
        s = sigmoid(tau * (r - 1.0))
        return 4.0 * s * (1.0 - s) * r

    close(g, [[-a * weight(1.0, 1.3) / 2], [a * weight(5.0, 1.3) / 2]])
    assert weight(5.0, 1.3) < weight(1.0, 1.3) < 1.3  # attenuated, more for the larger tau


def test_sapo_temperature_limits():
    logp, old, mask, rewards = _one_token_pair(math.log(1.6), math.log(0.5))
    a = 0.5 / (0.5 + EPS)
    # tau -> 0: the gate's gradient tends to unclipped importance sampling, -A r grad log pi.
    g = jax.grad(lambda lp: tb.sapo(lp, old, mask, rewards, group_size=2, tau_pos=1e-3, tau_neg=1e-3))(logp)
    close(g, [[-a * 1.6 / 2], [a * 0.5 / 2]], atol=1e-5)
    # tau large: far from r = 1 the gradient vanishes (both signs, unlike PPO's clip) ...
    g = jax.grad(lambda lp: tb.sapo(lp, old, mask, rewards, group_size=2, tau_pos=60.0, tau_neg=60.0))(logp)
    close(g, jnp.zeros_like(g), atol=1e-6)
    # ... while at r = 1 it is still the full on-policy gradient.
    g = jax.grad(lambda lp: tb.sapo(lp, lp, mask, rewards, group_size=2, tau_pos=60.0, tau_neg=60.0))(logp)
    close(g, [[-a / 2], [a / 2]])


# ---------------------------------------------------------------------------- GMPO


def test_gmpo_single_token_is_ppo_clip_in_log_space():
    lo, hi = math.exp(-0.4), math.exp(0.4)
    for lr_pos, lr_neg in [(0.3, -0.3), (0.6, -0.6), (-0.6, 0.6), (-0.2, 0.45)]:
        logp, old, mask, rewards = _one_token_pair(lr_pos, lr_neg)
        a = 0.5 / (0.5 + EPS)
        adv = f32([a, -a])

        def ppo(lp):
            r = jnp.exp(lp - old)[:, 0]
            return -jnp.mean(jnp.minimum(r * adv, jnp.clip(r, lo, hi) * adv))

        fn = lambda lp: tb.gmpo(lp, old, mask, rewards, group_size=2)
        close(fn(logp), ppo(logp))
        close(jax.grad(fn)(logp), jax.grad(ppo)(logp))


def test_gmpo_geometric_mean_and_one_sided_token_clip():
    old = f32([[-1.0, -1.0, -1.0, -1.0], [-1.0, -1.0, -1.0, -1.0]])
    mask = f32([[1, 1, 1, 0], [1, 1, 1, 0]])
    rewards = f32([1.0, 0.0])
    a = 0.5 / (0.5 + EPS)
    # Row 0 (A > 0): log-ratios 0.1, -0.2, 0.6; the 0.6 is above eps_high = 0.4 in the
    # advantage's direction, so it counts as 0.4 and carries no gradient.
    # Row 1 (A < 0): log-ratios 0.1, -0.2, 0.6; nothing is clipped (0.6 moves against A < 0
    # only if it were below -0.4), so every token carries gradient.
    lr = f32([[0.1, -0.2, 0.6, 0.0], [0.1, -0.2, 0.6, 0.0]])
    logp = old + lr
    fn = lambda lp: tb.gmpo(lp, old, mask, rewards, group_size=2)
    rho0 = math.exp((0.1 - 0.2 + 0.4) / 3)
    rho1 = math.exp((0.1 - 0.2 + 0.6) / 3)
    close(fn(logp), (-rho0 * a + rho1 * a) / 2, atol=1e-5)
    g = jax.grad(fn)(logp)
    close(
        g,
        [[-a * rho0 / 3 / 2, -a * rho0 / 3 / 2, 0.0, 0.0], [a * rho1 / 3 / 2, a * rho1 / 3 / 2, a * rho1 / 3 / 2, 0.0]],
        atol=1e-6,
    )


# ---------------------------------------------------------------------------- DPPO


def _probs_pair(p_pos, p_neg, p_old=(0.5, 0.5)):
    """Two single-token rows: row 0 has A = +0.5, row 1 A = -0.5 (rewards {1, 0})."""
    logp = f32([[math.log(p_pos)], [math.log(p_neg)]])
    old = f32([[math.log(p_old[0])], [math.log(p_old[1])]])
    return logp, old, jnp.ones((2, 1)), f32([1.0, 0.0])


def test_dppo_tv_mask_is_one_sided_total_variation():
    # p moved +0.2 (A > 0, beyond delta = 0.15: masked) and -0.2 (A < 0: masked).
    logp, old, mask, rewards = _probs_pair(0.7, 0.3)
    g = jax.grad(lambda lp: tb.dppo_tv(lp, old, mask, rewards, group_size=2))(logp)
    close(g, jnp.zeros((2, 1)))
    # Moves against the advantage's direction are always kept (like PPO's min):
    # A > 0 with p down, A < 0 with p up; weight = ratio, normaliser B * T = 2.
    logp, old, mask, rewards = _probs_pair(0.3, 0.7)
    g = jax.grad(lambda lp: tb.dppo_tv(lp, old, mask, rewards, group_size=2))(logp)
    close(g, [[-0.5 * 0.6 / 2], [0.5 * 1.4 / 2]])
    # Within delta: kept.
    logp, old, mask, rewards = _probs_pair(0.6, 0.4)
    g = jax.grad(lambda lp: tb.dppo_tv(lp, old, mask, rewards, group_size=2))(logp)
    close(g, [[-0.5 * 1.2 / 2], [0.5 * 0.8 / 2]])


def test_dppo_keeps_rare_tokens_that_ppo_would_clip_and_truncates_the_weight():
    # p_old = 0.01 -> p = 0.03: ratio 3 (PPO would clip) but |p - p_old| = 0.02 <= 0.15.
    logp, old, mask, rewards = _probs_pair(0.03, 0.01, p_old=(0.01, 0.01))
    g = jax.grad(lambda lp: tb.dppo_tv(lp, old, mask, rewards, group_size=2))(logp)
    close(g, [[-0.5 * 3.0 / 2], [0.5 * 1.0 / 2]], atol=1e-5)
    g = jax.grad(lambda lp: tb.dppo_tv(lp, old, mask, rewards, group_size=2, is_cap=2.0))(logp)
    close(g, [[-0.5 * 2.0 / 2], [0.5 * 1.0 / 2]], atol=1e-5)
    # seq-mean-token-sum-norm: a constant max_len divides the token sum.
    g = jax.grad(lambda lp: tb.dppo_tv(lp, old, mask, rewards, group_size=2, max_len=4))(logp)
    close(g, [[-0.5 * 3.0 / 8], [0.5 * 1.0 / 8]], atol=1e-5)


def test_dppo_kl_binary_divergence():
    def bkl(q, p):  # KL(Bernoulli(q) || Bernoulli(p))
        return q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))

    assert bkl(0.5, 0.8) > 0.05 > bkl(0.5, 0.55)
    # A > 0, p 0.5 -> 0.8: divergence 0.22 > 0.05 and p went up: masked.
    # A < 0, p 0.5 -> 0.8: p moved against the advantage: kept, weight 1.6.
    logp, old, mask, rewards = _probs_pair(0.8, 0.8)
    g = jax.grad(lambda lp: tb.dppo_kl(lp, old, mask, rewards, group_size=2))(logp)
    close(g, [[0.0], [0.5 * 1.6 / 2]], atol=1e-6)
    # small moves are inside the region for both signs.
    logp, old, mask, rewards = _probs_pair(0.55, 0.45)
    g = jax.grad(lambda lp: tb.dppo_kl(lp, old, mask, rewards, group_size=2))(logp)
    close(g, [[-0.5 * 1.1 / 2], [0.5 * 0.9 / 2]], atol=1e-6)
    # large moves against the advantage's direction are kept (A > 0 down, A < 0 up)
    logp, old, mask, rewards = _probs_pair(0.2, 0.8)
    g = jax.grad(lambda lp: tb.dppo_kl(lp, old, mask, rewards, group_size=2))(logp)
    close(g, [[-0.5 * 0.4 / 2], [0.5 * 1.6 / 2]], atol=1e-6)
    # A < 0, p 0.5 -> 0.2: divergence 0.22 > 0.05 in the advantage's direction: masked.
    logp, old, mask, rewards = _probs_pair(0.55, 0.2)
    g = jax.grad(lambda lp: tb.dppo_kl(lp, old, mask, rewards, group_size=2))(logp)
    close(g, [[-0.5 * 1.1 / 2], [0.0]], atol=1e-6)


def test_trust_losses_are_float32_scalars():
    logp, mask, rewards = _pair_batch()
    for fn in (tb.sapo, tb.gmpo, tb.dppo_tv, tb.dppo_kl):
        out = fn(logp, logp - 0.1, mask, rewards, group_size=2)
        assert out.shape == () and out.dtype == jnp.float32, fn.__name__
