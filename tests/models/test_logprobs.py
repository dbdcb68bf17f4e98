"""Chunked token log-probs: equal to the naive form, and much smaller compiled temporaries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from upt_jax.models import init_model, naive_token_logprobs, preset, sequence_logprobs, token_logprobs


ONE_LAYER = preset(
    "tiny", num_layers=1, vocab_size=64, hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1, head_dim=16
)


def _inputs(b, t, d, v, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    h = jax.random.normal(k1, (b, t, d), jnp.float32)
    w = jax.random.normal(k2, (d, v), jnp.float32) * 0.05
    tg = jax.random.randint(k3, (b, t), 0, v)
    return h, w, tg


@pytest.mark.parametrize("t,chunk", [(37, 8), (64, 64), (50, 128), (1, 4)])
def test_chunked_equals_naive_values_and_grads(t, chunk):
    h, w, tg = _inputs(3, t, 16, 101)
    lp, ent = token_logprobs(h, w, tg, chunk_size=chunk, return_entropy=True, remat="always")
    lp0, ent0 = naive_token_logprobs(h, w, tg, return_entropy=True)
    np.testing.assert_allclose(lp, lp0, atol=1e-5)
    np.testing.assert_allclose(ent, ent0, atol=1e-5)
    # entropy is a real entropy: 0 ≤ H ≤ log V
    assert float(ent.min()) >= -1e-5 and float(ent.max()) <= np.log(101) + 1e-5

    def loss(fn, h, w):
        a, e = fn(h, w)
        return jnp.sum(a * jnp.cos(jnp.arange(t))) + 0.3 * jnp.sum(e)

    chunked = lambda h, w: token_logprobs(h, w, tg, chunk_size=chunk, return_entropy=True, remat="always")
    naive = lambda h, w: naive_token_logprobs(h, w, tg, return_entropy=True)
    g1 = jax.grad(lambda h, w: loss(chunked, h, w), argnums=(0, 1))(h, w)
    g0 = jax.grad(lambda h, w: loss(naive, h, w), argnums=(0, 1))(h, w)
    for a, b in zip(g1, g0):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_temperature():
    h, w, tg = _inputs(2, 9, 8, 33)
    a = token_logprobs(h, w, tg, chunk_size=4, temperature=0.7, remat="always")
    b = jax.nn.log_softmax(jnp.einsum("btd,dv->btv", h, w) / 0.7)
    np.testing.assert_allclose(a, jnp.take_along_axis(b, tg[..., None], -1)[..., 0], atol=1e-5)


def _temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_chunked_memory_at_least_4x_smaller_v32000_t512():
    b, t, d, v = 2, 512, 64, 32000
    h = jax.ShapeDtypeStruct((b, t, d), jnp.float32)
    w = jax.ShapeDtypeStruct((d, v), jnp.float32)
    tg = jax.ShapeDtypeStruct((b, t), jnp.int32)
    chunked = lambda h, w, tg: token_logprobs(h, w, tg, chunk_size=64, return_entropy=True, remat="always")
    naive = lambda h, w, tg: naive_token_logprobs(h, w, tg, return_entropy=True)
    fwd_c, fwd_n = _temp_bytes(chunked, h, w, tg), _temp_bytes(naive, h, w, tg)
    assert fwd_n >= 4 * fwd_c, (fwd_n, fwd_c)
    # forward + backward, which is what training compiles
    grad = lambda fn: jax.grad(lambda h, w, tg: sum(jnp.sum(x) for x in fn(h, w, tg)), argnums=(0, 1))
    bwd_c, bwd_n = _temp_bytes(grad(chunked), h, w, tg), _temp_bytes(grad(naive), h, w, tg)
    assert bwd_n >= 4 * bwd_c, (bwd_n, bwd_c)
    # the naive form really holds [B, T, V] fp32
    assert fwd_n >= b * t * v * 4


def test_sequence_logprobs_aligned_with_tokens():
    model = init_model(ONE_LAYER, 0)
    tokens = jax.random.randint(jax.random.key(1), (2, 10), 0, 64)
    mask = jnp.array([[0, 0, 0] + [1] * 7, [1] * 10])
    lp, ent = sequence_logprobs(model, tokens, mask, chunk_size=4, return_entropy=True)
    logits, _ = model(tokens, attention_mask=mask)
    ref = jax.nn.log_softmax(logits[:, :-1])
    ref = jnp.take_along_axis(ref, tokens[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(lp[:, 1:], ref, atol=1e-5)
    assert np.all(np.asarray(lp[:, 0]) == 0) and np.all(np.asarray(ent[:, 0]) == 0)


def test_auto_remat_chunks_only_above_the_budget(monkeypatch):
    """remat="auto" keeps the logits (no recompute) while B·T·V fp32 fits AUTO_REMAT_BYTES, and
    chunks + recomputes above it; "never" and "always" force one or the other."""
    import upt_jax.models.logprobs as lp

    b, t, d, v = 2, 512, 64, 32000
    args = (
        jax.ShapeDtypeStruct((b, t, d), jnp.float32),
        jax.ShapeDtypeStruct((d, v), jnp.float32),
        jax.ShapeDtypeStruct((b, t), jnp.int32),
    )
    grad = lambda remat: jax.grad(
        lambda h, w, tg: jnp.sum(token_logprobs(h, w, tg, chunk_size=64, return_entropy=True, remat=remat)[0]),
        argnums=(0, 1),
    )
    logits = b * t * v * 4
    never, always = _temp_bytes(grad("never"), *args), _temp_bytes(grad("always"), *args)
    assert never >= logits and never >= 4 * always, (never, always)
    assert lp.AUTO_REMAT_BYTES > logits  # the default budget keeps these logits
    assert _temp_bytes(grad("auto"), *args) == never
    monkeypatch.setattr(lp, "AUTO_REMAT_BYTES", logits - 1)
    assert _temp_bytes(grad("auto"), *args) == always
    with pytest.raises(ValueError, match="remat"):
        token_logprobs(jnp.zeros((1, 2, 4)), jnp.zeros((4, 8)), jnp.zeros((1, 2), jnp.int32), remat=True)


@pytest.mark.parametrize("remat", ["always", "never"])
def test_remat_modes_same_values_and_grads(remat):
    h, w, tg = _inputs(2, 9, 8, 33)
    f = lambda h, w: sum(
        jnp.sum(x * (i + 1))
        for i, x in enumerate(token_logprobs(h, w, tg, chunk_size=4, return_entropy=True, remat=remat))
    )
    g = lambda h, w: sum(
        jnp.sum(x * (i + 1)) for i, x in enumerate(naive_token_logprobs(h, w, tg, return_entropy=True))
    )
    np.testing.assert_allclose(f(h, w), g(h, w), rtol=1e-6)
    for a, b in zip(jax.grad(f, argnums=(0, 1))(h, w), jax.grad(g, argnums=(0, 1))(h, w)):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("remat", ["never", "always"])
def test_columns_are_the_full_computation_there_and_zero_elsewhere(remat):
    """``columns``: each row's chosen positions get exactly the full computation's log-probs and
    entropies (tempered, over kept sets), every other position 0; the gradient of a loss that reads
    only those columns is unchanged."""
    model = init_model(ONE_LAYER, 0)
    tokens = jax.random.randint(jax.random.key(1), (3, 12), 0, 64)
    attn = jnp.ones((3, 12), jnp.int32)
    cols = jnp.array([[0, 4, 5, 6, 7], [7, 8, 9, 10, 11], [1, 3, 5, 9, 2]], jnp.int32)  # distinct per row, any order
    thr = jnp.where(jax.random.uniform(jax.random.key(2), (3, 12)) < 0.5, -jnp.inf, -1.0)
    kw = dict(chunk_size=4, temperature=0.7, return_entropy=True, remat=remat, kept_threshold=thr)
    lp, ent = sequence_logprobs(model, tokens, attn, **kw)
    lp_c, ent_c = sequence_logprobs(model, tokens, attn, columns=cols, **kw)
    sel = np.zeros((3, 12), bool)
    np.put_along_axis(sel, np.asarray(cols), True, axis=1)
    sel[:, 0] = False  # column 0 is predicted by nothing: 0 in both
    for full, part in ((lp, lp_c), (ent, ent_c)):
        np.testing.assert_allclose(np.asarray(part)[sel], np.asarray(full)[sel], atol=1e-5)
        assert np.all(np.asarray(part)[~sel] == 0)
    assert np.all(np.isfinite(np.asarray(lp)[sel])) and np.any(np.asarray(lp)[~sel] != 0)

    from flax import nnx

    graphdef, params = nnx.split(model)
    w = jnp.asarray(sel, jnp.float32)

    def loss(p, columns):
        m = nnx.merge(graphdef, p)
        out = sequence_logprobs(m, tokens, attn, columns=columns, **dict(kw, return_entropy=False))
        return jnp.sum(out * w)

    g_full, g_cols = jax.grad(loss)(params, None), jax.grad(loss)(params, cols)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_cols)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)


@pytest.mark.parametrize("remat", ["none", "full"])
def test_shared_prompt_logprobs_equal_the_full_rows(remat):
    """Groups of rows with one (left-padded) prompt: running it once and continuing each response
    from its keys and values gives the full rows' log-probs and entropies on the response columns
    (tempered, over kept sets), 0 on the prompt's, and the same gradient (the model's remat policy
    applied on both paths)."""
    from flax import nnx

    from upt_jax.models.logprobs import shared_prompt_logprobs

    cfg = preset(
        "tiny",
        num_layers=2,
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
    )
    model = init_model(cfg, 0, remat=remat)
    n, groups, p, r = 3, 2, 6, 5
    rng = np.random.RandomState(0)
    prompt_len = [4, 6]  # the first group's prompt is left-padded
    tokens = np.zeros((n * groups, p + r), np.int32)
    attn = np.zeros_like(tokens)
    q = rng.randint(1, 64, (groups, p))
    for i in range(n * groups):
        g, lr = i // n, rng.randint(1, r + 1)
        tokens[i, p - prompt_len[g] : p], attn[i, p - prompt_len[g] : p] = q[g, -prompt_len[g] :], 1
        tokens[i, p : p + lr], attn[i, p : p + lr] = rng.randint(1, 64, lr), 1
    thr = jnp.where(jax.random.uniform(jax.random.key(2), tokens.shape) < 0.5, -jnp.inf, -1.0)
    kw = dict(chunk_size=4, temperature=0.7, return_entropy=True, kept_threshold=thr)
    graphdef, params = nnx.split(model)

    def both(prm, shared):  # jitted: op by op, the un-rematted model took 50 s of compiles
        args = (nnx.merge(graphdef, prm), jnp.asarray(tokens), jnp.asarray(attn))
        if shared:
            return shared_prompt_logprobs(*args, group_size=n, response_len=r, **kw)
        return sequence_logprobs(*args, **kw)

    both = jax.jit(both, static_argnums=1)
    (lp, ent), (lp_s, ent_s) = both(params, False), both(params, True)
    resp = attn[:, p:] > 0
    for full, shared in ((lp, lp_s), (ent, ent_s)):
        np.testing.assert_allclose(np.asarray(shared)[:, p:][resp], np.asarray(full)[:, p:][resp], atol=1e-5)
        assert np.all(np.asarray(shared)[:, :p] == 0)
    w = jnp.asarray(np.pad(resp, ((0, 0), (p, 0))), jnp.float32) * jnp.arange(1.0, p + r + 1)  # any weights

    def loss(prm, shared):
        lp_, ent_ = both(prm, shared)
        return jnp.sum((lp_ + 0.1 * ent_) * w)

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    g_full, g_shared = grad(params, False), grad(params, True)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_shared)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-5)
    with pytest.raises(ValueError, match="whole groups"):
        shared_prompt_logprobs(model, jnp.asarray(tokens[:5]), jnp.asarray(attn[:5]), group_size=n, response_len=r)
