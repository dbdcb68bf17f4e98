"""Monte-Carlo check of what each KL form's gradient estimates.

Small categorical policy ``π_θ = softmax(θ)`` over K actions and a fixed
``π_ref``. For every estimator form we draw N samples ``x ~ π_θ``, take the
per-sample gradient of the form as the library computes it, and compare the
sample mean (± standard error) with the exact gradients of the reverse KL
``KL(π_θ‖π_ref)`` and the forward KL ``KL(π_ref‖π_θ)``:

| form | estimates |
|---|---|
| k1 in loss | 0 (biased for ∇KL) |
| k2 in loss | ∇KL(π_θ‖π_ref) (unbiased) |
| k3 in loss | ∇KL(π_ref‖π_θ) (biased for the reverse KL) |
| k3_st in loss | ∇KL(π_θ‖π_ref) (unbiased), value of k3 |
| k1 in reward (score function) | ∇KL(π_θ‖π_ref) (unbiased) |
| k2, k3 in reward | biased |

and the values: E[k1] = E[k3] = KL, E[k2] ≠ KL. The same table is in the
docstring of `upt_jax.upge._regularisers`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import upt_jax.upge as upge

K, N = 6, 200_000
THETA = jnp.array([0.8, -0.4, 1.3, 0.0, -1.1, 0.5], jnp.float32)
REF = jax.nn.log_softmax(jnp.array([-0.5, 0.9, 0.1, 1.2, -0.3, -1.0], jnp.float32))


def reverse_kl(theta):
    lp = jax.nn.log_softmax(theta)
    return jnp.sum(jnp.exp(lp) * (lp - REF))


def forward_kl(theta):
    lp = jax.nn.log_softmax(theta)
    return jnp.sum(jnp.exp(REF) * (REF - lp))


def per_sample_loss(theta, x, kind, where):
    """The library's KL term for one sampled action (a [1, 1] batch)."""
    logp = jax.nn.log_softmax(theta)[x].reshape(1, 1)
    ref = REF[x].reshape(1, 1)
    mask = jnp.ones((1, 1))
    if where == "loss":
        return jnp.sum(upge.kl_loss_terms(logp, ref, mask, 1.0, kind))
    # in the reward: the penalised reward r − k (here r = 0) is the advantage of a
    # REINFORCE surrogate; minimising it has gradient −Â ∇log π = k ∇log π.
    tok_r = upge.kl_penalised_rewards(jnp.zeros(1), logp, ref, mask, 1.0, kind)
    s, d, _ = upge.policy_gradient_loss(logp, mask, advantages=tok_r)
    return s / d


@pytest.fixture(scope="module")
def samples():
    return jax.random.categorical(jax.random.PRNGKey(0), THETA, shape=(N,))


def _mc(kind, where, xs):
    g = jax.jit(jax.vmap(jax.grad(per_sample_loss), in_axes=(None, 0, None, None)), static_argnums=(2, 3))(
        THETA, xs, kind, where
    )
    return g.mean(0), g.std(0) / np.sqrt(len(xs))


def _exact_expectation(kind, where):
    probs = jax.nn.softmax(THETA)
    g = jax.vmap(jax.grad(per_sample_loss), in_axes=(None, 0, None, None))(THETA, jnp.arange(K), kind, where)
    return jnp.einsum("k,kd->d", probs, g)


CASES = [
    # (kind, where, what the expected gradient is)
    ("k1", "loss", "zero"),
    ("k2", "loss", "reverse"),
    ("k3", "loss", "forward"),
    ("k3_st", "loss", "reverse"),
    ("k1", "reward", "reverse"),
]
BIASED = [("k1", "loss"), ("k3", "loss"), ("k2", "reward"), ("k3", "reward")]


@pytest.mark.parametrize("kind,where,target", CASES)
def test_kl_gradient_estimates(samples, kind, where, target):
    want = {"zero": jnp.zeros(K), "reverse": jax.grad(reverse_kl)(THETA), "forward": jax.grad(forward_kl)(THETA)}[
        target
    ]
    # exact expectation over the K actions: equality to float precision
    np.testing.assert_allclose(_exact_expectation(kind, where), want, atol=2e-6)
    # Monte Carlo: within 5 standard errors
    mean, se = _mc(kind, where, samples)
    assert np.all(np.abs(mean - want) <= 5 * se + 1e-6), (mean, want, se)


@pytest.mark.parametrize("kind,where", BIASED)
def test_biased_forms_miss_the_reverse_kl_gradient(samples, kind, where):
    want = jax.grad(reverse_kl)(THETA)
    exact = _exact_expectation(kind, where)
    assert float(jnp.max(jnp.abs(exact - want))) > 0.05
    mean, se = _mc(kind, where, samples)
    assert np.any(np.abs(mean - want) > 10 * se)


def test_kl_values(samples):
    lp = jax.nn.log_softmax(THETA)[samples][None]
    ref = REF[samples][None]
    kl = float(reverse_kl(THETA))
    vals = {k: upge.kl_estimate(lp, ref, k)[0] for k in upge.KL_ESTIMATORS}
    for k in ("k1", "k3", "k3_st"):  # unbiased values
        se = float(vals[k].std()) / np.sqrt(N)
        assert abs(float(vals[k].mean()) - kl) < 5 * se, k
    se = float(vals["k2"].std()) / np.sqrt(N)
    assert abs(float(vals["k2"].mean()) - kl) > 10 * se  # biased value
    np.testing.assert_allclose(vals["k3_st"], vals["k3"], rtol=1e-6)
    assert float(vals["k3"].min()) >= 0.0
