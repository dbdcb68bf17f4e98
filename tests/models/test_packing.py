"""Packed rows: several sequences in one row with ``segment_ids`` give what each gives alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from upt_jax.models import KVCache, init_model, positions_from_segments, preset, sequence_logprobs

SMALL = dict(
    num_layers=2, vocab_size=128, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16
)
LENGTHS = (7, 3, 11, 1)  # packed one after the other, then padding
ROW = 26


def _packed(seed=0):
    rng = np.random.RandomState(seed)
    seqs = [rng.randint(1, SMALL["vocab_size"], n).astype(np.int32) for n in LENGTHS]
    tokens = np.zeros((1, ROW), np.int32)
    seg = np.zeros((1, ROW), np.int32)
    at = 0
    for i, s in enumerate(seqs):
        tokens[0, at : at + len(s)] = s
        seg[0, at : at + len(s)] = i + 1
        at += len(s)
    return seqs, jnp.asarray(tokens), jnp.asarray(seg)


def test_positions_restart_in_each_segment():
    seg = jnp.asarray([[1, 1, 1, 2, 2, 3, 0, 0], [1, 2, 2, 2, 2, 2, 2, 2]])
    np.testing.assert_array_equal(positions_from_segments(seg), [[0, 1, 2, 0, 1, 0, 0, 1], [0, 0, 1, 2, 3, 4, 5, 6]])


@pytest.mark.parametrize("remat", ["none", "full"])
def test_packed_row_equals_each_sequence_alone(remat):
    from flax import nnx

    model = init_model(preset("tiny", **SMALL), 0, remat=remat)
    seqs, tokens, seg = _packed()
    graphdef, params = nnx.split(model)

    @jax.jit  # one program for all of it: op by op, the un-rematted model spent its time compiling
    def run(p):
        m = nnx.merge(graphdef, p)
        packed = (
            m.hidden_states(tokens, segment_ids=seg)[0],
            *sequence_logprobs(m, tokens, segment_ids=seg, chunk_size=8, return_entropy=True),
        )
        each = [
            (
                m.hidden_states(jnp.asarray(s)[None])[0],
                *sequence_logprobs(m, jnp.asarray(s)[None], chunk_size=8, return_entropy=True),
            )
            for s in seqs
        ]
        return packed, each

    (hidden, logp, ent), each = run(params)
    at = 0
    for s, (alone, lp, en) in zip(seqs, each):
        n = len(s)
        np.testing.assert_allclose(hidden[0, at : at + n], alone[0], atol=1e-5)
        np.testing.assert_allclose(logp[0, at : at + n], lp[0], atol=1e-5)  # 0 at the segment's first token
        np.testing.assert_allclose(ent[0, at : at + n], en[0], atol=1e-5)
        at += n
    assert float(jnp.abs(logp[0, at:]).max()) == 0.0 and float(jnp.abs(ent[0, at:]).max()) == 0.0


def test_packed_gradients_equal_unpacked():
    model = init_model(preset("tiny", **SMALL), 0)
    seqs, tokens, seg = _packed(1)
    from flax import nnx

    graphdef, params = nnx.split(model)

    def packed(p):
        return jnp.sum(sequence_logprobs(nnx.merge(graphdef, p), tokens, segment_ids=seg, chunk_size=8))

    def alone(p):
        m = nnx.merge(graphdef, p)
        return sum(jnp.sum(sequence_logprobs(m, jnp.asarray(s)[None], chunk_size=8)) for s in seqs)

    g1, g0 = jax.jit(jax.grad(packed))(params), jax.jit(jax.grad(alone))(params)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_segment_ids_need_the_no_cache_path():
    cfg = preset("tiny", **SMALL)
    model = init_model(cfg, 0)
    _, tokens, seg = _packed()
    with pytest.raises(ValueError, match="KV cache"):
        model.hidden_states(tokens, segment_ids=seg, cache=KVCache.init(cfg, 1, ROW))
