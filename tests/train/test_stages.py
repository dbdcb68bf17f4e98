"""One online-RL step through the public stages (`upt_jax.train.stages`), without a `Trainer`:
rollout → score → assemble rows → frozen models' inputs → update, from the same config and seed,
gives the parameters the `Trainer`'s step gives, bitwise (GRPO, and HPT with its demonstrations
and in-jit gate)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import grpo, hpt
from tests.train.test_trainer import _CoinVerifier, shrink
from upt_jax import upge
from upt_jax.data import load_tokenizer, make_dataset
from upt_jax.data.templates import prompt_ids
from upt_jax.models.partition import make_mesh
from upt_jax.sampling import Sampler
from upt_jax.train import stages
from upt_jax.train.model_source import build_model
from upt_jax.train.records import load_records
from upt_jax.train.rollouts import sampling_params
from upt_jax.train.run_spec import get_recipe, group_size, kept_set_replay, rollout_temperature
from upt_jax.train.state import create_train_state
from upt_jax.train.trainer import Trainer


def _config(experiment, tmp_path):
    c = shrink(experiment.get_config(), tmp_path, steps=1)
    c.rollout.n = 3
    c.rollout.temperature = 0.7
    c.rollout.streams = "1"
    c.checkpoint.async_save = False
    return c


def _stage_step(config):
    """The first training step of ``config``, stage by stage (what a notebook would write)."""
    recipe = get_recipe(config)
    req = upge.requirements(recipe)
    tok = load_tokenizer(config.tokenizer)
    m = config.mesh
    mesh = make_mesh(m.data, m.fsdp, m.tensor) if jax.device_count() > 1 else None
    special = dict(eos_token_id=tok.eos_id, bos_token_id=tok.bos_id, pad_token_id=tok.pad_id)
    model = build_model(config.model, vocab_size=tok.vocab_size, special=special, mesh=mesh)
    tx = stages.optimizer(config)
    graphdef, state, shardings = create_train_state(model, tx, seed=config.seed, mesh=mesh)
    g, temperature = group_size(config, req.demos), rollout_temperature(config)
    step_fn = stages.policy_step(
        config, recipe, graphdef, tx, group_size=g, temperature=temperature, mesh=mesh, shardings=shardings
    )
    logp_fn = stages.policy_logp_fn(graphdef, chunk_size=config.train.logprob_chunk, temperature=temperature)
    ref_params = jax.tree.map(jnp.copy, state.params) if req.reference else None
    sampler = Sampler(model, pad_id=tok.pad_id, mesh=mesh, streams=1)
    dataset = make_dataset(
        load_records(config, recipe),
        seed=config.seed,
        num_epochs=None,
        batch_size=config.train.questions_per_step,
        drop_remainder=True,
    )

    records = next(iter(dataset))
    prompts = [prompt_ids(tok, r, config.data.template, system_prompt=config.data.system_prompt) for r in records]
    key = jax.random.fold_in(state.key, 0)  # step 0's key; its first draw samples with fold_in(key, 0)
    rollouts = stages.sample(
        sampler, state.params, records, prompts, jax.random.fold_in(key, 0), sampling_params(config, tok)
    )
    scored = stages.score(stages.Scorer(tok, verifier=_CoinVerifier()), rollouts)
    rows, info = stages.assemble_rows(
        scored, tok, demos=req.demos, recipe_name=recipe.name, replay=kept_set_replay(config)
    )
    rows.pop("truncated")
    batch = stages.frozen_inputs(
        stages.to_device(rows, mesh), params=state.params, key=key, logp_fn=logp_fn, ref_params=ref_params, mesh=mesh
    )
    state, metrics = stages.update(step_fn, state, batch, epochs=config.train.update_epochs)
    return state, metrics, scored, rows, info


def _trainer_step(config):
    t = Trainer(config)
    t.verifier = _CoinVerifier()
    try:
        metrics = t.train_step()
        return jax.device_get(t.state.params), metrics
    finally:
        t.close()


@pytest.mark.parametrize("experiment", [grpo, hpt], ids=["grpo", "hpt"])
def test_one_step_through_the_stages_equals_the_trainers(experiment, tmp_path):
    state, metrics, scored, rows, info = _stage_step(_config(experiment, tmp_path / "stages"))
    params, t_metrics = _trainer_step(_config(experiment, tmp_path / "trainer"))

    # the typed values between the stages
    assert isinstance(scored, stages.ScoredRollouts) and len(scored) == 2
    assert all(isinstance(g, stages.Group) and g["rewards"].shape == (3,) for g in scored)
    assert np.ptp(np.concatenate([g.rewards for g in scored])) > 0  # both rewards: the update learns
    assert isinstance(rows, stages.Rows) and rows.tokens.shape[0] == 2 * (3 + int(experiment is hpt))
    assert rows["is_demo"].sum() == (2 if experiment is hpt else 0)
    assert info["reward/mean"] == t_metrics["reward/mean"]

    assert metrics["grad_norm"] > 0 and not metrics["skipped"]
    assert float(metrics["loss"]) == t_metrics["loss"]
    ours, theirs = jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(params)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_typed_values_reject_what_breaks_their_contract():
    with pytest.raises(ValueError, match="missing"):
        stages.Rows(dict(tokens=np.zeros((2, 3)), attention_mask=np.zeros((2, 3))))
    with pytest.raises(ValueError, match="one shape"):
        stages.Rows(dict(tokens=np.zeros((2, 3)), attention_mask=np.zeros((2, 3)), mask=np.zeros((1, 3))))
    with pytest.raises(ValueError, match="need 4 responses"):
        stages.Rollouts(
            records=[{}, {}],
            prompts=[[1], [2]],
            n=2,
            responses=[[1]] * 3,
            logp=[np.zeros(1)] * 4,
            sampling_logp=[np.zeros(1)] * 4,
            thresholds=[np.zeros(1)] * 4,
            finished=[True] * 4,
        )


def test_the_critic_takes_its_own_number_of_updates_per_step():
    """``critic_epochs``: PPO's value model updated that many times on the step's fixed returns,
    whatever the policy's ``epochs`` (None: as many as the policy's)."""

    class Counting:
        def __init__(self):
            self.calls = 0

        def update(self, batch):
            self.calls += 1
            return {"loss": jnp.float32(self.calls)}

    policy_calls = []

    def step_fn(state, batch):
        policy_calls.append(1)
        return state + 1, {"loss": jnp.float32(state)}

    batch = stages.Batch(policy={}, critic={}, info={})
    for epochs, critic_epochs, expected in ((2, None, 2), (2, 8, 8), (1, 3, 3)):
        critic, policy_calls[:] = Counting(), []
        state, m = stages.update(step_fn, 0, batch, epochs=epochs, critic=critic, critic_epochs=critic_epochs)
        assert state == epochs and len(policy_calls) == epochs
        assert critic.calls == expected and m["critic/loss"] == expected  # the critic's last update's metrics
