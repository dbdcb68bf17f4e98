"""Micro-batch invariance: splitting a batch changes nothing.

The gradient of a batch must equal the accumulated gradient of the same batch
split into 1, 2 and 4 micro-batches, where each micro-batch contributes its
*sums* and the normalisation uses the *summed denominators* — for every
aggregation mode and every recipe (the bug where per-micro-batch means are
averaged is what TRL and verl users keep hitting).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import upt_jax.upge as upge
from tests.upge.batches import RECIPE_SETUPS, random_batch, recipe_case


def _split(tree, n, group_size):
    b = jax.tree.leaves(tree)[0].shape[0]
    assert b % (n * group_size) == 0
    step = b // n
    return [jax.tree.map(lambda x: x[i * step : (i + 1) * step], tree) for i in range(n)]


@pytest.mark.parametrize("mode", upge.AGGREGATION_MODES)
def test_policy_gradient_loss_microbatch_invariance(mode):
    logp, batch = random_batch(3, b=16, t=8, group_size=4, holes=True)
    adv = upge.grpo_advantages(batch["rewards"], 4)  # whole-batch statistics
    stable_fn = lambda lp, ol, a: upge.ppo_clip(lp - ol, a, 0.2, 0.28)

    def loss_sum(lp, mask, ol, a):
        s, d, _ = upge.policy_gradient_loss(
            lp, mask, advantages=a, ref_logp=ol, stable=stable_fn(lp, ol, a), aggregation=mode
        )
        return s, d

    def full(lp):
        s, d = loss_sum(lp, batch["mask"], batch["old_logp"], adv)
        return s / d

    g_full = jax.grad(full)(logp)
    for n in (1, 2, 4):
        parts = _split((logp, batch["mask"], batch["old_logp"], adv), n, 4)
        total_d = sum(loss_sum(*p)[1] for p in parts)
        total_s = sum(loss_sum(*p)[0] for p in parts)
        np.testing.assert_allclose(total_s / total_d, full(logp), rtol=1e-6, atol=1e-7)
        grads = [jax.grad(lambda lp, p=p: loss_sum(lp, *p[1:])[0] / total_d)(p[0]) for p in parts]
        np.testing.assert_allclose(jnp.concatenate(grads), g_full, rtol=1e-5, atol=1e-7)


def test_mean_of_micro_batch_means_is_not_invariant():
    """Sanity check that the test above can fail: averaging per-micro-batch token means differs."""
    logp, batch = random_batch(4, b=8, t=8, group_size=1)
    adv = batch["rewards"]

    def mean_loss(lp, m, a):
        s, d, _ = upge.policy_gradient_loss(lp, m, advantages=a, aggregation="token-mean")
        return s / d

    g_full = jax.grad(mean_loss)(logp, batch["mask"], adv)
    parts = _split((logp, batch["mask"], adv), 2, 1)
    g_wrong = jnp.concatenate([jax.grad(mean_loss)(*p) / 2 for p in parts])
    assert not np.allclose(g_full, g_wrong, atol=1e-6)


@pytest.mark.parametrize("key", sorted(RECIPE_SETUPS))
def test_recipe_microbatch_invariance(key):
    recipe, logp, batch, g = recipe_case(key, seed=11, b=16, t=8)
    prepared, _ = upge.prepare(recipe, batch, group_size=g)

    def full(lp):
        s, d, _ = upge.compute_loss(recipe, lp, prepared, group_size=g)
        return upge.normalise(s, d)

    g_full = jax.grad(full)(logp)
    assert np.all(np.isfinite(g_full))
    assert float(jnp.abs(g_full).sum()) > 0
    for n in (1, 2, 4):
        mbs = _split((logp, prepared), n, g)
        outs = [upge.compute_loss(recipe, lp, mb, group_size=g) for lp, mb in mbs]
        sums = [o[:2] for o in outs]
        total_d = {k: sum(d[k] for _, d in sums) for k in sums[0][1]}
        total_s = {k: sum(s[k] for s, _ in sums) for k in sums[0][0]}
        # the logged objective accumulates the same way: Σ_k (Σ_mb S^obj_k) / D_k
        obj = {k: sum(o[2][f"objective_sum/{k}"] for o in outs) for k in total_d}
        whole = upge.compute_loss(recipe, logp, prepared, group_size=g)[2]["objective"]
        np.testing.assert_allclose(upge.normalise(obj, total_d), whole, rtol=1e-5, atol=1e-6)
        # the denominators are parameter-free and can be computed up front
        dens = upge.denominators(recipe, prepared, group_size=g)
        for k in dens:
            np.testing.assert_allclose(total_d[k], dens[k], rtol=1e-6)
        np.testing.assert_allclose(upge.normalise(total_s, total_d), full(logp), rtol=1e-5, atol=1e-5)
        grads = [
            jax.grad(lambda lp, mb=mb: upge.normalise(upge.compute_loss(recipe, lp, mb, group_size=g)[0], total_d))(lp)
            for lp, mb in mbs
        ]
        np.testing.assert_allclose(jnp.concatenate(grads), g_full, rtol=1e-5, atol=1e-7)
