"""The jitted update step: sharding- and micro-batch-invariant, skips non-finite updates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from upt_jax import upge
from upt_jax.models import init_model, make_mesh, preset
from upt_jax.models.logprobs import sequence_logprobs
from upt_jax.train import create_train_state, make_optimizer, make_train_step, upge_objective
from upt_jax.train.rows import check_shared_prompts
from tests.train.batches import rl_batch

CFG = preset(
    "tiny", num_layers=2, vocab_size=64, hidden_size=32, intermediate_size=64, num_heads=4, num_kv_heads=2, head_dim=8
)
G = 4


def _run(
    recipe, steps=3, *, mesh=None, microbatches=1, lr=1e-2, seed=0, batches=None, opt="adamw", share=False, group=G
):
    model = init_model(CFG, seed)
    tx = make_optimizer(lr, max_grad_norm=1.0, name=opt)
    graphdef, state, shardings = create_train_state(model, tx, seed=seed, mesh=mesh)
    objective = upge_objective(recipe, group_size=group, chunk_size=8, share_prompt=share)
    step = make_train_step(
        graphdef, tx, objective, num_microbatches=microbatches, group_size=group, mesh=mesh, shardings=shardings
    )
    metrics = []
    for i in range(steps):
        batch = batches[i] if batches else rl_batch(CFG.vocab_size, group_size=G, seed=i)
        state, m = step(state, batch)
        metrics.append(jax.device_get(m))
    return jax.device_get(state), metrics


def _max_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.mark.parametrize("name", ["grpo", "hpt"])
def test_three_steps_on_2x2x2_mesh_equal_one_device(name):
    recipe = upge.get_recipe(name)
    batches = [rl_batch(CFG.vocab_size, group_size=G, seed=i, demo_rows=name == "hpt") for i in range(3)]
    # Adam divides by sqrt(v): lr bounds how far float reordering can move a parameter
    single, m1 = _run(recipe, batches=batches, lr=1e-3)
    sharded, m8 = _run(recipe, mesh=make_mesh(data=2, fsdp=2, tensor=2), batches=batches, lr=1e-3)
    assert int(single.step) == 3 and all(int(m["skipped"]) == 0 for m in m1)
    assert _max_diff(single.params, sharded.params) <= 1e-5
    assert _max_diff(single.opt_state, sharded.opt_state) <= 1e-5
    # and the parameters really moved
    init = jax.device_get(create_train_state(init_model(CFG, 0), make_optimizer(1e-2))[1].params)
    assert _max_diff(init, single.params) > 1e-3  # 3 Adam steps of 1e-3


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "sft"])  # the three aggregation denominators
def test_microbatch_count_does_not_change_the_update(name):
    recipe = upge.get_recipe(name)
    batches = [rl_batch(CFG.vocab_size, group_size=G, seed=i) for i in range(2)]
    # SGD: the parameter change is lr × the accumulated gradient, compared directly
    ref, ref_m = _run(recipe, steps=2, batches=batches, microbatches=1, lr=0.1, opt="sgd")
    for m in (4,):
        got, got_m = _run(recipe, steps=2, batches=batches, microbatches=m, lr=0.1, opt="sgd")
        assert _max_diff(ref.params, got.params) <= 1e-6, (name, m)
        np.testing.assert_allclose(got_m[-1]["loss"], ref_m[-1]["loss"], rtol=1e-5)
        np.testing.assert_allclose(got_m[-1]["grad_norm"], ref_m[-1]["grad_norm"], rtol=1e-5)
    if name != "grpo":
        return
    # and through Adam
    ref, _ = _run(recipe, steps=2, batches=batches, microbatches=1, lr=1e-3)
    got, _ = _run(recipe, steps=2, batches=batches, microbatches=4, lr=1e-3)
    assert _max_diff(ref.params, got.params) <= 1e-5


def test_non_finite_loss_skips_the_update():
    recipe = upge.get_recipe("grpo")
    good = rl_batch(CFG.vocab_size, group_size=G, seed=0)
    bad = dict(good, rewards=good["rewards"].at[0].set(jnp.nan))
    model = init_model(CFG, 0)
    tx = make_optimizer(1e-2)
    graphdef, state, _ = create_train_state(model, tx)
    step = make_train_step(graphdef, tx, upge_objective(recipe, group_size=G), donate=False)
    new, m = step(state, bad)
    assert int(m["skipped"]) == 1 and int(new.step) == 1
    assert _max_diff(new.params, state.params) == 0.0
    new2, m2 = step(new, good)
    assert int(m2["skipped"]) == 0 and _max_diff(new2.params, new.params) > 0


def test_grad_norm_bound_skips():
    recipe = upge.get_recipe("sft")
    model = init_model(CFG, 0)
    tx = make_optimizer(1e-2)
    graphdef, state, _ = create_train_state(model, tx)
    step = make_train_step(graphdef, tx, upge_objective(recipe), skip_grad_norm=1e-6, donate=False)
    new, m = step(state, rl_batch(CFG.vocab_size, group_size=G))
    assert int(m["skipped"]) == 1 and float(m["grad_norm"]) > 1e-6
    assert _max_diff(new.params, state.params) == 0.0


@pytest.mark.parametrize("lr,why", [(float("nan"), "nonfinite"), (1e30, "nonfinite"), (1e3, "update_too_large")])
def test_a_diverged_result_is_never_applied(lr, why):
    """The loss and gradient are finite, but the learning rate makes the updated parameters NaN
    (lr = nan), overflows the update's norm (1e30) or moves the parameters by far more than their
    own size (1e3): the step keeps the old state bitwise and says why (regression: such updates
    used to be applied and checkpointed)."""
    recipe = upge.get_recipe("sft")
    model = init_model(CFG, 0)
    tx = make_optimizer(lr, max_grad_norm=1.0)
    graphdef, state, _ = create_train_state(model, tx)
    step = make_train_step(graphdef, tx, upge_objective(recipe), skip_update_ratio=1.0, donate=False)
    new, m = step(state, rl_batch(CFG.vocab_size, group_size=G))
    assert np.isfinite(float(m["loss"])) and np.isfinite(float(m["grad_norm"]))
    assert int(m["skipped"]) == 1 and int(new.step) == 1
    assert int(m[why]) == 1 and (why == "update_too_large") == (int(m["nonfinite"]) == 0)
    assert _max_diff(new.params, state.params) == 0.0 and _max_diff(new.opt_state, state.opt_state) == 0.0
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(new.params))


def test_update_ratio_bound_keeps_ordinary_updates():
    """The default bound (‖Δθ‖ ≤ ‖θ‖) never stops an ordinary step: the update is applied and the
    reported norms say how far it is from the bound."""
    model = init_model(CFG, 0)
    tx = make_optimizer(1e-2, max_grad_norm=1.0)
    graphdef, state, _ = create_train_state(model, tx)
    step = make_train_step(graphdef, tx, upge_objective(upge.get_recipe("sft")), skip_update_ratio=1.0, donate=False)
    new, m = step(state, rl_batch(CFG.vocab_size, group_size=G))
    assert int(m["skipped"]) == 0 and _max_diff(new.params, state.params) > 0
    assert 0 < float(m["update_norm"]) < 0.5 * float(m["param_norm"])


def _first_step(recipe, batch, group_size, microbatches=1):
    """The first update's metrics, and the token log-probs of the weights it started from."""
    model = init_model(CFG, 0)
    logp = np.asarray(sequence_logprobs(model, batch["tokens"], batch["attention_mask"]))
    tx = make_optimizer(1e-2)
    graphdef, state, _ = create_train_state(model, tx)
    step = make_train_step(
        graphdef,
        tx,
        upge_objective(recipe, group_size=group_size, chunk_size=8),
        num_microbatches=microbatches,
        group_size=group_size,
        donate=False,
    )
    _, m = step(state, batch)
    return logp, jax.device_get(m)


@pytest.mark.parametrize("name", ["sft", "grpo", "dpo"])
@pytest.mark.parametrize("microbatches", [1, 2])
def test_logged_first_step_loss_is_the_textbook_objective(name, microbatches):
    """``loss`` is the method's objective (not the surrogate's value: −1 for SFT, ≈ 0 for GRPO),
    computed here from the model's log-probs directly; ``surrogate`` is the differentiated value."""
    g = {"sft": 1, "grpo": G, "dpo": 2}[name]
    batch = rl_batch(CFG.vocab_size, groups=8 // g if name != "grpo" else 4, group_size=g, seed=3)
    m = np.asarray(batch["mask"])
    if name == "dpo":  # rows 2p (chosen), 2p + 1 (rejected); a reference model's log-probs
        batch["ref_logp"] = batch["old_logp"] + 0.5
    logp, metrics = _first_step(upge.get_recipe(name), batch, g, microbatches)
    if name == "sft":  # the NLL, a token mean
        want = np.sum(-logp * m) / np.sum(m)
        surrogate = -1.0
    elif name == "grpo":  # −min(ρÂ, clip(ρ, 0.8, 1.2)Â), token mean per sequence, mean over sequences
        r = np.asarray(batch["rewards"]).reshape(-1, g)
        adv = ((r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-6)).reshape(-1, 1)
        ratio = np.exp(np.where(m > 0, logp - np.asarray(batch["old_logp"]), 0.0))
        per_tok = -np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv)
        assert np.any((ratio < 0.8) & (m > 0)), "the batch must exercise the clip"
        want = np.mean(np.sum(per_tok * m, 1) / np.sum(m, 1))
        surrogate = None
    else:  # −log σ(β[(log π − log π_ref)(y_w) − (log π − log π_ref)(y_l)]), mean over pairs, β = 0.1
        seq = np.sum((logp - np.asarray(batch["ref_logp"])) * m, 1)
        h = 0.1 * (seq[0::2] - seq[1::2])
        want = np.mean(np.log1p(np.exp(-h)))
        np.testing.assert_allclose(metrics["dpo/rollout/accuracy"], np.mean(h > 0), rtol=1e-6)
        surrogate = None
    np.testing.assert_allclose(metrics["loss"], want, rtol=1e-5)
    np.testing.assert_allclose(metrics[f"loss/{name}" if name != "grpo" else "loss/pg"], want, rtol=1e-5)
    assert "surrogate" in metrics and np.isfinite(metrics["surrogate"])
    if surrogate is not None:
        np.testing.assert_allclose(metrics["surrogate"], surrogate, rtol=1e-6)
    assert abs(float(metrics["surrogate"]) - float(want)) > 1e-3  # the two are really different numbers


@pytest.mark.parametrize("name", ["grpo", "hpt", "dpo", "sft"])
@pytest.mark.parametrize("mode", ["columns", "shared", "shared_sharded"])
def test_response_columns_and_shared_prompts_leave_the_update_unchanged(name, mode):
    """Rows carrying their response columns (``logit_columns``, what `pack_rows` adds for the update)
    take three steps equal to the full-width log-probs' (the prompt's log-probs are never read); with
    ``share_prompt`` each group's prompt runs once (its gradient summed over the group's rows), on one
    device and on a 2 × 2 × 2 mesh, with two micro-batches (SFT's groups of 1: the columns only)."""
    g = {"sft": 1, "dpo": 2}.get(name, G)
    batches = [
        rl_batch(CFG.vocab_size, groups=16 // g, group_size=g, seed=i, demo_rows=name == "hpt") for i in range(3)
    ]
    with_cols = []
    for b in batches:
        p, length = 5, b["tokens"].shape[1]  # rl_batch's prompt_len: every row's mask is 0 before it
        b = dict(b, ref_logp=b["old_logp"] + 0.5) if name == "dpo" else dict(b)
        if mode != "columns":  # each group of G rows asks one question
            for k in ("tokens", "attention_mask"):
                x = np.asarray(b[k]).copy()
                x[:, :p] = np.repeat(x[::g, :p], g, axis=0)
                b[k] = jnp.asarray(x)
        cols = np.broadcast_to(np.arange(p, length, dtype=np.int32), (b["tokens"].shape[0], length - p))
        with_cols.append(dict(b, logit_columns=jnp.asarray(cols)))
        if mode != "columns":
            check_shared_prompts(with_cols[-1], g)
    plain = [{k: v for k, v in b.items() if k != "logit_columns"} for b in with_cols]
    mesh = make_mesh(2, 2, 2) if mode == "shared_sharded" else None
    recipe = upge.get_recipe(name)
    kw = dict(mesh=mesh, microbatches=2, lr=1e-3, group=g)
    full, m_full = _run(recipe, batches=plain, **kw)
    cols, m_cols = _run(recipe, batches=with_cols, share=mode != "columns", **kw)
    assert all(int(m["skipped"]) == 0 for m in m_full)
    assert _max_diff(full.params, cols.params) <= 1e-5  # Adam's sqrt(v): float reordering, as sharding
    for a, b in zip(m_full, m_cols):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5, atol=1e-7)


def test_check_shared_prompts_names_the_group_that_differs():
    b = rl_batch(CFG.vocab_size, groups=2, group_size=G, seed=0)
    cols = np.broadcast_to(np.arange(5, 12, dtype=np.int32), (2 * G, 7))
    with pytest.raises(ValueError, match="group 0 of 4 rows has different prompt tokens"):
        check_shared_prompts(dict(b, logit_columns=cols), G)
    x = np.asarray(b["tokens"]).copy()
    x[:, :5] = np.repeat(x[::G, :5], G, axis=0)
    a = np.asarray(b["attention_mask"]).copy()
    a[:, :5] = np.repeat(a[::G, :5], G, axis=0)
    check_shared_prompts(dict(b, tokens=x, attention_mask=a, logit_columns=cols), G)  # equal: no error
    with pytest.raises(ValueError, match="trailing response columns"):
        check_shared_prompts(dict(b, tokens=x, attention_mask=a, logit_columns=cols - 1), G)
