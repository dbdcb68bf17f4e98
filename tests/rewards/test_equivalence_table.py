"""The answer-equivalence table (57 pairs) gives the expected rewards, through the pool
and in-process alike."""

import pytest

from tests.rewards.table import CHOICE_PAIRS, MATH_PAIRS
from upt_jax.rewards import Verifier, verify_math


def test_table_is_big_and_balanced():
    pairs = MATH_PAIRS + CHOICE_PAIRS
    assert len(pairs) >= 40
    assert 15 <= sum(e == 0.0 for _, _, e in pairs) <= len(pairs) - 15


@pytest.fixture(scope="module")
def math_rewards():
    with Verifier("math", timeout_s=10.0, num_workers=2) as verifier:
        rewards = verifier([o for o, _, _ in MATH_PAIRS], [g for _, g, _ in MATH_PAIRS])
        metrics = verifier.metrics()
    return rewards, metrics


@pytest.mark.parametrize("index", range(len(MATH_PAIRS)), ids=[f"{g}<-{o[-30:]}" for o, g, _ in MATH_PAIRS])
def test_math_pair(math_rewards, index):
    output, gold, expected = MATH_PAIRS[index]
    reward = math_rewards[0][index]
    assert reward.score == expected, (output, gold, reward)
    if expected == 1.0:
        assert reward.reason == "correct" and reward.extracted
    else:
        assert reward.reason in ("wrong", "no_answer")


def test_math_metrics_count_reasons(math_rewards):
    rewards, metrics = math_rewards
    assert sum(metrics.values()) == len(MATH_PAIRS)
    assert metrics["reward/correct"] == sum(e == 1.0 for _, _, e in MATH_PAIRS)
    assert metrics["reward/no_answer"] == 1


def test_in_process_verify_math_agrees_with_pool(math_rewards):
    for (output, gold, _), pooled in zip(MATH_PAIRS, math_rewards[0]):
        assert verify_math(output, gold) == pooled


def test_strict_extraction_without_fallbacks():
    with Verifier("math", fallbacks=()) as verifier:
        out = verifier(["The final answer is $\\frac{3}{4}$.", "\\boxed{0.75}"], ["0.75"] * 2)
    assert [(r.score, r.reason) for r in out] == [(0.0, "no_answer"), (1.0, "correct")]


@pytest.mark.parametrize("output, gold, expected", CHOICE_PAIRS)
def test_choice_pair(output, gold, expected):
    (reward,) = Verifier("choice")([output], [gold])
    assert reward.score == expected


def test_scores_array():
    verifier = Verifier("choice")
    scores = verifier.scores([o for o, _, _ in CHOICE_PAIRS], [g for _, g, _ in CHOICE_PAIRS])
    assert scores.dtype.name == "float32"
    assert scores.tolist() == [e for _, _, e in CHOICE_PAIRS]
