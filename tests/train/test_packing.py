"""Sequence packing for the update step: the packer's invariants, and the same loss and gradients
(and so the same update) as the padded rows, with micro-batches and over 8 simulated devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from upt_jax import upge
from upt_jax.models import init_model, make_mesh, preset
from upt_jax.train import create_train_state, make_optimizer, make_train_step, upge_objective
from upt_jax.train.batching import first_fit_decreasing, pack_rows, pack_sequences, row_bucket, unpack

CFG = preset(
    "tiny", num_layers=2, vocab_size=64, hidden_size=32, intermediate_size=64, num_heads=4, num_kv_heads=2, head_dim=8
)


def hpt_rows(seed=0, *, questions=4, n=3, demo=True, max_resp=9, demo_len=(40, 60)):
    """``questions`` groups of ``n`` short rollouts (+ one long demonstration, last in its group),
    in ``pack_rows``' layout with ``old_logp``, ``rewards`` and ``is_demo`` (numpy)."""
    rng = np.random.RandomState(seed)
    prompts, resp, old, is_demo = [], [], [], []
    for _ in range(questions):
        q = rng.randint(1, CFG.vocab_size, rng.randint(2, 7)).tolist()
        for i in range(n + int(demo)):
            d = demo and i == n
            k = rng.randint(*demo_len) if d else rng.randint(1, max_resp)
            prompts.append(q)
            resp.append(rng.randint(1, CFG.vocab_size, k).tolist())
            old.append(np.zeros(k, np.float32) if d else (-2.0 + 0.3 * rng.randn(k)).astype(np.float32))
            is_demo.append(d)
    rows = pack_rows(prompts, resp, pad_id=0, response_values=dict(old_logp=old))
    rows.pop("truncated")
    rows["rewards"] = rng.randint(0, 2, len(prompts)).astype(np.float32)
    if demo:
        rows["is_demo"] = np.asarray(is_demo)
    return rows, n + int(demo)


# ----------------------------------------------------------------------------- the packer
def test_first_fit_decreasing():
    assert first_fit_decreasing([3, 8, 0, 5, 2, 4], 10) == [[1, 4], [3, 5], [0]]
    with pytest.raises(ValueError, match="does not fit"):
        first_fit_decreasing([3, 11], 10)


def test_row_bucket_wastes_at_most_an_eighth():
    for n in range(1, 3000):
        b = row_bucket(n)
        assert n <= b <= max(8, n * 1.125)
    assert len({row_bucket(n) for n in range(65, 129)}) == 8


@pytest.mark.parametrize("m,g,mult", [(1, 4, 1), (2, 4, 4), (4, 4, 2)])
def test_every_token_lands_once_and_rows_fit(m, g, mult):
    rows, g = hpt_rows(3)
    tok, attn = rows["tokens"], rows["attention_mask"]
    p = pack_sequences(tok, attn, row_multiple=mult, num_microbatches=m, group_size=g)
    p2 = pack_sequences(tok, attn, row_multiple=mult, num_microbatches=m, group_size=g)
    for k in p:  # deterministic
        np.testing.assert_array_equal(p[k], p2[k])
    n_rows, lp = p["packed_tokens"].shape
    assert lp == 64 and n_rows % (m * mult) == 0  # the longest sequence (≤ 6 + 59) in its bucket
    assert n_rows * lp < tok.size / 2  # far less padding than the padded rows
    valid = p["pack_valid"]
    np.testing.assert_array_equal(valid, attn.astype(bool))
    # micro-batch layout: original row b (group b // g) in micro-batch (b // g) % m, whose packed
    # rows are mi, mi + m, ...; its index points into those rows
    n_local = n_rows // m
    seen = np.zeros((n_rows, lp), int)
    for b in range(tok.shape[0]):
        mi = (b // g) % m
        local = p["pack_index"][b][valid[b]]
        assert local.max() < n_local * lp
        r, c = local // lp * m + mi, local % lp
        seen[r, c] += 1
        np.testing.assert_array_equal(p["packed_tokens"][r, c], tok[b][valid[b]])
        np.testing.assert_array_equal(p["packed_positions"][r, c], np.arange(valid[b].sum()))
        seg = p["packed_segment_ids"][r, c]
        assert len(set(seg.tolist())) == 1 and seg[0] > 0 and np.all(np.diff(c) == 1)  # one contiguous run
    np.testing.assert_array_equal(seen, p["packed_segment_ids"] > 0)  # every slot holds one token, once


def test_packed_rows_are_never_longer_than_the_padded_rows():
    attn = np.zeros((4, 40), np.int32)
    attn[0, 3:38] = attn[1, 30:] = attn[2, 20:25] = 1  # 35 tokens: its bucket, 48, is wider than the rows
    p = pack_sequences(np.ones_like(attn), attn)
    assert p["packed_tokens"].shape == (2, 40)
    np.testing.assert_array_equal(p["packed_segment_ids"], [[1] * 35 + [2] * 5, [1] * 10 + [0] * 30])


def test_sequence_longer_than_pack_len_is_an_error():
    rows, _ = hpt_rows(0)
    with pytest.raises(ValueError, match="does not fit a packed row of 32"):
        pack_sequences(rows["tokens"], rows["attention_mask"], pack_len=32)


def test_unpack_puts_values_back():
    rows, _ = hpt_rows(1)
    p = pack_sequences(rows["tokens"], rows["attention_mask"])
    back = unpack(jnp.asarray(p["packed_tokens"]), p["pack_index"], p["pack_valid"])
    np.testing.assert_array_equal(back, rows["tokens"] * rows["attention_mask"])


# ----------------------------------------------------------------------------- the update step
def _loss_and_grads(recipe, batch, g):
    """``Σ_k S_k / D_k`` and its gradient, as ``make_train_step`` computes them (one micro-batch)."""
    obj = upge_objective(recipe, group_size=g, chunk_size=16)
    graphdef, params = nnx.split(init_model(CFG, 0))
    batch, _ = obj.prepare(batch)
    dens = obj.denominators(batch)

    def loss(p):
        sums, _ = obj.sums(nnx.merge(graphdef, p), batch)
        return sum(sums[k] / jnp.maximum(dens[k], 1e-9) for k in sums)

    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("name,demo", [("grpo", False), ("hpt", True)])
def test_packed_loss_and_gradients_equal_padded(name, demo):
    recipe = upge.get_recipe(name)
    rows, g = hpt_rows(5, demo=demo, max_resp=20 if not demo else 9)
    if demo:  # half the questions solved: both the RL and the SFT term are in the loss
        rows["rewards"] = np.repeat([1, 1, 0, 0], g).astype(np.float32)
        rows["rewards"][np.flatnonzero(rows["rewards"])[::3]] = 0
    padded = {k: jnp.asarray(v) for k, v in rows.items()}
    packed = dict(
        padded,
        **{k: jnp.asarray(v) for k, v in pack_sequences(rows["tokens"], rows["attention_mask"], group_size=g).items()},
    )
    l0, g0 = _loss_and_grads(recipe, padded, g)
    l1, g1 = _loss_and_grads(recipe, packed, g)
    assert float(jnp.abs(l0)) > 1e-3
    np.testing.assert_allclose(l1, l0, atol=1e-5, rtol=1e-5)
    norm = max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g0))
    assert norm > 1e-3
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def _train(recipe, batches, g, *, mesh=None, microbatches=1, packed=False):
    tx = make_optimizer(0.1, max_grad_norm=None, name="sgd")
    graphdef, state, shardings = create_train_state(init_model(CFG, 0), tx, seed=0, mesh=mesh)
    step = make_train_step(
        graphdef,
        tx,
        upge_objective(recipe, group_size=g, chunk_size=16),
        num_microbatches=microbatches,
        group_size=g,
        mesh=mesh,
        shardings=shardings,
    )
    d = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]
    ms = []
    for rows in batches:
        batch = dict(rows)
        if packed:
            batch.update(
                pack_sequences(
                    rows["tokens"], rows["attention_mask"], row_multiple=d, num_microbatches=microbatches, group_size=g
                )
            )
        if mesh is None:
            batch = {k: jnp.asarray(v) for k, v in batch.items()}
        state, m = step(state, batch)
        ms.append(jax.device_get(m))
    return jax.device_get(state.params), ms


@pytest.mark.parametrize("microbatches,mesh", [(2, None), (2, (2, 2, 2))])
def test_packed_update_equals_padded_with_microbatches_and_8_devices(microbatches, mesh):
    recipe = upge.get_recipe("hpt")
    batches = []
    for s in range(2):
        rows, g = hpt_rows(10 + s)
        rows["rewards"] = np.repeat([1, 0, 1, 0], g).astype(np.float32)
        batches.append(rows)
    mesh = None if mesh is None else make_mesh(*mesh)
    ref, m0 = _train(recipe, batches, g)  # padded, one micro-batch, one device
    got, m1 = _train(recipe, batches, g, mesh=mesh, microbatches=microbatches, packed=True)
    for a, b in zip(m0, m1):
        assert int(b["skipped"]) == 0
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b["grad_norm"], a["grad_norm"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
        np.testing.assert_allclose(b, a, atol=1e-5)


# ----------------------------------------------------------------------------- the trainer
def test_trainer_with_packing_trains_as_without(tmp_path):
    from experiments import hpt
    from tests.train.test_trainer import shrink
    from upt_jax.train.trainer import train

    logs = {}
    for pack in (False, True):
        c = shrink(hpt.get_config(), tmp_path / f"pack_{pack}", steps=2)
        c.checkpoint.every = 0
        c.rollout.n = 3  # 2 questions × (3 rollouts + 1 demo) = 8 rows over data=2
        c.train.pack_sequences = pack
        logs[pack] = train(c)
    for a, b in zip(logs[False], logs[True]):  # the same rollouts, the same update
        assert b["skipped"] == 0 and np.isfinite(b["loss"]) and b["grad_norm"] > 0
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-4)
        np.testing.assert_allclose(b["grad_norm"], a["grad_norm"], rtol=1e-4)
        assert b["pack/rows"] % 2 == 0 and b["pack/padding_frac"] < b["pack/padding_frac_unpacked"]
        assert "pack/rows" not in a


def test_vocabulary_level_distillation_refuses_packing(tmp_path):
    from experiments import sft
    from tests.train.test_trainer import shrink
    from upt_jax.train.trainer import validate

    c = shrink(sft.get_config(), tmp_path / "run", steps=1)
    c.recipe.name = "distill_fkl"
    c.train.pack_sequences = True
    with pytest.raises(ValueError, match="pack_sequences"):
        validate(c)


@pytest.mark.parametrize("module,hparams", [("hpt", {}), ("grpo", {"kl_coef": 0.1})])
def test_trainer_with_shared_prompts_trains_as_without(tmp_path, module, hparams):
    """``train.share_prompt``: the same rollouts give the same update (HPT's groups hold a
    demonstration row; GRPO's KL reads the reference's log-probs at the response columns), with
    coin-flip rewards so that every step has a gradient."""
    import importlib

    from tests.train.test_trainer import _CoinVerifier, shrink
    from upt_jax.train.trainer import Trainer

    logs = {}
    for share in (False, True):
        c = shrink(importlib.import_module(f"experiments.{module}").get_config(), tmp_path / f"{share}", steps=3)
        c.checkpoint.every = 0
        c.rollout.n = 3 if module == "hpt" else 4  # 2 questions × 4 rows over data=2
        c.recipe.hparams.update(hparams)
        c.train.share_prompt = share
        t = Trainer(c)
        t.verifier = _CoinVerifier()
        try:
            logs[share] = [t.train_step() for _ in range(3)]
        finally:
            t.close()
    kl = sorted(k for k in logs[False][0] if "kl" in k and not k.startswith("time"))
    assert kl or not hparams
    for a, b in zip(logs[False], logs[True]):
        assert b["skipped"] == 0 and np.isfinite(b["loss"]) and b["grad_norm"] > 1e-3
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(b["grad_norm"], a["grad_norm"], rtol=1e-4)
        np.testing.assert_allclose([b[k] for k in kl], [a[k] for k in kl], rtol=1e-3, atol=1e-7)
    if hparams:  # the policy left its reference: the KL term was live
        assert max(abs(x[k]) for x in logs[True][1:] for k in kl) > 0


def test_share_prompt_refuses_packing(tmp_path):
    from experiments import grpo
    from tests.train.test_trainer import shrink
    from upt_jax.train.trainer import validate

    c = shrink(grpo.get_config(), tmp_path / "run", steps=1)
    c.train.share_prompt = c.train.pack_sequences = True
    with pytest.raises(ValueError, match="share_prompt and config.train.pack_sequences"):
        validate(c)
