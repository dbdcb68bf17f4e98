"""Model behaviour: KV cache, dtypes, remat, sharding from partition rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from upt_jax.models import (
    DEFAULT_RULES,
    KVCache,
    ModelConfig,
    init_model,
    load_hf_checkpoint,
    make_mesh,
    param_specs,
    preset,
    save_hf_checkpoint,
)
from upt_jax.models.partition import match_rule, path_to_str

SMALL = dict(
    num_layers=2, vocab_size=128, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16
)


def _batch(seed=0, b=3, t=9, vocab=128):
    tokens = jax.random.randint(jax.random.key(seed), (b, t), 1, vocab)
    mask = jnp.ones((b, t), jnp.int32).at[0, :4].set(0).at[1, :1].set(0)
    return tokens, mask


def test_kv_cache_prefill_then_decode_equals_full_forward():
    cfg = preset("tiny", **SMALL)
    model = init_model(cfg, 0)
    tokens, mask = _batch()
    full, _ = model(tokens, attention_mask=mask)
    cache = KVCache.init(cfg, 3, 16)
    p = 5
    logits, cache = model(tokens[:, :p], attention_mask=mask[:, :p], cache=cache)
    valid = np.asarray(mask[:, :p], bool)  # padded queries attend to nothing; their output is unused
    np.testing.assert_allclose(np.asarray(logits)[valid], np.asarray(full[:, :p])[valid], atol=1e-5)
    pos = jnp.sum(mask[:, :p], axis=1)
    for t in range(p, tokens.shape[1]):
        step, cache = model(
            tokens[:, t : t + 1], attention_mask=mask[:, t : t + 1], positions=pos[:, None], cache=cache
        )
        np.testing.assert_allclose(step[:, 0], full[:, t], atol=1e-5)
        pos = pos + mask[:, t]
    assert int(cache.index) == tokens.shape[1]


def test_rope_table_rows_equal_rope_tables_and_feed_hidden_states():
    """The decode loop's gathered cos/sin rows (``rope_table`` + ``rope_from_table``) equal the
    phases computed from the positions, with llama3 frequency scaling, and give the same hidden
    states when passed as ``rope=``."""
    from upt_jax.models.transformer import rope_from_table, rope_inv_freq, rope_table, rope_tables

    cfg = preset(
        "tiny",
        **SMALL,
        rope_scaling=(
            ("rope_type", "llama3"),
            ("factor", 8.0),
            ("low_freq_factor", 1.0),
            ("high_freq_factor", 4.0),
            ("original_max_position_embeddings", 32),
        ),
    )
    inv = rope_inv_freq(cfg)
    positions = jnp.asarray([[0, 5, 63], [17, 2, 40]], jnp.int32)
    for got, want in zip(rope_from_table(rope_table(inv, 64), positions), rope_tables(positions, inv)):
        assert got.shape == want.shape == (2, 3, 1, cfg.head_dim)
        np.testing.assert_allclose(got, want, atol=1e-6)
    model = init_model(cfg, 0)
    tokens, mask = _batch()
    pos = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    want, _ = model.hidden_states(tokens, attention_mask=mask)
    got, _ = model.hidden_states(tokens, attention_mask=mask, rope=rope_from_table(rope_table(inv, 16), pos))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_bf16_params_and_compute_close_to_fp32():
    cfg = preset("tiny", **SMALL)
    m32 = init_model(cfg, 0)
    m16 = init_model(cfg.replace(param_dtype="bfloat16", dtype="bfloat16"), 0)
    # same weights as m32, rounded to bf16
    nnx.update(m16, jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(m32)))
    assert m16.layers[0].mlp.up_proj.kernel.value.dtype == jnp.bfloat16
    # same init, rounded: compute in bf16 should be close to fp32
    mixed = init_model(cfg.replace(dtype="bfloat16"), 0)  # fp32 params, bf16 compute
    assert mixed.layers[0].mlp.up_proj.kernel.value.dtype == jnp.float32
    tokens, mask = _batch()
    a, _ = m32(tokens, attention_mask=mask)
    b, _ = mixed(tokens, attention_mask=mask)
    c, _ = m16(tokens, attention_mask=mask)
    assert a.dtype == b.dtype == c.dtype == jnp.float32
    valid = np.asarray(mask, bool)
    assert float(jnp.abs(a - b)[valid].max()) < 0.1
    assert float(jnp.abs(a - c)[valid].max()) < 0.1
    assert float(jnp.abs(a - b)[valid].max()) > 0  # really computed in bf16


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_changes_nothing_numerically(remat):
    cfg = preset("tiny", **SMALL)
    tokens, mask = _batch()

    def loss(model):
        logits, _ = model(tokens, attention_mask=mask)
        return jnp.mean(jax.nn.logsumexp(logits, -1))

    g0 = nnx.grad(loss)(init_model(cfg, 0))
    g1 = nnx.grad(loss)(init_model(cfg, 0, remat=remat))
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_partition_rules_name_every_weight_matrix():
    cfg = preset("tiny", **SMALL)
    state = nnx.state(init_model(cfg, 0))
    paths = [path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    for p in paths:
        spec = match_rule(p, DEFAULT_RULES)
        if p.endswith("kernel") or p.endswith("embedding"):
            assert spec != P(), f"{p} would be replicated"
        if "norm" in p:
            assert spec == P(), p


def test_load_onto_8_device_mesh_gives_rule_shardings(tmp_path):
    assert jax.device_count() == 8, "tests run with 8 simulated CPU devices (tests/conftest.py)"
    cfg = preset("tiny", **SMALL, tie_word_embeddings=False)
    d = save_hf_checkpoint(init_model(cfg, 3), tmp_path / "ckpt")
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    model = load_hf_checkpoint(d, mesh=mesh)
    state = nnx.state(model)
    expected = param_specs(state, mesh)
    checked = 0
    for (path, leaf), spec in zip(
        jax.tree_util.tree_flatten_with_path(state)[0], jax.tree.leaves(expected, is_leaf=lambda x: isinstance(x, P))
    ):
        assert leaf.sharding.mesh.shape == mesh.shape
        assert leaf.sharding.spec == spec, path_to_str(path)
        checked += 1
    layer = model.layers[0]
    assert layer.self_attn.q_proj.kernel.value.sharding.spec == P("fsdp", "tensor")
    assert layer.self_attn.o_proj.kernel.value.sharding.spec == P("tensor", "fsdp")
    assert layer.mlp.down_proj.kernel.value.sharding.spec == P("tensor", "fsdp")
    assert model.embed_tokens.embedding.value.sharding.spec == P("tensor", "fsdp")
    assert model.lm_head.kernel.value.sharding.spec == P("fsdp", "tensor")
    assert layer.input_layernorm.weight.value.sharding.is_fully_replicated
    # each device holds 1/4 of a q kernel (fsdp × tensor), replicated over data
    q = layer.self_attn.q_proj.kernel.value
    assert q.addressable_shards[0].data.shape == (q.shape[0] // 2, q.shape[1] // 2)
    assert checked > 10
    # and the sharded model computes the same logits as the unsharded one
    tokens, mask = _batch()
    a, _ = model(tokens, attention_mask=mask)
    b, _ = load_hf_checkpoint(d)(tokens, attention_mask=mask)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_indivisible_dims_fall_back_to_replication():
    mesh = make_mesh(data=1, fsdp=2, tensor=4)
    cfg = preset("tiny", **dict(SMALL, vocab_size=130))  # 130 % 4 != 0
    state = nnx.state(init_model(cfg, 0))
    specs = param_specs(state, mesh)
    assert specs["embed_tokens"]["embedding"].value == P(None, "fsdp")


def test_bad_config_and_mesh_errors():
    with pytest.raises(ValueError, match="model_type"):
        ModelConfig.from_hf_dict(
            dict(
                model_type="gpt2",
                vocab_size=1,
                hidden_size=8,
                intermediate_size=8,
                num_hidden_layers=1,
                num_attention_heads=1,
            )
        )
    with pytest.raises(ValueError, match="rope type"):
        preset("tiny", rope_scaling=(("rope_type", "yarn"),))
    with pytest.raises(ValueError, match="does not match"):
        make_mesh(data=3, fsdp=1, tensor=1)


def test_cpu_dense_custom_vjp_equals_autodiff():
    """The projections' CPU dot (weight gradient from a materialised xᵀ) has autodiff's gradients,
    through nnx.Linear and through the log-prob head, for 3-d inputs."""
    from upt_jax.models.transformer import dense_cpu, dense, dot_general

    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x, w = jax.random.normal(k1, (3, 5, 16)), jax.random.normal(k2, (16, 24)) * 0.1
    probe = jax.random.normal(k3, (3, 5, 24))
    loss = lambda f: lambda x, w: jnp.sum(jnp.tanh(f(x, w)) * probe)
    ref = jax.grad(loss(lambda x, w: jnp.einsum("btd,df->btf", x, w)), argnums=(0, 1))(x, w)
    for f in (dense_cpu, dense, lambda x, w: dot_general(x, w, (((2,), (0,)), ((), ())))):
        got = jax.grad(loss(f), argnums=(0, 1))(x, w)
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert jax.default_backend() != "cpu" or "custom_vjp" in str(jax.make_jaxpr(dense)(x, w))
