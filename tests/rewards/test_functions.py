"""The reward-function API (issue #21, item 1): ``fn(prompts, completions, **columns) -> list[float]``
named by import path or built-in name, or passed as a callable (a closure runs in the calling
process: nothing is unpickled); weights; each call time-limited in the worker pool; per-reward metrics; a function that
hangs is killed within its limit, counted, and the rest of the batch is scored; in a training run a
user module's reward reading an extra dataset column gives exactly the rewards it should."""

import json
import time

import numpy as np
import pytest

from upt_jax.rewards.functions import BUILTIN, RewardFunctions, resolve, row_columns

RECORDS = [
    {"question": "1+1?", "answer": "2", "columns": {"bonus": 0.25, "hang": False}},
    {"question": "2+2?", "answer": "4", "columns": {"bonus": 1.0, "hang": True}},
]


def test_resolve_names_import_paths_and_callables():
    assert resolve("math") == ("math", BUILTIN["math"])
    name, fn = resolve("tests.rewards.user_rewards:bonus")
    assert name == "bonus" and fn.__module__ == "tests.rewards.user_rewards"
    with pytest.raises(ValueError, match="unknown reward 'maths'"):
        resolve("maths")
    with pytest.raises(ValueError, match="has no 'nope'"):
        resolve("tests.rewards.user_rewards:nope")
    with pytest.raises(ImportError, match="cannot import module 'no_such_rewards'"):
        resolve("no_such_rewards:f")


def test_columns_are_answer_and_the_rows_other_fields():
    assert row_columns(RECORDS[0]) == {"bonus": 0.25, "hang": False, "answer": "2"}
    synthetic = {"id": "add_2/0", "question": "q", "answer": "5", "demonstration": "d", "tier": "add_2"}
    assert row_columns(synthetic) == {"id": "add_2/0", "tier": "add_2", "answer": "5"}


def test_weighted_sum_builtins_user_module_and_a_notebook_closure():
    scale = 3.0

    def scaled(prompts, completions, bonus, **_):  # a closure: called in this process
        return [scale * b for b in bonus]

    completions = ["so \\boxed{2}", "\\boxed{5}"]
    with RewardFunctions(
        ["math", "tests.rewards.user_rewards:length_penalty", scaled],
        weights=[1.0, 0.5, 2.0],
        timeout_s=10.0,
        num_workers=2,
    ) as rf:
        total = rf.scores([r["question"] for r in RECORDS], completions, RECORDS)
        m = rf.metrics()
    expect = (
        np.array([1.0, 0.0]) + 0.5 * -np.array([len(c) / 100 for c in completions]) + 2.0 * 3.0 * np.array([0.25, 1.0])
    )
    np.testing.assert_allclose(total, expect, rtol=1e-6)
    assert m["reward/math"] == 0.5 and m["reward/scaled"] == pytest.approx(1.875)


def test_a_hanging_reward_is_killed_within_its_limit_and_counted():
    with RewardFunctions(
        ["tests.rewards.user_rewards:hang_when_asked", "tests.rewards.user_rewards:broken"],
        timeout_s=1.0,
        num_workers=2,
    ) as rf:
        rf.scores(["warm-up"], ["x"], RECORDS[:1])  # workers started
        rf.metrics()
        t0 = time.monotonic()
        parts = rf.per_function(["a", "b"], ["x", "y"], RECORDS)
        took = time.monotonic() - t0
        m = rf.metrics()
    assert took < 1.0 + 3.0  # one limit, plus slack for a busy host; not a hang
    np.testing.assert_array_equal(parts["hang_when_asked"], [0.5, 0.0])
    np.testing.assert_array_equal(parts["broken"], [0.0, 0.0])
    assert m["reward/hang_when_asked/timeout"] == 1 and m["reward/broken/error"] == 2


def test_a_closure_that_hangs_or_raises_is_timed_out_in_process_and_never_pickled():
    import threading

    release = threading.Event()

    def slow(prompts, completions, **_):  # a closure: runs in this process, on a daemon thread
        if completions[0] == "hang":
            release.wait(30)
        if completions[0] == "boom":
            raise RuntimeError("boom")
        return [0.25]

    with RewardFunctions([slow], timeout_s=0.5) as rf:
        t0 = time.monotonic()
        parts = rf.per_function(["a", "b", "c"], ["ok", "hang", "boom"], RECORDS + RECORDS[:1])
        took = time.monotonic() - t0
        m = rf.metrics()
        assert rf.running_pool is None  # no worker was started for it
    release.set()
    assert took < 0.5 + 3.0
    np.testing.assert_array_equal(parts["slow"], [0.25, 0.0, 0.0])
    assert m["reward/slow/timeout"] == 1 and m["reward/slow/error"] == 1


def test_weights_must_match():
    with pytest.raises(ValueError, match="2 functions but weights"):
        RewardFunctions(["math", "format"], weights=[1.0])


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    """A user's JSONL: questions with an extra ``bonus`` column, one row that makes a reward hang."""
    d = tmp_path_factory.mktemp("data")
    rows = [{"question": f"{i} + 1 = ?", "answer": str(i + 1), "bonus": i / 8, "hang": i == 3} for i in range(8)]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(d / "train.jsonl"), {r["question"]: r for r in rows}


def test_training_rewards_come_from_the_users_functions(user_file, tmp_path):
    """GRPO on the user's file with ``reward.functions`` from the command line: every rollout's reward
    is its row's ``bonus`` + 0.5 (``hang_when_asked``), except on the row that hangs, whose calls are
    killed at the limit, counted, and scored 0; the run finishes its steps."""
    from experiments import grpo
    from tests.train.test_trainer import shrink
    from upt_jax.cli import load_config
    from upt_jax.train.trainer import Trainer

    path, rows = user_file
    c = load_config(
        [
            "--config",
            "grpo",
            '--config.reward.functions=("tests.rewards.user_rewards:bonus",'
            '"tests.rewards.user_rewards:hang_when_asked")',
            "--config.reward.weights=(1.0, 1.0)",
            "--config.reward.timeout_s=1.0",
        ]
    )
    c = shrink(c, tmp_path / "run", steps=2)
    c.data.source, c.data.path, c.data.verifier = "file", path, "math"
    c.train.questions_per_step = 4
    t = Trainer(c)
    try:
        seen, history = [], []
        original = t.rollouts

        def spy(records, prompts, key, timing):
            groups = original(records, prompts, key, timing)
            seen.extend(groups)
            return groups

        t.rollouts = spy
        history = t.run()
    finally:
        t.close()
    assert [m["step"] for m in history] == [1, 2] and len(seen) == 8
    for g in seen:
        row = rows[g["record"]["question"]]
        want = row["bonus"] + (0.0 if row["hang"] else 0.5)
        np.testing.assert_allclose(g["rewards"], [want] * c.rollout.n, rtol=1e-6)
    hung = sum(rows[g["record"]["question"]]["hang"] for g in seen) * c.rollout.n
    assert sum(m.get("reward/hang_when_asked/timeout", 0) for m in history) == hung
    assert all("reward/bonus" in m and "reward/hang_when_asked" in m for m in history)
