"""Reward models: Bradley–Terry loss, and training lifts held-out pair accuracy above chance."""
import jax.numpy as jnp
import numpy as np

from experiments import reward_model
from upt_jax.models.reward import bradley_terry_loss, last_token_index
from upt_jax.train.reward_model import RewardModelTrainer, train_reward_model
from tests.train.test_trainer import shrink


def test_bradley_terry_loss_values():
    s, n, acc = bradley_terry_loss(jnp.array([2.0, 0.0]), jnp.array([0.0, 0.0]))
    np.testing.assert_allclose(s, np.log1p(np.exp(-2.0)) + np.log(2.0), rtol=1e-6)
    assert float(n) == 2 and float(acc) == 0.5
    # label smoothing ε: (1−ε)·softplus(−d) + ε·softplus(d); margin shifts d
    s, _, _ = bradley_terry_loss(jnp.array([1.0]), jnp.array([0.0]), margin=0.5, label_smoothing=0.1)
    d = 0.5
    np.testing.assert_allclose(s, 0.9 * np.log1p(np.exp(-d)) + 0.1 * np.log1p(np.exp(d)), rtol=1e-6)


def test_last_token_index_left_and_right_padding():
    m = jnp.array([[0, 0, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]])
    assert last_token_index(m).tolist() == [3, 2, 3]


def test_reward_model_learns_synthetic_pairs(tmp_path):
    c = shrink(reward_model.get_config(), tmp_path / "rm", steps=12)
    c.train.questions_per_step = 8
    c.data.n_per_tier = 8  # the same 8 pairs every step (reshuffled): the direction must show on them
    c.train.learning_rate = 1e-2
    c.reward_model.eval_every = 12
    c.reward_model.eval_pairs = 32
    t = RewardModelTrainer(c)
    try:
        first = t._pairs(next(iter(t.dataset)))  # the first step's pairs (same seed as the run)

        def accuracy_and_loss(params):
            r = np.asarray(t.score_fn(params, first["tokens"], first["attention_mask"]))
            d = r[0::2] - r[1::2]
            return float(np.mean(d > 0)), float(np.mean(np.log1p(np.exp(-d))))

        acc0, loss0 = accuracy_and_loss(t.state.params)
        history = t.run()
        acc1, loss1 = accuracy_and_loss(t.state.params)
    finally:
        t.close()
    assert [m["step"] for m in history] == list(range(1, 13))
    assert loss1 < loss0 - 0.01 and acc1 > 0.5 and acc1 >= acc0, (acc0, loss0, acc1, loss1)
    assert 0.0 <= history[-1]["heldout/pair_accuracy"] <= 1.0  # logged on held-out pairs
    # resume: a rerun with more steps continues from the checkpoint
    c.train.steps = 13
    more = train_reward_model(c)
    assert [m["step"] for m in more] == [13]
