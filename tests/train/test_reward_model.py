"""Reward models: Bradley–Terry loss, and training lifts held-out pair accuracy above chance."""

import os

import jax.numpy as jnp
import pytest
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
        first = t.pairs(next(iter(t.dataset)))  # the first step's pairs (same seed as the run)

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


def test_rlhf_ppo_scores_rollouts_with_the_learned_reward(tmp_path):
    from experiments import rlhf_ppo
    from upt_jax.train.trainer import train

    rm = shrink(reward_model.get_config(), tmp_path / "rm", steps=2)
    train(rm)  # upt train dispatches mode=reward_model
    c = shrink(rlhf_ppo.get_config(), tmp_path / "rlhf", steps=2)
    c.reward.model_run_dir = str(tmp_path / "rm")
    c.rollout.overlap_chunks = 2  # ignored: the reward model is a device program, scored serially
    history = train(c)
    for m in history:
        assert m["time/reward_overlap_s"] == 0.0
        # whitened learned rewards: mean 0, not the verifier's 0/1 (an untrained policy earns no 0/1 reward)
        assert abs(m["reward/mean"]) < 1e-4
        # ...so the raw scores are logged beside them: what shows the learned reward rising
        assert m["reward/model_score_std"] > 0 and np.isfinite(m["reward/model_score"])
        assert m["critic/loss"] > 0 and m["grad_norm"] > 0 and m["skipped"] == 0
        assert m["kl_ref"] >= 0.0


def test_learned_reward_normalisation(tmp_path):
    from upt_jax.train.reward_model import LearnedReward
    from upt_jax.train.trainer import train

    rm = shrink(reward_model.get_config(), tmp_path / "rm", steps=1)
    train(rm)
    prompts = [[5, 6, 7], [8, 9], [10], [11, 12]]
    responses = [[20, 21], [22], [23, 24, 25], [26]]
    raw = LearnedReward(str(tmp_path / "rm"), pad_id=0).raw_scores(prompts, responses)
    batch = LearnedReward(str(tmp_path / "rm"), pad_id=0, normalize="batch").scores(prompts, responses)
    np.testing.assert_allclose(batch, (raw - raw.mean()) / (raw.std() + 1e-6), rtol=1e-5, atol=1e-6)
    run = LearnedReward(str(tmp_path / "rm"), pad_id=0, normalize="running")
    run.scores(prompts, responses)
    again = run.scores(prompts, responses)
    both = np.concatenate([raw, raw])
    np.testing.assert_allclose(again, (raw - both.mean()) / (both.std(ddof=1) + 1e-6), rtol=1e-4, atol=1e-5)
    # metrics: the raw scores' mean and spread since the last call, then reset
    m = run.metrics()
    assert m["reward/model_score"] == pytest.approx(both.mean(), rel=1e-5, abs=1e-6)
    assert m["reward/model_score_std"] == pytest.approx(both.std(), rel=1e-4, abs=1e-6)
    assert run.metrics() == {}
    with pytest.raises(FileNotFoundError, match="no config.json"):
        LearnedReward(str(tmp_path / "nothing"), pad_id=0)


def test_corrupt_steps_labels_from_the_first_error():
    import random

    from upt_jax.data import synthetic
    from upt_jax.train.prm import corrupt_steps, step_label_row

    demo = synthetic.make_question("add_3", 0, 1)["demonstration"]
    text, labels = corrupt_steps(demo, random.Random(0))
    lines, orig = text.split("\n"), demo.split("\n")
    k = next(i for i, (a, b) in enumerate(zip(lines, orig)) if a != b)
    assert labels == [1] * k + [0] * (len(lines) - k)
    assert sum(a != b for a, b in zip(text, demo)) == 1  # exactly one digit changed
    ids = [5, 103, 6, 7, 103, 8, 3]  # three steps: two newlines, then the last token
    tg, w = step_label_row(ids, [1, 0, 0], newline_id=103)
    assert w.tolist() == [0, 1, 0, 0, 1, 0, 1] and tg.tolist() == [0, 1, 0, 0, 0, 0, 0]


def test_prm_learns_step_labels(tmp_path):
    from experiments import prm
    from upt_jax.train.trainer import train

    c = shrink(prm.get_config(), tmp_path / "prm", steps=10)
    c.train.questions_per_step = 8
    c.train.learning_rate = 3e-3
    c.reward_model.eval_every = 10
    c.reward_model.eval_pairs = 16
    history = train(c)
    assert [m["step"] for m in history] == list(range(1, 11))
    assert history[-1]["loss"] < history[0]["loss"]
    assert 0.0 <= history[-1]["heldout/step_accuracy"] <= 1.0


def test_grpo_process_with_a_prm_in_the_loop(tmp_path):
    from experiments import grpo, prm
    from upt_jax.train.prm import step_ends
    from upt_jax.train.trainer import Trainer, train

    p = shrink(prm.get_config(), tmp_path / "prm", steps=1)
    train(p)
    c = shrink(grpo.get_config(), tmp_path / "gp", steps=1)
    c.recipe.name = "grpo_process"
    c.reward.prm_run_dir = str(tmp_path / "prm")
    t = Trainer(c)
    try:
        rows, info, _ = t.batch(next(iter(t.dataset)), __import__("jax").random.key(0))
        (m,) = t.run()
    finally:
        t.close()
    ends = rows["step_mask"]
    assert ends.sum() >= rows["mask"].shape[0]  # at least the last token of every row
    assert np.all(ends <= rows["mask"]) and np.all((rows["step_rewards"] > 0) == (ends > 0))
    assert 0 < info["prm/step_reward_mean"] < 1
    assert m["grad_norm"] > 0 and m["skipped"] == 0
    e = step_ends(np.array([[5, 103, 6, 0, 0]]), np.array([[1, 1, 1, 0, 0]]), 103)
    assert e.tolist() == [[0, 1, 1, 0, 0]]


# ----------------------------------------------------------------------------- the policy's loop
# (config key overrides, the error, its message): each rejected by a policy run and a reward-model
# run alike, before any model is built
INVALID = {
    "mesh_vs_devices": ({"mesh.data": 3}, ValueError, r"config\.mesh data=3 .* does not fit 8 devices"),
    "microbatches": (
        {"train.questions_per_step": 3, "train.microbatches": 2},
        ValueError,
        r"questions_per_step=3 is not divisible by microbatches=2",
    ),
    "max_nonfinite": ({"train.max_nonfinite_in_a_row": 0}, ValueError, r"config\.train\.max_nonfinite_in_a_row=0"),
    "data_path_missing": (
        {"data.source": "file", "data.path": "/nonexistent/train*.jsonl"},
        FileNotFoundError,
        r"config\.data\.path: .*train\*\.jsonl.* does not exist",
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
@pytest.mark.parametrize("mode", ["reward_model", "prm"])
def test_a_reward_model_run_rejects_an_invalid_config_like_a_policy_run(tmp_path, monkeypatch, case, mode):
    from experiments import prm, sft
    from tests.train.test_validation import _set
    from upt_jax.train import model_source, trainer
    from upt_jax.train.trainer import Trainer

    for module in (model_source, trainer):
        monkeypatch.setattr(module, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    keys, exc, message = INVALID[case]
    experiment = reward_model if mode == "reward_model" else prm
    for make, config in (
        (Trainer, _set(shrink(sft.get_config(), tmp_path / "policy", 1), **keys)),
        (RewardModelTrainer, _set(shrink(experiment.get_config(), tmp_path / mode, 1), **keys)),
    ):
        with pytest.raises(exc, match=message):
            make(config)


def test_a_diverging_reward_model_run_stops_like_a_policy_run(tmp_path):
    """As `tests.train.test_trainer.test_a_diverging_run_saves_no_broken_checkpoint`: no diverged
    update is applied or saved, and max_nonfinite_in_a_row diverged steps stop the run."""
    from upt_jax.train.loop import NonFiniteError

    c = shrink(reward_model.get_config(), tmp_path / "rm", steps=4)
    c.train.learning_rate = 1e30
    c.train.max_nonfinite_in_a_row = 3
    t = RewardModelTrainer(c)
    try:
        with pytest.raises(NonFiniteError, match="3 updates in a row diverged .* no checkpoint was saved"):
            t.run()
        assert int(t.state.step) == 3
    finally:
        t.close()
    ckpts = tmp_path / "rm" / "checkpoints"
    assert not ckpts.exists() or not [p for p in os.listdir(ckpts) if p.isdigit()]
    good = shrink(reward_model.get_config(), tmp_path / "later", steps=1)
    train_reward_model(good)  # a good step, then diverging ones: the last good checkpoint is kept
    good.train.steps, good.train.learning_rate, good.train.max_nonfinite_in_a_row = 4, 1e30, 2
    with pytest.raises(NonFiniteError, match="last good checkpoint is step 1"):
        train_reward_model(good)


def test_reward_models_read_their_rows_from_files(tmp_path):
    """mode=reward_model reads preference pairs and mode=prm demonstrations from a file (both were
    read as RL rows, which asked for an 'answer' column a preference file does not have)."""
    import json

    from experiments import prm
    from upt_jax.train.trainer import load_records, preference_pair

    pairs, demos = tmp_path / "pairs.jsonl", tmp_path / "demos.jsonl"
    pairs.write_text(json.dumps({"prompt": "What is 1+1?", "chosen": "\\boxed{2}", "rejected": "\\boxed{3}"}) + "\n")
    demos.write_text(json.dumps({"prompt": "What is 1+1?", "completion": "1+1=2\n\\boxed{2}"}) + "\n")
    c = reward_model.get_config()
    c.data.source, c.data.path = "file", str(pairs)
    assert preference_pair(load_records(c)[0]) == ("\\boxed{2}", "\\boxed{3}")
    c = prm.get_config()
    c.data.source, c.data.path = "file", str(demos)
    assert load_records(c)[0]["demonstration"] == "1+1=2\n\\boxed{2}"
