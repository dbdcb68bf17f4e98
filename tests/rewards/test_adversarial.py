"""Adversarial model outputs: each is scored within the time limit, crashes nothing and
runs nothing."""

import os
import time

import pytest
import sympy

from tests.rewards.adversarial import code_strings, huge_and_pathological
from upt_jax.rewards import (
    Reward,
    Verifier,
    math_equivalent,
    verify_choice,
    verify_exact,
    verify_format,
    verify_integer,
    verify_math,
)
from upt_jax.rewards.math_equiv import EvalRefused, eval_guard

LIMIT = 1.5
WORKERS = 2
CASES = huge_and_pathological()
IN_PROCESS = [verify_integer, verify_exact, verify_choice, verify_format]


@pytest.fixture(scope="module")
def verifier():
    with Verifier("math", timeout_s=LIMIT, num_workers=WORKERS) as v:
        v(["\\boxed{1}"], ["1"])  # workers up
        yield v


def _assert_healthy(verifier):
    assert verifier(["\\boxed{\\frac{2}{4}}"], ["0.5"])[0].reason == "correct"


def _check_batch(verifier, outputs, golds):
    """Every item gets a Reward; the batch takes at most ceil(n_timeouts / workers)
    time limits beyond the normal work, so no single item ran past the limit."""
    start = time.monotonic()
    rewards = verifier(outputs, golds)
    elapsed = time.monotonic() - start
    assert len(rewards) == len(outputs) and all(isinstance(r, Reward) for r in rewards)
    n_timeouts = sum(r.reason == "timeout" for r in rewards)
    rounds = -(-n_timeouts // WORKERS)
    assert elapsed < (rounds + 1) * (LIMIT + 0.5) + 3.0, (elapsed, n_timeouts)
    return rewards


def test_pathological_outputs_math(verifier):
    names = list(CASES)
    rewards = _check_batch(verifier, [CASES[n] for n in names], ["\\frac{x}{2}"] * len(names))
    by_name = dict(zip(names, rewards))
    for name, r in by_name.items():
        assert r.score == 0.0, name
    assert by_name["1MB inside a box"].reason == "too_long"
    assert by_name["10k nested braces in a box"].reason == "too_long"
    assert by_name["10k unbalanced braces"].reason == "too_long"
    assert by_name["1MB of unclosed boxes"].reason == "no_answer"
    assert by_name["9^{9^{9^9}} boxed"].reason == "timeout"
    assert by_name["huge factorial"].reason == "timeout"
    _assert_healthy(verifier)


def test_pathological_outputs_reach_math_verify_without_the_length_bound():
    """With the extraction bound lifted, the 1 MB and 10,000-brace answers go to
    math-verify in the workers; the time limit still holds."""
    with Verifier("math", timeout_s=LIMIT, num_workers=WORKERS, max_chars=10**7) as v:
        names = [
            "1MB inside a box",
            "10k nested braces in a box",
            "10k nested fracs",
            "500 nested sqrt",
            "many variables",
            "9^9^9^9 boxed",
            "big matrix",
        ]
        rewards = _check_batch(v, [CASES[n] for n in names], ["\\frac{x}{2}"] * len(names))
        assert all(r.score == 0.0 for r in rewards)
        assert {r.reason for r in rewards} <= {"timeout", "wrong", "error", "worker_died"}
        assert sum(r.reason == "timeout" for r in rewards) >= 3
        _assert_healthy(v)


def test_pathological_references(verifier):
    """References come from datasets and are untrusted too."""
    outputs = ["\\boxed{3}", "\\boxed{x}"] * 3
    golds = [
        CASES["9^{9^{9^9}} boxed"],
        CASES["1MB of text"],
        CASES["10k nested fracs"],
        CASES["null bytes and junk"],
        "\\frac{1}{" * 500,
        CASES["huge polynomial power"],
    ]
    rewards = _check_batch(verifier, outputs, golds)
    assert all(r.score == 0.0 for r in rewards)
    _assert_healthy(verifier)


@pytest.mark.parametrize("name", list(CASES))
def test_pathological_outputs_in_process_verifiers(name):
    start = time.monotonic()
    for fn in IN_PROCESS:
        reward = fn(CASES[name], "3" if fn is not verify_choice else "A")
        assert isinstance(reward, Reward)
    assert time.monotonic() - start < 0.5


def test_single_hanging_item_returns_within_the_limit(verifier):
    for text in (CASES["9^{9^{9^9}} boxed"], CASES["tower of twos"]):
        start = time.monotonic()
        (reward,) = verifier([text], ["2"])
        assert reward == Reward(0.0, "timeout", extracted=text[7:-1])
        # the limit itself, plus slack for a loaded 2-core machine (kill, respawn, IPC)
        assert LIMIT <= time.monotonic() - start < LIMIT + 1.5


def test_code_strings_run_nothing(verifier, tmp_path):
    outputs = code_strings(str(tmp_path), "out")
    golds = code_strings(str(tmp_path), "gold")
    rewards = _check_batch(verifier, outputs + ["\\boxed{3}"] * len(golds), ["3"] * len(outputs) + golds)
    assert all(r.score == 0.0 for r in rewards)
    for fn in IN_PROCESS:
        for out, gold in zip(outputs, golds):
            fn(out, gold if fn is not verify_integer else "3")
    with Verifier("exact", isolate=True, num_workers=1) as isolated:
        isolated(outputs, golds)
    for out, gold in zip(outputs, golds):
        verify_math(out, gold)  # math-verify in this process too
    time.sleep(0.2)
    assert not [f for f in os.listdir(tmp_path) if f.startswith("PWNED")]
    _assert_healthy(verifier)


def test_eval_guard_blocks_sympify_in_process_and_restores(tmp_path):
    marker = tmp_path / "PWNED_guard"
    code = f"__import__('os').system('touch {marker}')"
    with eval_guard():
        with pytest.raises(EvalRefused):
            sympy.sympify(code)
        assert sympy.sympify("12") == 12
        assert math_equivalent("x+1", "1+x").reason == "correct"
    assert not marker.exists()
    assert sympy.sympify("x + 1") == sympy.Symbol("x") + 1  # restored afterwards
