"""LoRA / QLoRA adapters on the NNX transformer (upt_jax.models.lora)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from upt_jax.models import init_model, preset, sequence_logprobs
from upt_jax.models.lora import (
    LoraConfig,
    LoRALinear,
    QuantizedKernel,
    apply_lora,
    lora_layers,
    merge_lora,
    set_adapters,
    set_dropout_key,
)
from upt_jax.models.partition import make_mesh, param_specs, shard_model
from upt_jax.train.state import create_train_state, make_optimizer
from upt_jax.train.step import Objective, make_train_step

CFG = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8)


def _model(**kw):
    return init_model(preset("tiny", **dict(CFG, **kw)), 0)


def _tokens():
    return jax.random.randint(jax.random.key(1), (2, 7), 0, 64)


def _perturbed(model, scale=0.05, seed=3):
    """``model`` with random (nonzero) B factors."""
    graphdef, lo, rest = nnx.split(model, nnx.LoRAParam, ...)
    keys = iter(jax.random.split(jax.random.key(seed), len(jax.tree.leaves(lo))))
    lo = jax.tree.map(lambda x: x + scale * jax.random.normal(next(keys), x.shape), lo)
    return nnx.merge(graphdef, lo, rest)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fresh_adapters_and_switched_off_adapters_give_the_base_logits_bitwise(dtype):
    base = _model(param_dtype=dtype, dtype=dtype)
    tok = _tokens()
    ref_logits = np.asarray(base(tok)[0])
    ref_logp = np.asarray(sequence_logprobs(base, tok, jnp.ones_like(tok)))
    lm = apply_lora(base, LoraConfig(rank=4, alpha=8.0))
    assert len(lora_layers(lm)) == 2 * 7 and not lora_layers(base)  # the base model is left as it was
    np.testing.assert_array_equal(np.asarray(lm(tok)[0]), ref_logits)  # B = 0
    np.testing.assert_array_equal(np.asarray(sequence_logprobs(lm, tok, jnp.ones_like(tok))), ref_logp)
    trained = _perturbed(lm)
    assert np.abs(np.asarray(trained(tok)[0]) - ref_logits).max() > 1e-3  # the adapters act ...
    off = set_adapters(trained, False)  # ... and switched off they are gone, bitwise
    np.testing.assert_array_equal(np.asarray(off(tok)[0]), ref_logits)
    np.testing.assert_array_equal(np.asarray(sequence_logprobs(off, tok, jnp.ones_like(tok))), ref_logp)


def test_targets_select_layers_and_bad_configs_fail_clearly():
    base = _model()
    lm = apply_lora(base, LoraConfig(rank=2, targets=r"layers/1/self_attn/(q|v)_proj$"))
    assert [p for p, _ in lora_layers(lm)] == ["layers/1/self_attn/q_proj", "layers/1/self_attn/v_proj"]
    a = lm.layers[1].self_attn.q_proj
    assert isinstance(a, LoRALinear) and a.lora_a.shape == (32, 2) and a.lora_b.shape == (2, 32)
    assert a.kernel[...] is base.layers[1].self_attn.q_proj.kernel[...]  # shared, not copied
    with pytest.raises(ValueError, match="match no linear layer"):
        apply_lora(base, LoraConfig(rank=2, targets="nothing_here"))
    with pytest.raises(ValueError, match="rank > 0"):
        apply_lora(base, LoraConfig(rank=0))
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(lm, LoraConfig(rank=2))
    with pytest.raises(ValueError, match="quantize"):
        LoraConfig(rank=2, quantize="int3")
    with pytest.raises(ValueError, match="unknown LoRA config keys"):
        LoraConfig.from_dict({"rank": 2, "alhpa": 3.0})


def test_merged_adapters_give_the_adapted_logits():
    lm = _perturbed(apply_lora(_model(), LoraConfig(rank=4, alpha=8.0)))
    merged = merge_lora(lm)
    assert not lora_layers(merged) and not jax.tree.leaves(nnx.state(merged, nnx.LoRAParam))
    tok = _tokens()
    np.testing.assert_allclose(np.asarray(merged(tok)[0]), np.asarray(lm(tok)[0]), atol=2e-5, rtol=0)
    # W' = W + (α / r) A B exactly as the layer computes it
    q = lm.layers[0].self_attn.q_proj
    np.testing.assert_allclose(
        np.asarray(merged.layers[0].self_attn.q_proj.kernel[...]),
        np.asarray(q.kernel[...] + 2.0 * q.lora_a[...] @ q.lora_b[...]),
        rtol=1e-6,
    )


def test_dropout_uses_the_given_key_and_is_off_without_one():
    lm = _perturbed(apply_lora(_model(), LoraConfig(rank=4, dropout=0.5)))
    tok = _tokens()
    plain = np.asarray(lm(tok)[0])

    def with_key(seed):
        m = nnx.merge(*nnx.split(lm))
        set_dropout_key(m, jax.random.key(seed))
        return np.asarray(m(tok)[0])

    a, b, a2 = with_key(0), with_key(1), with_key(0)
    np.testing.assert_array_equal(a, a2)
    assert np.abs(a - plain).max() > 1e-4 and np.abs(a - b).max() > 1e-4
    np.testing.assert_array_equal(np.asarray(lm(tok)[0]), plain)  # the original has no key


def test_lora_params_are_sharded_like_their_kernels_on_a_mesh():
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    lm = apply_lora(_model(), LoraConfig(rank=4))
    specs = {"/".join(map(str, p)): s for p, s in nnx.to_flat_state(param_specs(nnx.state(lm), mesh))}
    P = jax.sharding.PartitionSpec
    assert specs["layers/0/self_attn/q_proj/lora_a"] == P("fsdp", None)
    assert specs["layers/0/self_attn/q_proj/lora_b"] == P(None, "tensor")
    assert specs["layers/0/mlp/down_proj/lora_a"] == P("tensor", None)
    assert specs["layers/0/mlp/down_proj/lora_b"] == P(None, "fsdp")
    tok = _tokens()
    want = np.asarray(_perturbed(lm)(tok)[0])
    sharded = shard_model(_perturbed(lm), mesh)
    assert sharded.layers[0].mlp.up_proj.lora_b[...].sharding.spec == P(None, "tensor")
    np.testing.assert_allclose(np.asarray(jax.jit(lambda t: sharded(t)[0])(tok)), want, atol=1e-5)


def _sft_objective():
    def sums(model, batch):
        logp = sequence_logprobs(model, batch["tokens"], batch["attention_mask"])
        return {"nll": -jnp.sum(logp * batch["mask"])}, {}

    return Objective(denominators=lambda b: {"nll": jnp.sum(b["mask"])}, sums=sums)


def _train(model, steps, **kw):
    """``steps`` AdamW updates of the adapters on one fixed batch; returns (losses, state, graphdef)."""
    tx = make_optimizer(1e-2, max_grad_norm=None)
    graphdef, state, _ = create_train_state(model, tx, trainable=nnx.LoRAParam)
    step = make_train_step(graphdef, tx, _sft_objective(), trainable=nnx.LoRAParam, donate=False, **kw)
    tok = _tokens()
    batch = dict(tokens=tok, attention_mask=jnp.ones_like(tok), mask=jnp.ones_like(tok).at[:, 0].set(0))
    losses = []
    for _ in range(steps):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    return losses, state, graphdef


def test_only_adapters_train_and_hold_optimiser_state():
    lm = apply_lora(_model(), LoraConfig(rank=4, alpha=8.0, dropout=0.1))
    before = nnx.state(lm)
    losses, state, _ = _train(lm, 3, model_hook=set_dropout_key)
    assert losses[-1] < losses[0]
    n_lora = sum(x.size for x in jax.tree.leaves(nnx.state(lm, nnx.LoRAParam)))
    moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0]  # adamw's mu and nu
    assert sum(x.size for x in moments) == 2 * n_lora  # the adapters' only
    flat_before = dict(nnx.to_flat_state(before))
    for path, v in nnx.to_flat_state(state.params):
        same = np.array_equal(np.asarray(v[...]), np.asarray(flat_before[path][...]))
        assert same != (path[-1] in ("lora_a", "lora_b")), path  # base frozen bitwise, adapters moved


@pytest.mark.parametrize("qtype", ["int8", "int4", "nf4"])
def test_qlora_quantises_the_frozen_base_through_qwix(qtype):
    base = _model()
    qm = apply_lora(base, LoraConfig(rank=4, alpha=8.0, quantize=qtype, block_size=16))
    q = qm.layers[0].self_attn.q_proj
    assert isinstance(q.kernel, QuantizedKernel)
    assert q.kernel.get_value().qvalue.dtype == {"int8": jnp.int8, "int4": jnp.int4, "nf4": jnp.uint4}[qtype]
    assert q.kernel.get_value().scale.shape == (2, 32)  # D_in / block × D_out
    tok = _tokens()
    err = np.abs(np.asarray(qm(tok)[0]) - np.asarray(base(tok)[0])).max()
    assert 0 < err < {"int8": 0.01, "int4": 0.1, "nf4": 0.1}[qtype]  # quantised, close to the base


def test_qlora_trains_its_adapters_on_cpu():
    qm = apply_lora(_model(), LoraConfig(rank=4, alpha=8.0, quantize="nf4", block_size=16))
    tok = _tokens()
    losses, state, graphdef = _train(qm, 3)
    assert losses[-1] < losses[0]
    # the merged model (dequantised base + update) computes what the QLoRA model computes
    trained = nnx.merge(graphdef, state.params)
    np.testing.assert_allclose(np.asarray(merge_lora(trained)(tok)[0]), np.asarray(trained(tok)[0]), atol=5e-5)
