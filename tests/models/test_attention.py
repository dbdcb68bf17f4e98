"""Causal query blocks in the attention core (`upt_jax.models.attention.attend(query_block=)`):
the same attention and gradients as one block, with the scores above the diagonal's blocks
never computed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from upt_jax.models import (
    attention,
    init_model,
    load_hf_checkpoint,
    make_mesh,
    save_hf_checkpoint,
    token_logprobs,
    transformer,
)
from upt_jax.models.config import ModelConfig


def _small_cfg():
    return ModelConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8
    )


def test_causal_query_block_sizes():
    block = attention.causal_query_block
    assert block(1) is None and block(attention.QUERY_BLOCK) is None  # short rows: one block
    assert block(attention.QUERY_BLOCK + 1) == attention.QUERY_BLOCK
    assert block(256) == 128 and block(1024) == 128
    # long rows: at most MAX_QUERY_BLOCKS blocks, the last one shorter
    assert block(4096) == 512 and block(1025) == 129
    for t in (129, 300, 1000, 4097):
        assert -(-t // block(t)) <= attention.MAX_QUERY_BLOCKS


def _rows(rng, b, t, h, kh, dh):
    q, k, v = (jnp.asarray(rng.randn(b, t, n, dh), jnp.float32) for n in (h, kh, kh))
    return q, k, v


@pytest.mark.parametrize("rows", ["padded", "packed"])
@pytest.mark.parametrize("query_block", [1, 3, 4, 10])
def test_blocks_give_the_one_block_attention_and_gradients(rows, query_block):
    rng = np.random.RandomState(0)
    b, t, h, kh, dh = 3, 11, 4, 2, 8
    q, k, v = _rows(rng, b, t, h, kh, dh)
    slots = jnp.arange(t)
    if rows == "padded":  # full, left-padded, right-padded
        key_valid = jnp.asarray([[1] * 11, [0, 0, 0] + [1] * 8, [1] * 7 + [0] * 4], bool)
        seg = None
    else:
        seg = jnp.asarray([[1] * 5 + [2] * 6, [1, 1, 2, 2, 2, 3, 3, 3, 3, 0, 0], [1] * 11])
        key_valid = seg > 0
    # a query that sees no key (left padding) is padding: its output is left out of the loss
    kv = np.asarray(key_valid)
    vis = kv[:, None, :] & np.tril(np.ones((t, t), bool))[None]
    if seg is not None:
        vis &= np.asarray(seg)[:, :, None] == np.asarray(seg)[:, None, :]
    sees = vis.any(-1)  # [B, T]
    w = jnp.asarray(rng.randn(b, t, h, dh) * sees[:, :, None, None], jnp.float32)

    def loss(qb, q, k, v):
        return jnp.sum(attention.attend(q, k, v, key_valid, slots, slots, seg, query_block=qb) * w)

    one = jax.jit(jax.value_and_grad(lambda *a: loss(None, *a), argnums=(0, 1, 2)))(q, k, v)
    blocked = jax.jit(jax.value_and_grad(lambda *a: loss(query_block, *a), argnums=(0, 1, 2)))(q, k, v)
    for x, y in zip(jax.tree.leaves(one), jax.tree.leaves(blocked)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-6)
    out_one = attention.attend(q, k, v, key_valid, slots, slots, seg)
    out_blk = attention.attend(q, k, v, key_valid, slots, slots, seg, query_block=query_block)
    np.testing.assert_allclose(np.asarray(out_blk)[sees], np.asarray(out_one)[sees], rtol=1e-5, atol=1e-6)


def test_blocks_skip_the_scores_above_the_diagonal():
    """XLA's FLOP count of the blocked attention: (n + 1) / 2n of the full one's score and
    value products for n blocks (9/16 at 8), plus the same element-wise work on fewer scores."""
    rng = np.random.RandomState(1)
    b, t, h, kh, dh = 2, 256, 4, 2, 64
    q, k, v = _rows(rng, b, t, h, kh, dh)
    valid, slots = jnp.ones((b, t), bool), jnp.arange(t)

    def flops(qb):
        f = jax.jit(lambda q, k, v: attention.attend(q, k, v, valid, slots, slots, query_block=qb))
        return f.lower(q, k, v).compile().cost_analysis()["flops"]

    full, eight = flops(None), flops(32)
    assert eight < 0.6 * full
    assert flops(128) < 0.8 * full  # two blocks: 3/4


def test_the_blocks_need_the_queries_own_keys():
    rng = np.random.RandomState(2)
    q, _, _ = _rows(rng, 1, 4, 2, 1, 8)
    _, k, v = _rows(rng, 1, 6, 2, 1, 8)
    with pytest.raises(ValueError, match="query_block"):
        attention.attend(q, k, v, jnp.ones((1, 6), bool), jnp.arange(4), jnp.arange(6), query_block=2)


def test_a_long_row_through_the_model_matches_one_block(monkeypatch):
    """A tiny model on rows of 160 tokens (blocks of 128 and 32), padded and packed: the
    hidden states of every real token and the log-prob gradient are those of one block."""
    cfg = _small_cfg()
    model = init_model(cfg, 0)
    t = 160
    assert attention.causal_query_block(t) == 128
    rng = np.random.RandomState(3)
    tokens = jnp.asarray(rng.randint(1, cfg.vocab_size, (2, t)))
    mask = jnp.asarray(np.concatenate([np.ones((1, t)), (np.arange(t) >= 20)[None]], 0), jnp.int32)
    seg = jnp.asarray(np.stack([np.repeat([1, 2], [100, 60]), np.repeat([1, 2, 0], [70, 80, 10])]))
    graphdef, params = nnx.split(model)

    def run(p, **kw):
        m = nnx.merge(graphdef, p)
        h = m.hidden_states(tokens, **kw)[0]
        return h, token_logprobs(h[:, :-1], m.lm_head_kernel(), tokens[:, 1:])

    def loss(p, real, **kw):  # log-probs read at real tokens, of real tokens
        return jnp.sum(run(p, **kw)[1] * real[:, :-1] * real[:, 1:])

    def flops(fn):
        return jax.jit(fn).lower(params).compile().cost_analysis()["flops"]

    for kw, real in ((dict(attention_mask=mask), mask), (dict(segment_ids=seg), (seg > 0).astype(jnp.int32))):
        # a new function per arm: jit would reuse the first arm's trace for the same one
        arm = lambda: lambda p: (run(p, **kw)[0], jax.grad(loss)(p, real, **kw))  # noqa: B023
        both = arm()
        blocked, blocked_flops = jax.jit(both)(params), flops(both)
        with monkeypatch.context() as mp:
            mp.setattr(transformer, "causal_query_block", lambda t: None)
            both = arm()
            one, one_flops = jax.jit(both)(params), flops(both)
        assert blocked_flops < 0.95 * one_flops  # the model runs the blocks
        keep = np.asarray(real, bool)
        np.testing.assert_allclose(np.asarray(blocked[0])[keep], np.asarray(one[0])[keep], rtol=1e-5, atol=1e-5)
        for x, y in zip(jax.tree.leaves(one[1]), jax.tree.leaves(blocked[1])):
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-6)


def test_blocks_on_an_8_device_mesh(tmp_path):
    """Rows of 160 tokens (two blocks) on a data × fsdp × tensor mesh (heads split over tensor):
    the logits of the unsharded model."""
    assert jax.device_count() == 8, "tests run with 8 simulated CPU devices (tests/conftest.py)"
    cfg = _small_cfg()
    d = save_hf_checkpoint(init_model(cfg, 5), tmp_path / "ckpt")
    rng = np.random.RandomState(4)
    tokens = jnp.asarray(rng.randint(1, cfg.vocab_size, (4, 160)))
    mask = jnp.asarray((np.arange(160)[None] >= np.array([0, 7, 30, 0])[:, None]).astype(np.int32))
    sharded = load_hf_checkpoint(d, mesh=make_mesh(data=2, fsdp=2, tensor=2))
    a = np.asarray(sharded(tokens, attention_mask=mask)[0])
    b = np.asarray(load_hf_checkpoint(d)(tokens, attention_mask=mask)[0])
    keep = np.asarray(mask, bool)
    np.testing.assert_allclose(a[keep], b[keep], atol=1e-5)


@pytest.mark.parametrize("t", [20, 160])
def test_a_prefill_with_a_static_index_reads_only_the_written_slots(t):
    """A prefill into an empty cache (`KVCache.init(static_index=True)`) attends over its own slots
    only (and in causal query blocks past 128 tokens): the same hidden states, cache and next
    decode step as a prefill over the whole cache, with fewer FLOPs."""
    from upt_jax.models import KVCache

    model = init_model(_small_cfg(), 1)
    graphdef, params = nnx.split(model)
    rng = np.random.RandomState(6)
    tokens = jnp.asarray(rng.randint(1, 64, (2, t)))
    mask = jnp.asarray((np.arange(t)[None] >= np.array([0, 5])[:, None]).astype(np.int32))
    nxt = jnp.asarray(rng.randint(1, 64, (2, 1)))

    def arm(static):
        def run(p):
            m = nnx.merge(graphdef, p)
            cache = KVCache.init(m.cfg, 2, t + 40, static_index=static)
            h, cache = m.hidden_states(tokens, attention_mask=mask, cache=cache)
            assert cache.static_index == (t if static else None)
            cache = cache.replace(static_index=None)
            h1, _ = m.hidden_states(nxt, positions=jnp.sum(mask, -1)[:, None], cache=cache)
            return h, cache.k, cache.v, h1

        return run

    static, full = arm(True), arm(False)
    got, want = jax.jit(static)(params), jax.jit(full)(params)
    keep = np.asarray(mask, bool)  # padding slots' keys and values are never read
    np.testing.assert_allclose(np.asarray(got[0])[keep], np.asarray(want[0])[keep], rtol=1e-5, atol=1e-5)
    for x, y in zip(got[1], want[1]):  # keys [B, K, Dh, S]
        np.testing.assert_allclose(
            np.moveaxis(np.asarray(x)[..., :t], 3, 1)[keep], np.moveaxis(np.asarray(y)[..., :t], 3, 1)[keep], atol=1e-5
        )
    for x, y in zip(got[2], want[2]):  # values [B, K, S, Dh]
        np.testing.assert_allclose(
            np.moveaxis(np.asarray(x)[:, :, :t], 2, 1)[keep],
            np.moveaxis(np.asarray(y)[:, :, :t], 2, 1)[keep],
            atol=1e-5,
        )
    np.testing.assert_allclose(np.asarray(got[3]), np.asarray(want[3]), rtol=1e-5, atol=1e-5)
    flops = lambda f: jax.jit(f).lower(params).compile().cost_analysis()["flops"]  # noqa: E731
    assert flops(static) < flops(full)


def test_a_static_index_past_the_cache_is_an_error():
    from upt_jax.models import KVCache

    model = init_model(_small_cfg(), 1)
    _, cache = model.hidden_states(jnp.ones((1, 6), jnp.int32), cache=KVCache.init(model.cfg, 1, 8, static_index=True))
    assert cache.static_index == 6
    with pytest.raises(ValueError, match="overflow"):
        model.hidden_states(jnp.ones((1, 3), jnp.int32), cache=cache)


def test_shared_prompts_and_long_responses_run_in_blocks_and_match_the_full_rows():
    """`shared_prompt_logprobs` with a 140-token prompt and 150-token responses (both passes in
    causal query blocks, the responses' offset by the prompt): the full rows' log-probs."""
    from upt_jax.models import sequence_logprobs
    from upt_jax.models.logprobs import shared_prompt_logprobs

    model = init_model(_small_cfg(), 2)
    graphdef, params = nnx.split(model)
    n, groups, p, r = 2, 2, 140, 150
    rng = np.random.RandomState(7)
    tokens = np.zeros((n * groups, p + r), np.int32)
    attn = np.zeros_like(tokens)
    for g in range(groups):
        plen = [130, 140][g]  # the first group's prompt is left-padded
        prompt = rng.randint(1, 64, plen)
        for i in range(g * n, (g + 1) * n):
            lr = rng.randint(100, r + 1)
            tokens[i, p - plen : p], attn[i, p - plen : p] = prompt, 1
            tokens[i, p : p + lr], attn[i, p : p + lr] = rng.randint(1, 64, lr), 1

    def run(prm, shared):
        args = (nnx.merge(graphdef, prm), jnp.asarray(tokens), jnp.asarray(attn))
        if shared:
            return shared_prompt_logprobs(*args, group_size=n, response_len=r, chunk_size=64)
        return sequence_logprobs(*args, chunk_size=64)

    run = jax.jit(run, static_argnums=1)
    full, shared = np.asarray(run(params, False)), np.asarray(run(params, True))
    resp = attn[:, p:] > 0
    np.testing.assert_allclose(shared[:, p:][resp], full[:, p:][resp], rtol=1e-5, atol=1e-5)
