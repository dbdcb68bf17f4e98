"""Unit and property-based tests of the UPGE parts (hypothesis over shapes, masks, values).

Each part is checked against the closed form it claims in its docstring, most
often by differentiating that closed form with autodiff.
"""

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import upt_jax.upge as upge
from tests.upge.batches import RECIPE_SETUPS, random_batch, recipe_case

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True)


@st.composite
def ragged(draw, groups=False):
    """Ragged batches; shapes come from a small set so that XLA caches are reused."""
    b = draw(st.sampled_from([6]))
    g = draw(st.sampled_from([d for d in (1, 2, 3) if b % d == 0])) if groups else 1
    t = draw(st.sampled_from([1, 8]))
    lengths = draw(hnp.arrays(np.int64, b, elements=st.integers(1, t)))
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
    vals = lambda lo, hi: draw(
        hnp.arrays(np.float32, (b, t), elements=st.floats(float(np.float32(lo)), float(np.float32(hi)), width=32))
    )
    return dict(
        b=b,
        t=t,
        g=g,
        mask=mask,
        logp=vals(-4.0, -0.01),
        x=vals(-3.0, 3.0),
        old=vals(-4.0, -0.01),
        rewards=draw(hnp.arrays(np.float32, b, elements=st.sampled_from([0.0, 0.5, 1.0, -1.0]))),
    )


# ----------------------------------------------------------------------------- aggregation


@SETTINGS
@given(ragged(), st.sampled_from(upge.AGGREGATION_MODES))
def test_aggregate_matches_definition(d, mode):
    m, x = d["mask"], d["x"]
    s, den = upge.aggregate(jnp.asarray(x), jnp.asarray(m), mode)
    rows = (m * x).sum(1)
    want = {
        "token-mean": rows.sum() / m.sum(),
        "seq-mean-token-mean": np.mean(rows / m.sum(1)),
        "seq-mean-token-sum": np.mean(rows),
        "seq-mean-token-sum-norm": np.mean(rows / d["t"]),
    }[mode]
    np.testing.assert_allclose(s / den, want, rtol=2e-5, atol=1e-5)


@SETTINGS
@given(ragged(), st.sampled_from(upge.AGGREGATION_MODES), st.integers(0, 10))
def test_aggregate_is_additive_over_rows(d, mode, cut):
    m, x = jnp.asarray(d["mask"]), jnp.asarray(d["x"])
    cut = cut % (d["b"] + 1)
    s, den = upge.aggregate(x, m, mode)
    s1, d1 = upge.aggregate(x[:cut], m[:cut], mode, max_len=d["t"])
    s2, d2 = upge.aggregate(x[cut:], m[cut:], mode, max_len=d["t"])
    np.testing.assert_allclose(s1 + s2, s, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d1 + d2, den, rtol=1e-6)


def test_normalise_dicts_and_empty_terms():
    assert float(upge.normalise({"a": 3.0, "b": 1.0}, {"a": 2.0, "b": 0.0})) == 1.5
    assert float(upge.normalise(jnp.float32(0.0), jnp.float32(0.0))) == 0.0


# ----------------------------------------------------------------------------- surrogate


@SETTINGS
@given(ragged())
def test_surrogate_gradient_is_the_upge(d):
    m, lp, old = map(jnp.asarray, (d["mask"], d["logp"], d["old"]))
    adv, stable = jnp.asarray(d["x"]), jnp.abs(jnp.asarray(d["x"])[::-1])
    f = lambda l: upge.upge_token_terms(l, old, adv, stable, m).sum()
    want = -stable * adv * jnp.exp(lp - old) * m
    np.testing.assert_allclose(jax.grad(f)(lp), want, rtol=1e-5, atol=1e-6)
    # with π_ref = π_θ the value is −Σ 1_stable Â and the gradient 1_stable Â ∇log π
    g = lambda l: upge.upge_token_terms(l, l, adv, stable, m).sum()
    np.testing.assert_allclose(g(lp), -(stable * adv * m).sum(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.grad(g)(lp), -stable * adv * m, rtol=1e-6, atol=1e-7)


def test_padding_cannot_overflow():
    m = jnp.array([[1.0, 0.0]])
    lp = jnp.array([[-1.0, 500.0]])
    g = jax.grad(lambda l: upge.upge_token_terms(l, jnp.zeros_like(l), jnp.ones(1), None, m).sum())(lp)
    assert np.all(np.isfinite(g)) and g[0, 1] == 0


@pytest.mark.parametrize("key", sorted(RECIPE_SETUPS))
def test_recipes_ignore_padding(key):
    """Garbage at padded positions changes neither the loss nor the gradient."""
    recipe, logp, batch, g = recipe_case(key, seed=5)
    rng = np.random.default_rng(1)
    pad = batch["mask"] == 0

    def scramble(x):
        if x.ndim >= 2 and x.shape[:2] == pad.shape and x.dtype == jnp.float32:
            p = pad.reshape(pad.shape + (1,) * (x.ndim - 2))
            return jnp.where(p, jnp.asarray(rng.normal(size=x.shape) * 7, jnp.float32), x)
        return x

    batch2 = {k: (v if k == "mask" else scramble(v)) for k, v in batch.items()}
    logp2 = scramble(logp) if logp.ndim == 2 else logp
    loss = lambda lp, b: upge.normalise(*upge.compute_loss(recipe, lp, b, group_size=g)[:2])
    (v1, g1), (v2, g2) = jax.value_and_grad(loss)(logp, batch), jax.value_and_grad(loss)(logp2, batch2)
    np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)
    if logp.ndim == 2:
        assert np.all(np.asarray(g1)[np.asarray(pad)] == 0)


def test_compute_loss_jits_with_the_recipe_static():
    recipe, logp, batch, g = recipe_case("luffy", seed=2)
    f = jax.jit(lambda lp, b: upge.normalise(*upge.compute_loss(recipe, lp, b, group_size=g)[:2]))
    eager = upge.normalise(*upge.compute_loss(recipe, logp, batch, group_size=g)[:2])
    np.testing.assert_allclose(f(logp, batch), eager, rtol=1e-6)
    np.testing.assert_allclose(
        jax.grad(f)(logp, batch),
        jax.grad(lambda lp: upge.normalise(*upge.compute_loss(recipe, lp, batch, group_size=g)[:2]))(logp),
        rtol=1e-6,
        atol=1e-8,
    )


def test_metrics():
    recipe, logp, batch, g = recipe_case("grpo", seed=3)
    _, _, m = upge.compute_loss(recipe, logp, batch, group_size=g)
    for k in (
        "pg/rollout/clip_frac",
        "pg/rollout/ratio_mean",
        "pg/rollout/ratio_max",
        "pg/rollout/adv_mean",
        "pg/rollout/adv_std",
        "pg/zero_var_frac",
        "nll",
        "kl_ref",
        "entropy",
    ):
        assert k in m and np.isfinite(float(m[k])), k
    assert 0 < float(m["pg/rollout/clip_frac"]) < 1
    rewards = jnp.array([1.0, 1, 1, 1, 0, 1, 0, 1])
    assert float(upge.zero_variance_fraction(rewards, 4)) == 0.5


# ----------------------------------------------------------------------------- stabilisers


def _ratio_away_from_edges(lr, eps_lo, eps_hi):
    r = np.exp(lr)
    return (np.abs(r - (1 + eps_hi)) > 1e-3) & (np.abs(r - (1 - eps_lo)) > 1e-3)


@SETTINGS
@given(ragged(), st.floats(0.05, 0.4), st.floats(0.05, 0.4))
def test_ppo_clip_is_the_gradient_of_the_clipped_objective(d, eps_lo, eps_hi):
    lp, old, a = map(jnp.asarray, (d["logp"], d["old"], d["x"]))
    textbook = lambda l: (
        -jnp.minimum(jnp.exp(l - old) * a, jnp.clip(jnp.exp(l - old), 1 - eps_lo, 1 + eps_hi) * a).sum()
    )
    ours = lambda l: upge.upge_token_terms(l, old, a, upge.ppo_clip(l - old, a, eps_lo, eps_hi)).sum()
    ok = _ratio_away_from_edges(np.asarray(lp - old), eps_lo, eps_hi)
    np.testing.assert_allclose(
        np.asarray(jax.grad(ours)(lp))[ok], np.asarray(jax.grad(textbook)(lp))[ok], rtol=1e-5, atol=1e-6
    )


@SETTINGS
@given(ragged(), st.floats(1.5, 4.0))
def test_dual_clip(d, c):
    lp, old, a = map(jnp.asarray, (d["logp"], d["old"], d["x"]))

    def textbook(l):
        r = jnp.exp(l - old)
        ppo = jnp.minimum(r * a, jnp.clip(r, 0.8, 1.2) * a)
        return -jnp.where(a < 0, jnp.maximum(ppo, c * a), ppo).sum()

    ours = lambda l: upge.upge_token_terms(l, old, a, upge.dual_clip(l - old, a, 0.2, 0.2, c)).sum()
    r = np.exp(np.asarray(lp - old))
    ok = _ratio_away_from_edges(np.log(r), 0.2, 0.2) & (np.abs(r - c) > 1e-3)
    np.testing.assert_allclose(
        np.asarray(jax.grad(ours)(lp))[ok], np.asarray(jax.grad(textbook)(lp))[ok], rtol=1e-5, atol=1e-6
    )


@SETTINGS
@given(ragged())
def test_cispo_and_policy_shaping(d):
    lp, old, a, m = map(jnp.asarray, (d["logp"], d["old"], d["x"], d["mask"]))
    cis_tb = lambda l: -(jax.lax.stop_gradient(jnp.clip(jnp.exp(l - old), 0.0, 1.28)) * a * l * m).sum()
    cis = lambda l: upge.upge_token_terms(l, l, a, upge.cispo_weight(l - old, 1e9, 0.28), m).sum()
    np.testing.assert_allclose(jax.grad(cis)(lp), jax.grad(cis_tb)(lp), rtol=1e-5, atol=1e-6)
    f = lambda p: p / (p + 0.1)
    shp_tb = lambda l: -(f(jnp.exp(l)) * a * m).sum()
    shp = lambda l: upge.upge_token_terms(l, upge.unit_reference(l), a, upge.policy_shaping(l, 0.1), m).sum()
    np.testing.assert_allclose(jax.grad(shp)(lp), jax.grad(shp_tb)(lp), rtol=1e-4, atol=1e-6)


@SETTINGS
@given(ragged(), st.booleans())
def test_gspo_sequence_objective(d, token_level):
    lp, m = jnp.asarray(d["logp"]), jnp.asarray(d["mask"])
    old = lp + 3e-4 * jnp.asarray(d["x"])
    a = jnp.asarray(d["rewards"]) - 0.25

    def textbook(l):
        s = jnp.exp(((l - old) * m).sum(1) / m.sum(1))
        return -jnp.mean(jnp.minimum(s * a, jnp.clip(s, 1 - 3e-4, 1 + 4e-4) * a))

    adv = jnp.broadcast_to(a[:, None], m.shape) if token_level else a

    def ours(l):
        slr = upge.sequence_log_ratio(l, old, m)
        s, dd, _ = upge.policy_gradient_loss(
            l,
            m,
            advantages=adv,
            ref_logp=upge.gspo_reference(l, old, m),
            stable=upge.gspo_clip(slr, adv),
            aggregation="seq-mean-token-mean",
        )
        return s / dd

    s_i = np.exp(np.asarray(upge.sequence_log_ratio(lp, old, m)))
    ok = (np.abs(s_i - (1 + 4e-4)) > 1e-6) & (np.abs(s_i - (1 - 3e-4)) > 1e-6)
    np.testing.assert_allclose(
        np.asarray(jax.grad(ours)(lp))[ok], np.asarray(jax.grad(textbook)(lp))[ok], rtol=2e-4, atol=1e-6
    )


def test_truncated_is_and_icepop():
    tr = jnp.log(jnp.array([[0.5, 0.2, 0.9]]))
    ro = jnp.log(jnp.array([[0.1, 0.2, 0.95]]))
    np.testing.assert_allclose(upge.truncated_is(tr, ro, 2.0), [[2.0, 1.0, 0.9 / 0.95]], rtol=1e-6)
    np.testing.assert_allclose(upge.icepop(tr, ro, 0.5, 3.0), [[0.0, 1.0, 1.0]])


# ----------------------------------------------------------------------------- advantages


@SETTINGS
@given(ragged(groups=True), st.floats(0.1, 10.0), st.floats(-5.0, 5.0))
def test_group_advantages(d, scale, shift):
    r, g = jnp.asarray(d["rewards"]), d["g"]
    a = upge.grpo_advantages(r, g)
    rg = np.asarray(r).reshape(-1, g)
    np.testing.assert_allclose(np.asarray(a).reshape(-1, g).sum(1), 0, atol=1e-4)
    want = (rg - rg.mean(1, keepdims=True)) / (rg.std(1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(a, want.reshape(-1), rtol=1e-5, atol=1e-5)
    # affine invariance (exact up to eps) on groups with spread
    spread = np.repeat(rg.std(1) > 0.1, g)
    a2 = upge.grpo_advantages(scale * r + shift, g, eps=0.0)
    np.testing.assert_allclose(
        np.asarray(a2)[spread], np.asarray(upge.grpo_advantages(r, g, eps=0.0))[spread], rtol=1e-3, atol=1e-3
    )
    np.testing.assert_allclose(upge.dr_grpo_advantages(r, g), (rg - rg.mean(1, keepdims=True)).reshape(-1), atol=1e-6)
    if g > 1:
        loo = rg - (rg.sum(1, keepdims=True) - rg) / (g - 1)
        np.testing.assert_allclose(upge.rloo_advantages(r, g), loo.reshape(-1), atol=1e-5)
        np.testing.assert_allclose(
            upge.rloo_advantages(r, g), g / (g - 1) * (rg - rg.mean(1, keepdims=True)).reshape(-1), atol=1e-5
        )


def test_row_mask_excludes_rows_from_group_statistics():
    r = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    rows = jnp.array([1, 1, 1, 0, 1, 1, 1, 0.0])
    a = upge.grpo_advantages(r, 4, row_mask=rows)
    np.testing.assert_allclose(a[:3], upge.grpo_advantages(r[:3], 3), atol=1e-6)
    assert a[3] == 0 and a[7] == 0


@SETTINGS
@given(ragged())
def test_gae_limits(d):
    m = jnp.asarray(d["mask"])
    v = jnp.asarray(d["x"]) * m
    tok = upge.last_token_rewards(jnp.asarray(d["rewards"]), m)
    a1, ret = upge.gae_advantages(tok, v, m, gamma=1.0, lam=1.0)
    np.testing.assert_allclose(a1, (upge.reward_to_go(tok, m) - v) * m, atol=1e-5)
    np.testing.assert_allclose(ret, upge.reward_to_go(tok, m) * m, atol=1e-5)
    a0, _ = upge.gae_advantages(tok, v, m, gamma=0.9, lam=0.0)
    v_next = jnp.concatenate([v[:, 1:], jnp.zeros_like(v[:, :1])], 1) * jnp.concatenate(
        [m[:, 1:], jnp.zeros_like(m[:, :1])], 1
    )
    np.testing.assert_allclose(a0, (tok + 0.9 * v_next - v) * m, atol=1e-5)


def test_gae_skips_holes():
    m = jnp.array([[1.0, 0.0, 1.0, 0.0]])
    v = jnp.array([[0.5, 9.0, 0.25, 9.0]])
    tok = jnp.array([[0.0, 0.0, 1.0, 0.0]])
    a, _ = upge.gae_advantages(tok, v, m, gamma=1.0, lam=0.5)
    # t=2: δ = 1 − 0.25 = 0.75; t=0: δ = 0 + 0.25 − 0.5 = −0.25, Â = −0.25 + 0.5·0.75
    np.testing.assert_allclose(a, [[0.125, 0.0, 0.75, 0.0]], atol=1e-6)


@SETTINGS
@given(ragged(groups=True))
def test_reinforce_pp_whitening(d):
    m = jnp.asarray(d["mask"])
    a = upge.reinforce_pp_baseline_advantages(jnp.asarray(d["rewards"]), m, d["g"])
    mu = float((a * m).sum() / m.sum())
    assert abs(mu) < 1e-4
    sd = float(jnp.sqrt(((a - mu) ** 2 * m).sum() / m.sum()))
    assert sd < 1.0 + 1e-3
    tok = upge.last_token_rewards(jnp.asarray(d["rewards"]), m)
    b = upge.reinforce_pp_advantages(tok, m)
    assert abs(float((b * m).sum() / m.sum())) < 1e-4


def test_kl_in_reward_reaches_sequence_advantages():
    recipe = upge.get_recipe("reinforce_pp", baseline=False, kl_coef=0.1)
    _, batch = random_batch(0, b=8, t=5, group_size=4)
    prepared, _ = upge.prepare(recipe, batch, group_size=4)
    m = batch["mask"]
    k1 = (batch["old_logp"] - batch["ref_logp"]) * m
    tok = upge.last_token_rewards(batch["rewards"], m) - 0.1 * k1
    want = upge.reinforce_pp_advantages(tok, m)
    np.testing.assert_allclose(prepared["upge/pg/rollout/adv"], want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- gates


def test_hpt_gate_routes_questions():
    r = jnp.array([0.0, 0, 0, 1, 1, 0, 0, 1])  # 2 questions × (3 rollouts + 1 demo)
    demo = jnp.array([0, 0, 0, 1, 0, 0, 0, 1.0])
    p = upge.pass_rate(r, 4, row_mask=1 - demo)
    np.testing.assert_allclose(p, [0] * 4 + [1 / 3] * 4, atol=1e-6)
    a, b = upge.hard_gate(p, 0.0)
    np.testing.assert_array_equal(a, [0] * 4 + [1] * 4)
    np.testing.assert_array_equal(b, [1] * 4 + [0] * 4)
    a, b = upge.soft_gate(p, 0.2, 0.05)
    assert np.all((a > 0) & (a < 1)) and np.allclose(a + b, 1)
    a, b = upge.mix_gate(p)
    assert np.all(a == 1) and np.all(b == 1)


def test_hpt_denominators_count_routed_rows_only():
    recipe = upge.get_recipe("hpt")
    _, batch = random_batch(0, b=8, t=5, group_size=4, demo_last=True)
    batch["rewards"] = jnp.array([0.0, 0, 0, 1, 1, 0, 0, 1])
    d = upge.denominators(recipe, batch, group_size=4)
    m = np.asarray(batch["mask"])
    np.testing.assert_allclose(d["rl"], m[4:7].sum())  # rollouts of question 2
    np.testing.assert_allclose(d["sft"], m[3].sum())  # demo of question 1
