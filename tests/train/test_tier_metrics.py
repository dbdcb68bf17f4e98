"""Per-tier training reward (`reward/<tier>`): each tier's groups averaged apart, so a comparison
can plot what RL does on its RL tier and on the replayed tiers separately."""

import jax
import numpy as np
import pytest

from experiments import grpo
from tests.train.test_trainer import shrink
from upt_jax.train.metrics_log import per_tier_means
from upt_jax.train.trainer import Trainer


def test_per_tier_means_weights_samples_and_skips_untiered_groups():
    got = per_tier_means("reward", ["a", "b", "a", None], [[1, 1], [0, 1], [0, 0], [1, 1]])
    assert got == {"reward/a": pytest.approx(0.5), "reward/b": pytest.approx(0.5)}
    assert per_tier_means("reward", [None], [[1.0]]) == {}


class _ShortAnswersVerifier:
    """Rewards 1 exactly when the gold answer has at most 3 digits (every add_2 question, no
    add_8 one), whatever was sampled: the per-tier means are then known."""

    def scores(self, outputs, golds):
        return np.asarray([float(len(g) <= 3) for g in golds], np.float32)

    def metrics(self):
        return {}

    def close(self):
        pass


def test_grpo_logs_the_reward_of_each_tier(tmp_path):
    c = shrink(grpo.get_config(), tmp_path / "run", steps=3)
    c.data.tiers = ("add_2", "add_8", "add_8")  # a mix: both tiers in most steps
    c.train.questions_per_step = 4
    c.rollout.n = 2
    t = Trainer(c)
    t.verifier.close()
    t.verifier = _ShortAnswersVerifier()
    seen = set()
    try:
        batches = iter(t.dataset)
        for step in range(3):  # the step's host-side metrics (train_step adds them to the logged ones)
            _, m, _ = t.batch(next(batches), jax.random.key(step))
            tiers = {k for k in m if k.startswith("reward/") and k != "reward/mean"}
            assert tiers and tiers <= {"reward/add_2", "reward/add_8"}
            seen |= tiers
            assert m.get("reward/add_2", 1.0) == 1.0 and m.get("reward/add_8", 0.0) == 0.0
            if len(tiers) == 2:  # reward/mean is the share of add_2 groups: strictly between
                assert 0.0 < m["reward/mean"] < 1.0
    finally:
        t.close()
    assert seen == {"reward/add_2", "reward/add_8"}
