"""Recipes as data: composing new methods, gates, regularisers, mixed batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import upt_jax.upge as upge
from tests.upge.batches import random_batch


def _loss(recipe, batch, g, **kw):
    return lambda lp: upge.normalise(*upge.compute_loss(recipe, lp, batch, group_size=g, **kw)[:2])


def test_a_new_method_is_a_new_combination():
    """GRPO with clip-higher and truncated IS for sampler/trainer mismatch, in a few lines."""
    recipe = upge.Recipe(
        "grpo_tis",
        (
            upge.Term(
                "pg",
                rollout=upge.Parts(
                    stabiliser=(upge.part("ppo_clip", eps_low=0.2, eps_high=0.28), upge.part("tis", cap=2.0)),
                    reference=upge.part("behaviour"),
                    advantage=upge.part("grpo"),
                    aggregation=upge.part("token-mean"),
                ),
            ),
        ),
    )
    logp, b = random_batch(0, b=8, t=6, group_size=4, pad_scale=1.0)
    m = b["mask"]
    adv = upge.grpo_advantages(b["rewards"], 4)

    def by_hand(lp):
        r = jnp.exp(lp - b["old_logp"])
        w = jnp.minimum(jnp.exp(b["old_logp"] - b["rollout_logp"]), 2.0)
        obj = jnp.minimum(r * adv[:, None], jnp.clip(r, 0.8, 1.28) * adv[:, None])
        return -jnp.sum(jnp.where(m > 0, w * obj, 0.0)) / m.sum()

    np.testing.assert_allclose(jax.grad(_loss(recipe, b, 4))(logp), jax.grad(by_hand)(logp), atol=1e-6)


def test_entropy_bonus_flows_through_entropy():
    recipe = upge.Recipe("sft_ent", (upge.Term("sft", rollout=upge.Parts(), entropy_coef=0.01),))
    _, b = random_batch(1, b=4, t=5, group_size=1, vocab=7)
    m = b["mask"]

    def ours(logits):
        logq = jax.nn.log_softmax(logits)
        lp = logq[..., 0]  # target token 0
        ent = upge.entropy_from_logits(logits)
        return upge.normalise(*upge.compute_loss(recipe, lp, {"mask": m}, entropy=ent)[:2])

    def by_hand(logits):
        logq = jax.nn.log_softmax(logits)
        ent = -jnp.sum(jnp.exp(logq) * logq, -1)
        return jnp.sum((-logq[..., 0] - 0.01 * ent) * m) / m.sum()

    np.testing.assert_allclose(jax.grad(ours)(b["student_logits"]), jax.grad(by_hand)(b["student_logits"]), atol=1e-6)
    with pytest.raises(ValueError):
        upge.compute_loss(recipe, b["student_logits"][..., 0], {"mask": m})


def _hpt_batch():
    logp, b = random_batch(2, b=12, t=6, group_size=4, demo_last=True)
    b["rewards"] = jnp.array([0.0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1])  # P = 0, 2/3, 1
    return logp, b


def test_hpt_mix_gate_is_rl_plus_sft_everywhere():
    logp, b = _hpt_batch()
    mix = upge.get_recipe("hpt", gate="mix")
    rl = upge.Recipe(
        "rl",
        (
            upge.Term(
                "rl",
                rollout=upge.Parts(
                    (upge.part("ppo_clip", eps_low=0.2, eps_high=0.2),),
                    upge.part("behaviour"),
                    upge.part("grpo", eps=1e-6),
                    upge.part("token-mean"),
                ),
            ),
        ),
    )
    sft = upge.Recipe("sft", (upge.Term("sft", demo=upge.Parts()),))
    want = lambda lp: _loss(rl, b, 4)(lp) + _loss(sft, b, 4)(lp)
    np.testing.assert_allclose(jax.grad(_loss(mix, b, 4))(logp), jax.grad(want)(logp), atol=1e-6)


def test_hpt_soft_gates_weight_rows_by_pass_rate():
    logp, b = _hpt_batch()
    prepared, m = upge.prepare(upge.get_recipe("hpt", gate="linear"), b, group_size=4)
    p = np.repeat([0.0, 2 / 3, 1.0], 4)
    np.testing.assert_allclose(prepared["upge/rl/rollout/gate"], p, atol=1e-6)
    np.testing.assert_allclose(prepared["upge/sft/demo/gate"], 1 - p, atol=1e-6)
    hard, _ = upge.prepare(upge.get_recipe("hpt", gamma=0.5), b, group_size=4)
    np.testing.assert_allclose(hard["upge/rl/rollout/gate"], p > 0.5)
    soft, _ = upge.prepare(upge.get_recipe("hpt", gate="soft", gamma=0.5, temperature=0.01), b, group_size=4)
    np.testing.assert_allclose(soft["upge/rl/rollout/gate"], p > 0.5, atol=1e-6)


def test_dapo_dynamic_sampling_drops_zero_variance_groups():
    logp, b = random_batch(3, b=12, t=6, group_size=4)
    b["rewards"] = jnp.array([1.0, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0])
    plain = upge.get_recipe("dapo")
    ds = upge.get_recipe("dapo", dynamic_sampling=True)
    np.testing.assert_allclose(upge.denominators(ds, b, group_size=4)["pg"], b["mask"][4:8].sum())
    # same numerator (flat groups have Â = 0), smaller denominator
    g_plain = jax.grad(_loss(plain, b, 4))(logp)
    g_ds = jax.grad(_loss(ds, b, 4))(logp)
    np.testing.assert_allclose(g_ds, g_plain * b["mask"].sum() / b["mask"][4:8].sum(), atol=1e-6)


def test_dual_clip_ppo_and_kl_in_reward_recipes_run():
    logp, b = random_batch(4, b=8, t=6, group_size=1)
    for r in (upge.get_recipe("ppo", dual_clip_c=3.0), upge.get_recipe("ppo", kl_coef=0.1)):
        g = jax.grad(_loss(r, b, 1))(logp)
        assert np.all(np.isfinite(g)) and float(jnp.abs(g).sum()) > 0


def test_luffy_demo_rows_ignore_old_logp():
    logp, b = random_batch(5, b=8, t=6, group_size=4, demo_last=True)
    r = upge.get_recipe("luffy")
    b2 = dict(b, old_logp=jnp.where(b["is_demo"][:, None], 123.0, b["old_logp"]))
    np.testing.assert_allclose(jax.grad(_loss(r, b, 4))(logp), jax.grad(_loss(r, b2, 4))(logp), atol=1e-7)


def test_unknown_names_fail_loudly():
    with pytest.raises(KeyError):
        upge.get_recipe("nope")
    with pytest.raises(ValueError):
        upge.get_recipe("hpt", variant="nope")
    logp, b = random_batch(0, b=4, t=3, group_size=1)
    with pytest.raises(KeyError, match="values"):
        upge.compute_loss(upge.get_recipe("ppo"), logp, {k: v for k, v in b.items() if k != "values"})


def test_srft_weights_use_the_entropy_argument_when_the_batch_has_none():
    logp, b = random_batch(6, b=8, t=6, group_size=4, demo_last=True)
    r = upge.get_recipe("srft")
    without = {k: v for k, v in b.items() if k != "entropy"}
    g1 = jax.grad(_loss(r, b, 4))(logp)
    g2 = jax.grad(lambda lp: _loss(r, without, 4, entropy=b["entropy"])(lp))(logp)
    np.testing.assert_allclose(g1, g2, atol=1e-7)
