"""Exact on-policy replay of truncated sampling (issue #24 §2).

The sampler draws each token from π_θ^τ renormalised over its top-k/top-p kept set and records
that set as one threshold per token; the trainer renormalises its π_θ^τ over the same set, so the
policy it trains is the one the rollouts came from and the log-ratio between the sampler's and
the trainer's log-probs is 0 (to float error) at the first update. Without the renormalisation
(the torch peers' behaviour) it is ``−log Σ_{v kept} π(v)``, far from 0 at top-p 0.8.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from upt_jax import upge
from upt_jax.models import init_model, preset, sequence_logprobs
from upt_jax.sampling import Sampler, SamplingParams
from upt_jax.train import create_train_state, make_optimizer, make_train_step, upge_objective
from upt_jax.train.batching import pack_rows, pack_sequences

CFG = preset(
    "tiny", num_layers=2, vocab_size=64, hidden_size=32, intermediate_size=64, num_heads=4, num_kv_heads=2, head_dim=8
)
PROMPTS = [[3, 4, 5], [9, 10], [20, 21, 22, 23]]
G = 4
SETTINGS = {  # name: (temperature, top_k, top_p)
    "top_k": (0.7, 5, 1.0),
    "top_p": (1.3, 0, 0.8),
    "both": (0.7, 12, 0.8),
}


@pytest.fixture(scope="module")
def model():
    return init_model(CFG, 0)


def _rows(model, tau, top_k, top_p, seed=0):
    params = SamplingParams(max_new_tokens=8, temperature=tau, top_k=top_k, top_p=top_p, n=G)
    out = Sampler(model).generate(PROMPTS, jax.random.key(seed), params)
    n = out.lengths
    cut = lambda x: [x[i, : n[i]] for i in range(len(n))]
    rows = pack_rows(
        [PROMPTS[j] for j in out.prompt_index],
        cut(out.tokens),
        pad_id=0,
        response_values=dict(
            old_logp=cut(out.sampling_logprobs),
            rollout_logp=cut(out.sampling_logprobs),
            untruncated=cut(out.logprobs),
            thr=cut(out.thresholds),
        ),
    )
    rows.pop("truncated")
    rows["rollout_threshold"] = np.where(rows["mask"] > 0, rows.pop("thr"), -np.inf).astype(np.float32)
    rows["rewards"] = np.tile(np.asarray([1.0, 0.0, 0.0, 1.0], np.float32), len(PROMPTS))
    return out, {k: jnp.asarray(v) for k, v in rows.items()}


def _max_abs(x, mask):
    return float(jnp.max(jnp.abs(x) * mask))


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_renormalised_logprobs_replay_the_sampler_exactly(model, name):
    tau, top_k, top_p = SETTINGS[name]
    out, b = _rows(model, tau, top_k, top_p)
    assert np.all(np.isfinite(out.thresholds[out.thresholds > -np.inf]))
    kept = jax.jit(lambda t, a, th: sequence_logprobs(model, t, a, temperature=tau, kept_threshold=th))
    lp = kept(b["tokens"], b["attention_mask"], b["rollout_threshold"])
    assert _max_abs(lp - b["rollout_logp"], b["mask"]) <= 1e-5
    # the chunked (rematerialised) path renormalises the same way
    chunked = sequence_logprobs(
        model,
        b["tokens"],
        b["attention_mask"],
        temperature=tau,
        chunk_size=4,
        remat="always",
        kept_threshold=b["rollout_threshold"],
    )
    assert _max_abs(chunked - b["rollout_logp"], b["mask"]) <= 1e-5
    # the untruncated policy is not what was sampled
    full = sequence_logprobs(model, b["tokens"], b["attention_mask"], temperature=tau)
    assert _max_abs(full - b["rollout_logp"], b["mask"]) > 1e-3


def test_negative_control_top_p_0_8_without_renormalisation(model):
    _, b = _rows(model, 1.0, 0, 0.8)
    full = sequence_logprobs(model, b["tokens"], b["attention_mask"])
    assert _max_abs(full - b["rollout_logp"], b["mask"]) >= 1e-2


def _textbook_truncated_logp(model, b, tau):
    """log π̃(o_t) on the full logits: the sampler's rule (temperature → top-k → top-p, ties kept)
    applied to the trainer's own logits in numpy-free jnp, renormalised over the kept tokens."""
    logits, _ = model(b["tokens"], attention_mask=b["attention_mask"])
    z = logits[:, :-1].astype(jnp.float32) / tau
    kept = z >= b["rollout_threshold"][:, 1:, None]
    logq = jax.nn.log_softmax(jnp.where(kept, z, -jnp.inf), axis=-1)
    lp = jnp.take_along_axis(logq, b["tokens"][:, 1:, None], axis=-1)[..., 0]
    return jnp.pad(jnp.where(b["mask"][:, 1:] > 0, lp, 0.0), ((0, 0), (1, 0)))


def test_gradient_is_the_truncated_policy_gradient(model):
    tau, top_k, top_p = SETTINGS["both"]
    _, b = _rows(model, tau, top_k, top_p)
    graphdef, params = nnx.split(model)
    w = jax.random.normal(jax.random.key(5), b["mask"].shape) * b["mask"]
    ours = lambda p: jnp.sum(
        w
        * sequence_logprobs(
            nnx.merge(graphdef, p),
            b["tokens"],
            b["attention_mask"],
            temperature=tau,
            kept_threshold=b["rollout_threshold"],
        )
    )
    book = lambda p: jnp.sum(w * _textbook_truncated_logp(nnx.merge(graphdef, p), b, tau))
    untrunc = lambda p: jnp.sum(
        w * sequence_logprobs(nnx.merge(graphdef, p), b["tokens"], b["attention_mask"], temperature=tau)
    )
    g1, g2, g3 = (jax.tree.leaves(jax.grad(f)(params)) for f in (ours, book, untrunc))
    scale = max(float(jnp.max(jnp.abs(a))) for a in g2)
    assert max(float(jnp.max(jnp.abs(a - c))) for a, c in zip(g1, g2)) < 1e-4 * scale
    assert max(float(jnp.max(jnp.abs(a - c))) for a, c in zip(g1, g3)) > 1e-2 * scale


def test_packed_rows_renormalise_the_same(model):
    tau, top_k, top_p = SETTINGS["top_p"]
    _, b = _rows(model, tau, top_k, top_p)
    packed = pack_sequences(np.asarray(b["tokens"]), np.asarray(b["attention_mask"]), group_size=G)
    from upt_jax.train.step import row_logprobs

    lp = row_logprobs(model, dict(b, **{k: jnp.asarray(v) for k, v in packed.items()}), 128, False, temperature=tau)
    assert _max_abs(lp - b["rollout_logp"], b["mask"]) <= 1e-5
    # and without the thresholds the packed path is the untruncated policy
    no_thr = {k: v for k, v in b.items() if k != "rollout_threshold"}
    lp0 = row_logprobs(
        model, dict(no_thr, **{k: jnp.asarray(v) for k, v in packed.items()}), 128, False, temperature=tau
    )
    assert _max_abs(lp0 - b["rollout_logp"], b["mask"]) > 1e-3


def _step_metrics(model, batch, tau, microbatches=1):
    tx = make_optimizer(1e-3)
    graphdef, state, _ = create_train_state(model, tx)
    objective = upge_objective(upge.get_recipe("grpo"), group_size=G, temperature=tau)
    step = make_train_step(graphdef, tx, objective, group_size=G, num_microbatches=microbatches, donate=False)
    _, m = step(state, batch)
    return jax.device_get(m)


def test_step0_ratio_is_one_and_mismatch_is_logged(model):
    """Three micro-batches: the logged max and means are the whole batch's, not means of them."""
    tau, top_k, top_p = SETTINGS["both"]
    _, b = _rows(model, tau, top_k, top_p)
    m = _step_metrics(model, b, tau, 3)
    assert abs(m["pg/rollout/ratio_max"] - 1) <= 1e-5 and abs(m["pg/rollout/ratio_min"] - 1) <= 1e-5
    assert m["mismatch/abs_max"] <= 1e-5 and m["mismatch/kl_k3"] <= 1e-9
    assert not any(k.endswith("_sum") or k == "mismatch/tokens" for k in m if k.startswith("mismatch/"))
    # negative control: the untruncated trainer against the truncated sampler
    no_thr = {k: v for k, v in b.items() if k != "rollout_threshold"}
    c = _step_metrics(model, no_thr, tau, 3)
    full = sequence_logprobs(model, b["tokens"], b["attention_mask"], temperature=tau)
    d = np.abs(np.asarray((full - b["rollout_logp"]) * b["mask"]))
    n = float(b["mask"].sum())
    np.testing.assert_allclose(c["mismatch/abs_max"], d.max(), rtol=1e-5)
    np.testing.assert_allclose(c["mismatch/abs_mean"], d.sum() / n, rtol=1e-4)
    delta = np.asarray((b["rollout_logp"] - full) * b["mask"])
    np.testing.assert_allclose(c["mismatch/kl_k3"], np.sum(np.expm1(-delta) + delta) / n, rtol=1e-4)
    assert c["mismatch/abs_max"] >= 1e-2 and c["mismatch/kl_k3"] > 1e-5


def test_kept_set_rows_and_when_replay_applies():
    from experiments import grpo
    from upt_jax.train.trainer import kept_set_replay, kept_set_rows

    c = grpo.get_config()
    assert not kept_set_replay(c)  # no truncation: nothing to replay
    c.rollout.top_p = 0.9
    assert kept_set_replay(c)
    c.rollout.kept_set_replay = False
    assert not kept_set_replay(c)
    c.rollout.kept_set_replay, c.rollout.temperature = True, 0.0
    assert not kept_set_replay(c)  # greedy: no distribution was truncated
    rows = dict(
        mask=np.asarray([[0, 1, 1, 0]], np.float32),
        old_logp=np.asarray([[0, -2, -3, 0]], np.float32),
        rollout_logp=np.asarray([[0, -1, -2, 0]], np.float32),
        rollout_threshold=np.asarray([[0, 0.5, 0.25, 0]], np.float32),
    )
    assert kept_set_rows(dict(rows), False) == {}
    out = kept_set_rows(dict(rows), True)
    np.testing.assert_array_equal(out["old_logp"], rows["rollout_logp"])
    np.testing.assert_array_equal(out["rollout_threshold"], [[-np.inf, 0.5, 0.25, -np.inf]])


def _run(tmp_path, steps, replay, top_p=0.8):
    from experiments import grpo
    from tests.train.test_trainer import shrink
    from upt_jax.train.trainer import train

    c = shrink(grpo.get_config(), tmp_path, steps=steps)
    c.rollout.temperature, c.rollout.top_p = 0.7, top_p
    c.rollout.kept_set_replay = replay
    c.checkpoint.every = 0
    train(c)
    with open(tmp_path / "metrics.jsonl") as f:
        logged = [json.loads(line) for line in f]
    assert len(logged) == steps
    for m in logged:
        assert {"mismatch/abs_max", "mismatch/abs_mean", "mismatch/kl_k3"} <= set(m), sorted(m)
    return logged


def test_trainer_logs_a_zero_mismatch_with_kept_set_replay(tmp_path):
    """A tiny GRPO run at τ = 0.7, top-p 0.8 (kept-set replay is the default): metrics.jsonl carries
    the sampler-vs-trainer mismatch, 0 to float error, and the update is made at ratio 1."""
    (m,) = _run(tmp_path, 1, True)
    assert m["mismatch/abs_max"] <= 1e-5, m["mismatch/abs_max"]
    assert abs(m["pg/rollout/ratio_max"] - 1) <= 1e-5 and abs(m["pg/rollout/ratio_min"] - 1) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("replay", [True, False])
def test_trainer_logs_the_mismatch_every_step(tmp_path, replay):
    """Two steps each way: 0 with kept-set replay, ≥ 1e-2 without (the negative control)."""
    for m in _run(tmp_path, 2, replay):
        if replay:
            assert m["mismatch/abs_max"] <= 1e-5, m["mismatch/abs_max"]
        else:
            assert m["mismatch/abs_max"] >= 1e-2 and m["mismatch/kl_k3"] > 0


@pytest.mark.slow
def test_untruncated_runs_log_a_zero_mismatch(tmp_path):
    """Plain sampling (no top-k/top-p): the mismatch is logged and 0."""
    for m in _run(tmp_path, 1, True, top_p=1.0):
        assert m["mismatch/abs_max"] <= 1e-5
