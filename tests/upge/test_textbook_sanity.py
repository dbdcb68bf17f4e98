"""Sanity checks of the textbook reference losses against hand-computed numbers.

These test ``tests/upge/textbook.py`` itself (not the library): tiny inputs whose loss
values and gradients can be worked out by hand.
"""

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

_path = pathlib.Path(__file__).with_name("textbook.py")
_spec = importlib.util.spec_from_file_location("upge_textbook", _path)
tb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tb)

ATOL = 1e-6


def f32(x):
    return jnp.asarray(x, dtype=jnp.float32)


def close(a, b, atol=ATOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=1e-5)


# ---------------------------------------------------------------------------- KL estimators


def test_kl_estimators_values_and_signs():
    # logp = 0 (p = 1), ref = log 2: r = pi_ref / pi = 2.
    logp, ref = f32([[0.0]]), f32([[math.log(2.0)]])
    close(tb.k1(logp, ref), [[-math.log(2.0)]])
    close(tb.k2(logp, ref), [[0.5 * math.log(2.0) ** 2]])
    close(tb.k3(logp, ref), [[2.0 - 1.0 - math.log(2.0)]])  # 0.30685...
    rng = np.random.default_rng(0)
    a = f32(rng.normal(size=(4, 7)))
    b = f32(rng.normal(size=(4, 7)))
    assert float(jnp.min(tb.k3(a, b))) >= 0.0
    assert float(jnp.min(tb.k2(a, b))) >= 0.0
    close(tb.k3(a, a), jnp.zeros_like(a))
    # grad of k3 wrt logp is 1 - pi_ref / pi.
    g = jax.grad(lambda x: jnp.sum(tb.k3(x, ref)))(logp)
    close(g, [[1.0 - 2.0]])


# ---------------------------------------------------------------------------- SFT, REINFORCE


def test_sft_value_and_grad_respects_mask():
    logp = f32([[-1.0, -2.0, -7.0], [-3.0, -9.0, -9.0]])
    mask = f32([[1, 1, 0], [1, 0, 0]])
    close(tb.sft(logp, mask), (1.0 + 2.0 + 3.0) / 3.0)
    g = jax.grad(tb.sft)(logp, mask)
    close(g, [[-1 / 3, -1 / 3, 0.0], [-1 / 3, 0.0, 0.0]])


def test_reinforce_and_remax_grads():
    logp = f32([[-1.0, -1.0], [-1.0, -1.0]])
    mask = f32([[1, 1], [1, 0]])
    rewards = f32([2.0, -1.0])
    g = jax.grad(tb.reinforce)(logp, mask, rewards)
    close(g, [[-2 / 3, -2 / 3], [1 / 3, 0.0]])
    g = jax.grad(tb.remax)(logp, mask, rewards, f32([1.0, -1.0]))
    close(g, [[-1 / 3, -1 / 3], [0.0, 0.0]])


# ---------------------------------------------------------------------------- GAE and PPO


def test_gae_lambda1_gamma1_is_return_minus_value():
    rng = np.random.default_rng(1)
    values = f32(rng.normal(size=(3, 5)))
    mask = f32([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    r = f32([1.0, -0.5, 2.0])
    per_tok = np.zeros((3, 5), np.float32)
    per_tok[0, 4], per_tok[1, 1], per_tok[2, 2] = 1.0, -0.5, 2.0
    adv = tb.gae(f32(per_tok), values, mask, 1.0, 1.0)
    # With gamma = lambda = 1 the return from every valid step is the final reward.
    expected = (np.asarray(r)[:, None] - np.asarray(values)) * np.asarray(mask)
    close(adv, expected, atol=1e-5)


def test_gae_geometric_decay_with_zero_values():
    values = jnp.zeros((1, 4))
    mask = f32([[1, 1, 1, 0]])
    per_tok = f32([[0.0, 0.0, 1.0, 0.0]])
    adv = tb.gae(per_tok, values, mask, 1.0, 0.95)
    close(adv, [[0.95**2, 0.95, 1.0, 0.0]])


def test_ppo_clip_zeroes_gradient_outside_trust_region():
    # values 0, reward 1, gamma 1, lambda 0.95 -> A = [0.95^2, 0.95, 1] > 0.
    mask = f32([[1, 1, 1, 0]])
    values = jnp.zeros((1, 4))
    old = f32([[-1.0, -1.0, -1.0, -1.0]])
    ratios = np.array([1.5, 1.0, 0.9, 1.0])  # token 0 above 1 + eps with A > 0
    logp = old + f32(np.log(ratios))[None]
    g = jax.grad(tb.ppo)(logp, old, mask, f32([1.0]), values)
    n = 3.0
    close(g, [[0.0, -0.95 * 1.0 / n, -1.0 * 0.9 / n, 0.0]])
    # Negative advantage: ratio below 1 - eps is clipped (zero gradient).
    ratios = np.array([0.5, 1.0, 1.5, 1.0])
    logp = old + f32(np.log(ratios))[None]
    g = jax.grad(tb.ppo)(logp, old, mask, f32([-1.0]), values)
    close(g, [[0.0, 0.95 * 1.0 / n, 1.0 * 1.5 / n, 0.0]])


# ---------------------------------------------------------------------------- GRPO family


def _grpo_inputs():
    logp = f32([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0], [-0.5, -0.5, -0.5], [-2.0, -2.0, -2.0]])
    mask = f32([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]])
    rewards = f32([1.0, 0.0, 0.0, 0.0])
    return logp, mask, rewards


def test_grpo_ratio_one_gradient_is_minus_adv_over_len_over_b():
    logp, mask, rewards = _grpo_inputs()
    g = jax.grad(lambda lp: tb.grpo(lp, lp, mask, rewards, group_size=2))(logp)
    a = 0.5 / (0.5 + 1e-6)  # group 1: mean 0.5, std 0.5; group 2: A = 0
    b = 4.0
    expected = [[-a / 2 / b, -a / 2 / b, 0.0], [a / 3 / b] * 3, [0.0] * 3, [0.0] * 3]
    close(g, expected)


def test_grpo_k3_kl_term_gradient():
    logp, mask, _ = _grpo_inputs()
    rewards = f32([1.0, 1.0, 0.0, 0.0])  # all advantages zero -> only KL remains
    ref = logp + math.log(2.0)  # pi_ref / pi = 2 everywhere
    g = jax.grad(lambda lp: tb.grpo(lp, lp, mask, rewards, group_size=2, beta=0.04, ref_logp=ref))(logp)
    # d/dlogp [beta * k3] = beta * (1 - 2) = -0.04, divided by |o_i| and B.
    lens = np.array([2.0, 3.0, 1.0, 2.0])
    expected = (-0.04 / lens / 4.0)[:, None] * np.asarray(mask)
    close(g, expected)


def test_dr_grpo_gradient():
    logp, mask, rewards = _grpo_inputs()
    g = jax.grad(lambda lp: tb.dr_grpo(lp, lp, mask, rewards, group_size=2))(logp)
    # A = r - mean = [0.5, -0.5, 0, 0]; normaliser B * T = 4 * 3.
    expected = np.array([-0.5, 0.5, 0.0, 0.0])[:, None] / 12.0 * np.asarray(mask)
    close(g, expected)


def test_dapo_clip_higher():
    mask = f32([[1, 1, 1]])
    old = f32([[-1.0, -1.0, -1.0]])
    rewards = f32([1.0, 0.0])
    ratios = np.array([1.25, 1.30, 1.0])  # 1.25 < 1 + 0.28 kept, 1.30 clipped
    logp = old + f32(np.log(ratios))[None]
    logp2 = jnp.concatenate([logp, old])
    mask2 = jnp.concatenate([mask, f32([[1, 0, 0]])])
    g = jax.grad(lambda lp: tb.dapo(lp, jnp.concatenate([old, old]), mask2, rewards, group_size=2))(logp2)
    a = 0.5 / (0.5 + 1e-6)
    close(g[0], [-a * 1.25 / 4, 0.0, -a * 1.0 / 4])
    close(g[1], [a / 4, 0.0, 0.0])


def test_gspo_ratio_one_and_clip():
    logp, mask, rewards = _grpo_inputs()
    g = jax.grad(lambda lp: tb.gspo(lp, lp, mask, rewards, group_size=2))(logp)
    a = 0.5 / (0.5 + 1e-6)
    lens = np.array([2.0, 3.0, 1.0, 2.0])
    adv = np.array([a, -a, 0.0, 0.0])
    close(g, (-adv / lens / 4.0)[:, None] * np.asarray(mask))
    # Sequence ratio far above 1 + 4e-4 with A > 0: clipped, zero gradient.
    g = jax.grad(lambda lp: tb.gspo(lp, logp - 0.1, mask, rewards, group_size=2))(logp)
    close(g[0], [0.0, 0.0, 0.0])


def test_cispo_keeps_gradient_with_capped_weight():
    mask = f32([[1, 1], [1, 1]])
    old = f32([[-1.0, -1.0], [-1.0, -1.0]])
    logp = old + f32([[math.log(2.0), 0.0], [0.0, 0.0]])  # ratio 2 on token (0, 0)
    rewards = f32([1.0, 0.0])
    g = jax.grad(lambda lp: tb.cispo(lp, old, mask, rewards, group_size=2))(logp)
    a = 0.5 / (0.5 + 1e-6)
    close(g, [[-1.28 * a / 4, -a / 4], [a / 4, a / 4]])


def test_rloo_advantage():
    logp = f32([[-1.0], [-1.0], [-1.0]])
    mask = jnp.ones((3, 1))
    rewards = f32([1.0, 0.0, 0.0])
    g = jax.grad(lambda lp: tb.rloo(lp, lp, mask, rewards, group_size=3))(logp)
    close(g, [[-1.0 / 3], [0.5 / 3], [0.5 / 3]])


def test_reinforce_pp_batch_whitening():
    logp = f32([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    mask = f32([[1, 0, 0], [1, 1, 1]])
    rewards = f32([1.0, 0.0])
    # A0 on valid tokens: [0.5 | -0.5, -0.5, -0.5]; mu = -0.25, sigma = sqrt(0.1875).
    g = jax.grad(lambda lp: tb.reinforce_pp(lp, lp, mask, rewards, group_size=2))(logp)
    hi, lo = 1.7320508075688774, -0.5773502691896258
    close(g, [[-hi / 4, 0.0, 0.0], [-lo / 4, -lo / 4, -lo / 4]], atol=1e-5)


# ---------------------------------------------------------------------------- preference


def _pref_inputs():
    chosen = f32([[-1.0, -1.0, 0.0]])
    rejected = f32([[-2.0, 0.0, 0.0]])
    cm = f32([[1, 1, 0]])
    rm = f32([[1, 0, 0]])
    return chosen, rejected, cm, rm


def test_dpo_zero_margin_is_log2_and_gradient():
    chosen, rejected, cm, rm = _pref_inputs()
    # reference equal to policy -> h = 0
    for ls in (0.0, 0.1):
        close(tb.dpo(chosen, rejected, cm, rm, chosen, rejected, label_smoothing=ls), math.log(2.0))
    g_c, g_r = jax.grad(tb.dpo, argnums=(0, 1))(chosen, rejected, cm, rm, chosen, rejected)
    # dL/dh = -beta * sigma(-beta h) = -0.05 at h = 0.
    close(g_c, [[-0.05, -0.05, 0.0]])
    close(g_r, [[0.05, 0.0, 0.0]])


def test_ipo_simpo_orpo_values():
    chosen, rejected, cm, rm = _pref_inputs()
    close(tb.ipo(chosen, rejected, cm, rm, chosen, rejected), (1.0 / 0.2) ** 2, atol=1e-4)
    # equal length-averaged log-probs -> -log sigma(-gamma)
    same = f32([[-1.0, 0.0, 0.0]])
    close(tb.simpo(chosen, same, cm, rm), math.log(1.0 + math.exp(0.5)))
    c = f32([[math.log(0.5), math.log(0.5)]])
    r = f32([[math.log(0.25), math.log(0.25)]])
    m = jnp.ones((1, 2))
    # odds ratio 3: -log 0.5 + 0.1 * (-log 0.75)
    close(tb.orpo(c, r, m, m), 0.7219153878051234)


# ---------------------------------------------------------------------------- distillation


def test_forward_kl_values():
    mask = f32([[1, 0]])
    teacher = f32([[[0.0, 0.0], [5.0, -5.0]]])
    student = f32([[[math.log(3.0), 0.0], [-5.0, 5.0]]])
    close(tb.distill_fkl(student, teacher, mask), 0.5 * math.log(4.0 / 3.0))
    close(tb.distill_fkl(teacher, teacher, jnp.ones((1, 2))), 0.0)
    g = jax.grad(tb.distill_fkl)(teacher, teacher, jnp.ones((1, 2)))
    close(g, jnp.zeros_like(g))
    # top-k with k = V equals the full-vocabulary loss.
    rng = np.random.default_rng(2)
    s = f32(rng.normal(size=(2, 3, 5)))
    t = f32(rng.normal(size=(2, 3, 5)))
    m = f32([[1, 1, 0], [1, 0, 0]])
    close(tb.distill_fkl(s, t, m, top_k=5), tb.distill_fkl(s, t, m))
    # top-1: teacher mass renormalised onto its argmax -> loss = -log q(argmax).
    lq = jax.nn.log_softmax(s, axis=-1)
    arg = jnp.argmax(t, axis=-1)
    nll = -jnp.take_along_axis(lq, arg[..., None], axis=-1)[..., 0]
    close(tb.distill_fkl(s, t, m, top_k=1), jnp.sum(nll * m) / jnp.sum(m))


def test_jsd_values():
    mask = jnp.ones((1, 1))
    teacher = f32([[[0.0, 0.0]]])
    student = f32([[[math.log(3.0), 0.0]]])
    close(tb.distill_jsd(student, teacher, mask, 0.5), 0.033822075568605205)
    close(tb.distill_jsd(student, teacher, mask, 0.0), 0.5 * math.log(4.0 / 3.0))
    close(tb.distill_jsd(teacher, teacher, mask, 0.3), 0.0)


def test_on_policy_distillation_gradient():
    logp = f32([[-1.0, -2.0]])
    teacher = f32([[-1.5, -1.0]])
    mask = f32([[1, 1]])
    g = jax.grad(tb.distill_on_policy)(logp, teacher, mask)
    close(g, [[0.5 / 2, -1.0 / 2]])


# ---------------------------------------------------------------------------- LUFFY / SRFT / HPT


def test_luffy_shaping_and_union_advantage():
    # one group: rollout (reward 0) then demonstration (reward 1)
    logp = f32([[-1.0, -1.0], [math.log(0.5), math.log(0.5)]])
    old = f32([[-1.0, -1.0], [-9.0, -9.0]])  # demo old_logp must be ignored
    mask = f32([[1, 0], [1, 1]])
    rewards = f32([0.0, 1.0])
    g = jax.grad(lambda lp: tb.luffy(lp, old, mask, rewards, group_size=2))(logp)
    a = 0.5 / (0.5 + 1e-6)
    fprime = 0.5 * 0.1 / 0.6**2  # d/dlogp [p / (p + 0.1)] at p = 0.5
    close(g, [[a / 3, 0.0], [-a * fprime / 3, -a * fprime / 3]])


def test_srft_weights():
    # 1 question, G = 2 rollouts: one correct, one wrong; demo correct.
    logp = f32([[-1.0, -1.0], [-1.0, -1.0]])
    mask = f32([[1, 1], [1, 0]])
    ent = f32([[1.0, 3.0], [0.5, 9.0]])  # mean-token entropies 2.0 and 0.5
    rewards = f32([1.0, 0.0])
    demo_logp = f32([[-0.5, -0.5]])
    demo_mask = f32([[1, 1]])
    demo_ent = f32([[1.0, 1.0]])
    fn = lambda lp, dlp: tb.srft(lp, mask, rewards, ent, dlp, demo_mask, demo_ent, group_size=2)
    g, gd = jax.grad(fn, argnums=(0, 1))(logp, demo_logp)
    w_rl = 0.1 * math.exp(2.0)
    close(g, [[-w_rl / 3, -w_rl / 3], [1.0 / 3, 0.0]], atol=1e-5)
    # demo: SFT part -0.5 e^{-1} / 2, RL part -A * p / 2 with A over {1, 0, 1}.
    mean = 2.0 / 3.0
    std = math.sqrt(((1 - mean) ** 2 * 2 + mean**2) / 3)
    a = (1 - mean) / (std + 1e-6)
    p = math.exp(-0.5)
    per = -0.5 * math.exp(-1.0) / 2 - a * p / 2
    close(gd, [[per, per]], atol=1e-5)


def _hpt_inputs():
    # q0: both rollouts wrong (P = 0 -> SFT); q1: one right (P = 0.5 -> RL)
    logp = f32([[-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0]])
    mask = f32([[1, 1], [1, 0], [1, 1], [1, 0]])
    rewards = f32([0.0, 0.0, 1.0, 0.0])
    demo_logp = f32([[-2.0, -2.0], [-2.0, -2.0]])
    demo_mask = f32([[1, 1], [1, 0]])
    return logp, mask, rewards, demo_logp, demo_mask


def test_hpt_paper_text_routing():
    logp, mask, rewards, demo_logp, demo_mask = _hpt_inputs()
    fn = lambda lp, dlp: tb.hpt(lp, lp, mask, rewards, dlp, demo_mask, group_size=2)
    g, gd = jax.grad(fn, argnums=(0, 1))(logp, demo_logp)
    a = 0.5 / (0.5 + 1e-6)
    # RL tokens: rows 2, 3 of q1 (3 tokens); SFT tokens: demo of q0 (2 tokens).
    close(g, [[0.0, 0.0], [0.0, 0.0], [-a / 3, -a / 3], [a / 3, 0.0]])
    close(gd, [[-0.5, -0.5], [0.0, 0.0]])


def test_hpt_released_code_normalisation():
    logp, mask, rewards, demo_logp, demo_mask = _hpt_inputs()
    old = logp - f32([[0.0, 0.0], [0.0, 0.0], [0.5, 0.0], [0.0, 0.0]])  # ratio e^0.5
    fn = lambda lp, dlp: tb.hpt(lp, old, mask, rewards, dlp, demo_mask, group_size=2, variant="released_code")
    g, gd = jax.grad(fn, argnums=(0, 1))(logp, demo_logp)
    denom = 2.0 * 3.0  # L = T = 2, rows = 2 rollouts + 1 demo
    # A = r - mean = +/- 0.5, no clip: grad = -A * ratio / denom.
    close(g, [[0.0, 0.0], [0.0, 0.0], [-0.5 * math.exp(0.5) / denom, -0.5 / denom], [0.5 / denom, 0.0]])
    # SFT: the NLL token mean pooled over the routed demo tokens (q0's 2 tokens).
    close(gd, [[-0.5, -0.5], [0.0, 0.0]])
    # sft_loss_coef scales the demonstration part only
    fn3 = lambda lp, dlp: tb.hpt(
        lp, old, mask, rewards, dlp, demo_mask, group_size=2, variant="released_code", sft_loss_coef=0.25
    )
    g3, gd3 = jax.grad(fn3, argnums=(0, 1))(logp, demo_logp)
    close(g3, g)
    close(gd3, [[-0.125, -0.125], [0.0, 0.0]])


def test_hpt_released_code_sft_only_pools_demo_tokens():
    # nothing solved: both questions route to SFT; demos of 2 and 1 tokens -> each of the
    # 3 tokens weighs 1/3 (a pooled token mean, not a per-row mean or a sum / (L * rows)).
    logp, mask, _, demo_logp, demo_mask = _hpt_inputs()
    rewards = f32([0.0, 0.0, 0.0, 0.0])
    fn = lambda lp, dlp: tb.hpt(lp, lp, mask, rewards, dlp, demo_mask, group_size=2, variant="released_code")
    g, gd = jax.grad(fn, argnums=(0, 1))(logp, demo_logp)
    close(g, jnp.zeros_like(logp))
    close(gd, [[-1.0 / 3, -1.0 / 3], [-1.0 / 3, 0.0]])
    close(fn(logp, demo_logp), 2.0)  # NLL of every demo token is 2


def test_all_losses_are_float32_scalars():
    logp, mask, rewards = _grpo_inputs()
    for fn in (tb.grpo, tb.dr_grpo, tb.dapo, tb.gspo, tb.cispo, tb.rloo, tb.reinforce_pp):
        out = fn(logp, logp, mask, rewards, group_size=2)
        assert out.shape == () and out.dtype == jnp.float32, fn.__name__
    out = tb.ppo(logp, logp, mask, rewards, jnp.zeros_like(logp))
    assert out.shape == () and out.dtype == jnp.float32


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
