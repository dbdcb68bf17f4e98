"""benchmarks/update_ab.py: the patch is applied to arm B only and undone, the paired statistics are
the per-round ratios', and the committed variants compute what the code they replace computes."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import update_ab
from benchmarks.variants import attention_flash_bwd, narrow_transpose
from upt_jax.models import attention, transformer


def test_patched_replaces_the_attribute_inside_the_block_only():
    before = transformer.attend
    with update_ab.patched("upt_jax.models.transformer.attend", attention_flash_bwd.attend):
        assert transformer.attend is attention_flash_bwd.attend
    assert transformer.attend is before
    with pytest.raises(RuntimeError), update_ab.patched("upt_jax.models.transformer.attend", None):
        raise RuntimeError("restored on error too")
    assert transformer.attend is before
    with pytest.raises(AttributeError, match="no attribute"):
        with update_ab.patched("upt_jax.models.transformer.no_such_name", None):
            pass
    assert update_ab.resolve("benchmarks.variants.attention_flash_bwd:attend") is attention_flash_bwd.attend
    with pytest.raises(ValueError, match="MODULE:NAME"):
        update_ab.resolve("benchmarks.variants.attention_flash_bwd.attend")


def test_paired_rounds_alternate_the_order_and_take_the_per_round_ratio():
    order = []
    a_times = itertools.chain([9.0, 9.0], [2.0, 2.0, 4.0, 2.0])  # two warm-ups, then 4 rounds
    b_times = itertools.chain([9.0, 9.0], [1.0, 2.0, 1.0, 1.0])

    def a():
        order.append("a")
        return next(a_times)

    def b():
        order.append("b")
        return next(b_times)

    r = update_ab.paired_rounds(a, b, rounds=4)
    assert order[4:] == ["a", "b", "b", "a", "a", "b", "b", "a"]
    # ratios 2, 1, 4, 2: median 2; inclusive quartiles 1.75 and 2.5
    assert r == dict(a_ms=2000.0, b_ms=1000.0, speedup=2.0, iqr=[1.75, 2.5], rounds=4)
    with pytest.raises(ValueError, match="rounds"):
        update_ab.paired_rounds(a, b, rounds=1)


def test_in_turns_ratio_stats_and_the_paired_cell():
    from benchmarks import common

    a_times, b_times = iter([9.0, 4.0, 6.0, 3.0, 8.0]), iter([9.0, 2.0, 2.0, 3.0, 2.0])
    ta, tb = common.in_turns(lambda: next(a_times), lambda: next(b_times), rounds=4, warmup=1)
    assert (ta, tb) == ([4.0, 6.0, 3.0, 8.0], [2.0, 2.0, 3.0, 2.0])  # the warm-up round dropped
    assert common.ratio_stats(ta, tb) == (2.5, [1.75, 3.25])  # ratios 2, 3, 1, 4
    row = dict(paired_ratio=2.5, paired_iqr=[1.75, 3.25])
    assert common.paired_cell(row) == "2.5× (1.75–3.25)" and common.paired_cell({}) == "–"


@pytest.mark.parametrize("packed", [False, True])
def test_the_flash_backward_variant_is_the_cores_attention_and_gradient(packed):
    rng = np.random.RandomState(0)
    b, t, h, kh, dh = 2, 6, 4, 2, 8
    q, k, v = (jnp.asarray(rng.randn(b, t, n, dh), jnp.float32) for n in (h, kh, kh))
    key_valid = jnp.asarray([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]], bool)  # a left-padded row
    slots = jnp.arange(t)
    seg = jnp.asarray([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]]) if packed else None
    w = jnp.asarray(rng.randn(b, t, h, dh), jnp.float32)

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v, key_valid, slots, slots, seg) * w)

    for i, (x, y) in enumerate(
        zip(
            jax.value_and_grad(lambda *a: loss(attention.attend, *a), argnums=(0, 1, 2))(q, k, v),
            jax.value_and_grad(lambda *a: loss(attention_flash_bwd.attend, *a), argnums=(0, 1, 2))(q, k, v),
        )
    ):
        for xa, ya in zip(jax.tree.leaves(x), jax.tree.leaves(y)):
            np.testing.assert_allclose(np.asarray(ya), np.asarray(xa), rtol=1e-5, atol=1e-5, err_msg=f"output {i}")


@pytest.mark.parametrize("din, dout", [(8, 24), (24, 8)])  # the input narrower, then the cotangent
def test_the_narrow_transpose_variant_is_dense_cpus_product_and_gradient(din, dout):
    rng = np.random.RandomState(1)
    x = jnp.asarray(rng.randn(2, 5, din), jnp.float32)
    w = jnp.asarray(rng.randn(din, dout), jnp.float32)
    c = jnp.asarray(rng.randn(2, 5, dout), jnp.float32)
    loss = lambda fn: jax.value_and_grad(lambda x, w: jnp.sum(fn(x, w) * c), argnums=(0, 1))(x, w)
    ref, var = loss(transformer.dense_cpu), loss(narrow_transpose.dense_cpu)
    for xa, ya in zip(jax.tree.leaves(ref), jax.tree.leaves(var)):
        assert ya.shape == xa.shape
        np.testing.assert_allclose(np.asarray(ya), np.asarray(xa), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_command_runs_both_arms_and_reports_the_same_step(capsys):
    rows = update_ab.main(
        [
            "--patch",
            "upt_jax.models.transformer.attend=benchmarks.variants.attention_flash_bwd:attend",
            "--config",
            "tiny",
            "--rounds",
            "2",
            "--batch",
            "4",
            "--seq",
            "64",
        ]
    )
    (r,) = rows
    assert r["loss_a"] == pytest.approx(r["loss_b"], rel=1e-5) and r["max_param_diff"] < 1e-6
    assert r["a_ms"] > 0 and r["b_ms"] > 0 and r["rounds"] == 2
    assert len(r["temp_mib"]) == 2 and min(r["temp_mib"]) > 0
    assert "| tiny | 4 × 64 |" in capsys.readouterr().out


def test_the_table_shows_both_arms_temporaries():
    row = dict(
        config="tiny", batch=4, seq=1024, a_ms=1418.0, b_ms=1856.6, speedup=0.764, iqr=[0.756, 0.768], rounds=8,
        loss_a=0.345633, loss_b=0.345633, max_param_diff=7.5e-9, temp_mib=[955.0, 1443.0],
    )  # fmt: skip
    header, _, line = update_ab.table([row])
    assert header.endswith("| XLA temporaries MiB A / B |")
    assert (
        line
        == "| tiny | 4 × 1024 | 1418.0 | 1856.6 | 0.764× | 0.756–0.768 | 8 | 0.345633 / 0.345633 | 7.5e-09 | 955.0 / 1443.0 |"
    )
