"""Rollouts sampled at temperature τ ≠ 1 train the policy they were drawn from, π_θ^τ = softmax(z/τ).

Regression for a method defect: the sampler drew tokens at τ but stored behaviour log-probs at
τ = 1 and the trainer computed log π_θ, ratios and entropies at τ = 1, so the gradient was that
of neither the sampling policy nor the τ = 1 policy (verl and TRL divide the logits by the
rollout temperature in both places). Checked here: the sampler's log-probs are the tempered
policy's, the step-0 importance ratio is 1, and the update's gradient equals the gradient of the
GRPO loss written out by hand on the full tempered log-softmax.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from upt_jax import upge
from upt_jax.models import init_model, preset
from upt_jax.sampling import Sampler, SamplingParams, policy_temperature
from upt_jax.train import create_train_state, make_optimizer, make_train_step, upge_objective
from upt_jax.train.batching import pack_rows
from upt_jax.train.trainer import rollout_temperature

CFG = preset(
    "tiny", num_layers=2, vocab_size=64, hidden_size=32, intermediate_size=64, num_heads=4, num_kv_heads=2, head_dim=8
)
PROMPTS = [[3, 4, 5], [9, 10], [20, 21, 22, 23]]
G, TAU = 4, 0.7


@pytest.fixture(scope="module")
def model():
    return init_model(CFG, 0)


@pytest.fixture(scope="module")
def rollouts(model):
    """GRPO rows from rollouts sampled at τ: old_logp is the sampler's, rewards vary in every group."""
    params = SamplingParams(max_new_tokens=6, temperature=TAU, n=G)
    out = Sampler(model).generate(PROMPTS, jax.random.key(0), params)
    resp = [out.tokens[i, : out.lengths[i]].tolist() for i in range(len(out.lengths))]
    rows = pack_rows(
        [PROMPTS[j] for j in out.prompt_index],
        resp,
        pad_id=0,
        response_values=dict(old_logp=[out.logprobs[i, : out.lengths[i]] for i in range(len(resp))]),
    )
    rows.pop("truncated")
    rows["rewards"] = np.tile(np.asarray([1.0, 0.0, 0.0, 1.0], np.float32), len(PROMPTS))
    return out, {k: jnp.asarray(v) for k, v in rows.items()}


def test_policy_temperature_of_sampling_settings_and_configs():
    assert policy_temperature(SamplingParams(temperature=0.7)) == 0.7
    assert policy_temperature(SamplingParams(temperature=0.0)) == 1.0  # greedy: the model's own
    assert policy_temperature(SamplingParams(temperature=0.6, greedy=True)) == 1.0
    from experiments import grpo, sft

    c = grpo.get_config()
    c.rollout.temperature = 0.7
    assert rollout_temperature(c) == 0.7
    c.rollout.temperature = 0.0
    assert rollout_temperature(c) == 1.0
    s = sft.get_config()
    s.rollout.temperature = 0.7
    assert rollout_temperature(s) == 1.0  # offline data: no sampler drew it


def test_sampler_logprobs_are_the_tempered_policy_and_temperature_alone_does_not_truncate(model, rollouts):
    out, batch = rollouts
    recompute = sequence_at(model, TAU)(batch["tokens"], batch["attention_mask"])
    np.testing.assert_allclose(np.asarray(recompute * batch["mask"]), np.asarray(batch["old_logp"]), atol=2e-5)
    untempered = sequence_at(model, 1.0)(batch["tokens"], batch["attention_mask"])
    assert float(jnp.max(jnp.abs((untempered - recompute) * batch["mask"]))) > 0.05
    # temperature only: the sampling distribution is the tempered policy itself
    np.testing.assert_array_equal(out.sampling_logprobs, out.logprobs)


def sequence_at(model, tau):
    from upt_jax.models import sequence_logprobs

    return jax.jit(lambda t, a: sequence_logprobs(model, t, a, temperature=tau))


def _step_metrics(model, batch, temperature):
    tx = make_optimizer(1e-3)
    graphdef, state, _ = create_train_state(model, tx)
    objective = upge_objective(upge.get_recipe("grpo"), group_size=G, temperature=temperature)
    step = make_train_step(graphdef, tx, objective, group_size=G, donate=False)
    _, m = step(state, batch)
    return jax.device_get(m)


def test_step0_importance_ratio_is_one_at_the_rollout_temperature(model, rollouts):
    _, batch = rollouts
    m = _step_metrics(model, batch, TAU)
    assert abs(m["pg/rollout/ratio_max"] - 1) < 1e-4 and abs(m["pg/rollout/ratio_min"] - 1) < 1e-4
    assert m["pg/rollout/clip_frac"] == 0.0
    # what the old code did (log π_θ at τ = 1 against behaviour log-probs at τ): ratios far from 1,
    # with tokens clipped before a single update was made
    stale = _step_metrics(model, batch, 1.0)
    assert max(abs(stale["pg/rollout/ratio_max"] - 1), abs(stale["pg/rollout/ratio_min"] - 1)) > 0.05


def _textbook_grpo_loss(params, graphdef, batch, tau, eps=1e-6):
    """GRPO at its first update (Shao et al. 2024), written on the full logits: per question the
    advantage (r − mean) / (std + eps); per sequence the token mean of Â · π^τ/π_old^τ (clip not
    active at ratio 1); the loss is minus the mean over sequences."""
    m = nnx.merge(graphdef, params)
    logits, _ = m(batch["tokens"], attention_mask=batch["attention_mask"])
    logq = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32) / tau, axis=-1)
    lp = jnp.take_along_axis(logq, batch["tokens"][:, 1:, None], axis=-1)[..., 0]
    lp = jnp.pad(lp, ((0, 0), (1, 0)))
    mask = batch["mask"]
    r = np.asarray(batch["rewards"]).reshape(-1, G)
    adv = ((r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + eps)).reshape(-1)
    ratio = jnp.exp(lp - batch["old_logp"])
    per_seq = jnp.sum(adv[:, None] * ratio * mask, axis=1) / jnp.sum(mask, axis=1)
    return -jnp.mean(per_seq)


def test_gradient_is_the_tempered_policy_gradient(model, rollouts):
    _, batch = rollouts
    graphdef, params = nnx.split(model)
    objective = upge_objective(upge.get_recipe("grpo"), group_size=G, temperature=TAU)
    prepared, _ = objective.prepare(batch)
    dens = objective.denominators(prepared)

    def ours(p):
        sums, _ = objective.sums(nnx.merge(graphdef, p), prepared)
        return sum(sums[k] / dens[k] for k in sums)

    g_ours = jax.grad(ours)(params)
    g_book = jax.grad(_textbook_grpo_loss)(params, graphdef, batch, TAU)
    g_one = jax.grad(_textbook_grpo_loss)(params, graphdef, batch, 1.0)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_book)))
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(g_book))
    assert diff < 1e-4 * scale, (diff, scale)
    # and it is not the τ = 1 policy's gradient
    far = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_one)))
    assert far > 0.05 * scale


def test_trainer_updates_at_ratio_one_when_rollouts_are_tempered(tmp_path):
    """End to end: a GRPO run sampling at τ = 0.7 makes each step's (single) update at ratio 1, as
    on-policy GRPO must; the old code logged ratios far from 1 and clipped tokens at step 1."""
    from experiments import grpo
    from tests.train.test_trainer import shrink
    from upt_jax.train.trainer import train

    c = shrink(grpo.get_config(), tmp_path, steps=2)
    c.rollout.temperature = TAU
    for m in train(c):
        assert abs(m["pg/rollout/ratio_max"] - 1) < 1e-4 and abs(m["pg/rollout/ratio_min"] - 1) < 1e-4, m
        assert m["pg/rollout/clip_frac"] == 0.0


def test_train_temperature_ablation_trains_the_tau1_policy_on_tempered_samples(tmp_path):
    """``rollout.train_temperature`` (an ablation): sampling at τ = 0.7 and training π_θ at 1, as
    upt_jax did before the fix, but with the behaviour log-probs recomputed at 1 so each on-policy
    update is still at ratio 1 (its gradient: the τ = 1 policy's on samples drawn at 0.7, the
    textbook loss above at τ = 1). Unset, or equal to the sampling τ, nothing is recomputed."""
    from experiments import grpo
    from tests.train.test_trainer import shrink
    from upt_jax.train import run_spec
    from upt_jax.train.trainer import train

    c = shrink(grpo.get_config(), tmp_path, steps=2)
    c.rollout.temperature = TAU
    assert not run_spec.behaviour_recomputed(c)
    c.rollout.train_temperature = TAU
    assert rollout_temperature(c) == TAU and not run_spec.behaviour_recomputed(c)
    c.rollout.train_temperature = 1.0
    assert rollout_temperature(c) == 1.0 and run_spec.behaviour_recomputed(c)
    for m in train(c):
        assert abs(m["pg/rollout/ratio_max"] - 1) < 1e-4 and abs(m["pg/rollout/ratio_min"] - 1) < 1e-4, m
    # the frozen-inputs stage: old_logp replaced by the recomputation on the rollouts, kept on demos
    from upt_jax.train.frozen import frozen_inputs

    batch = dict(
        tokens=jnp.ones((2, 3), jnp.int32),
        attention_mask=jnp.ones((2, 3), jnp.int32),
        mask=jnp.asarray([[0, 1, 1], [0, 1, 1]], jnp.float32),
        old_logp=jnp.full((2, 3), -5.0),
        is_demo=jnp.asarray([0, 1], jnp.int32),
    )
    out = frozen_inputs(
        dict(batch),
        params=None,
        key=jax.random.key(0),
        logp_fn=None,
        behaviour_fn=lambda p, t, a, c: -jnp.ones(t.shape),
    ).policy
    np.testing.assert_array_equal(np.asarray(out["old_logp"]), [[0, -1, -1], [-5, -5, -5]])
