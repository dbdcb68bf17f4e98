"""The countdown verifier (upt_jax.rewards.countdown): any expression that reaches the target from
the given numbers, each at most once, with the allowed operations scores 1; everything else 0 with
its reason; adversarial output scores 0 fast and runs nothing; `Verifier` routes items to the kind
their records name."""

import os
import time

import pytest

from tests.rewards.adversarial import code_strings, huge_and_pathological
from upt_jax.rewards import KINDS, RoutedVerifier, Verifier, verify_countdown
from upt_jax.rewards.countdown import parse_reference

GOLD = "22 from 3 5 7 with +*"


@pytest.mark.parametrize(
    "answer",
    [
        "(3*5)+7",
        "3*5+7",
        "7+5*3",
        "7 + (5 * 3)",
        "((3*5))+7",
        "3 \\times 5 + 7",
        "3×5+7",
        "$3\\cdot 5+7$",
        "(3*5)+7 = 22",
        "\\left(3*5\\right)+7",
    ],
)
def test_any_expression_reaching_the_target_is_accepted(answer):
    r = verify_countdown(f"B3*C5=I15: I15+D7=J22\n\\boxed{{{answer}}}", GOLD)
    assert (r.score, r.reason) == (1.0, "correct"), r


@pytest.mark.parametrize(
    "answer, reason, detail",
    [
        ("3*5+8", "wrong", "uses [8]"),  # a number not given
        ("3*5+7+7-7", "wrong", "uses [7, 7]"),  # a number used twice
        ("(3+5)*7-(5-3)", "wrong", "uses [3, 5]"),
        ("5*5-3", "wrong", "uses [5]"),
        ("3*5+7-0", "wrong", "uses [0]"),
        ("(7-3)*5+2", "wrong", "uses [2]"),
        ("3*7+5-3", "wrong", "uses [3]"),
        ("3+5+7", "wrong", "value 15"),  # well formed, misses the target
        ("(3*5)+7 = 21", "wrong", "claims '21'"),
        ("(7-3)*5", "wrong", "operations - not allowed"),  # − is not in "+*"
        ("-3+25", "bad_format", "UnaryOp"),  # a unary minus is not a use of a given number
        ("3**2", "bad_format", "Pow"),
        ("3/5", "bad_format", "characters '/'"),
        ("22", "wrong", "uses [22]"),
        ("3*5+7.0", "bad_format", "characters '.'"),
        ("07+15", "bad_format", "SyntaxError"),
        ("3 5 7", "bad_format", "SyntaxError"),
        ("(3*5)+7 = 22 = 22", "bad_format", "characters '='"),
        ("", "bad_format", "SyntaxError"),
        ("1_5+7", "bad_format", "characters '_'"),
        ("x", "bad_format", "characters 'x'"),
    ],
)
def test_a_broken_rule_or_a_malformed_answer_scores_zero_with_its_reason(answer, reason, detail):
    r = verify_countdown(f"\\boxed{{{answer}}}", GOLD)
    assert (r.score, r.reason) == (0.0, reason), r
    assert detail in (r.detail or ""), r


def test_at_most_once_means_repeated_numbers_may_be_used_as_often_as_given():
    assert verify_countdown("\\boxed{4*4+5}", "21 from 4 4 5 with +*").correct
    assert not verify_countdown("\\boxed{4*4*4}", "64 from 4 4 5 with +*").correct
    assert verify_countdown("\\boxed{9-4}", "5 from 9 4 2 with +-*").correct  # a subset is fine


def test_no_box_too_long_and_bad_references():
    assert verify_countdown("3*5+7", GOLD).reason == "no_answer"  # the box is required
    assert verify_countdown("\\boxed{" + "(" * 40 + "3" + ")" * 40 + "}", GOLD).reason == "too_long"
    for bad in ("22", "22 from with +*", "22 from 3 5 7 with /", "22 from 3 5 7 with ++", None, "x" * 10_000):
        assert verify_countdown("\\boxed{3*5+7}", bad).reason == "bad_reference"
    assert parse_reference(GOLD) == ((3, 5, 7), 22, "+*")


@pytest.mark.parametrize("name, text", list(huge_and_pathological().items()))
def test_pathological_outputs_score_zero_fast(name, text):
    start = time.monotonic()
    r = verify_countdown(text, GOLD)
    assert r.score == 0.0 and r.reason in ("no_answer", "too_long", "bad_format", "wrong"), (name, r)
    assert time.monotonic() - start < 0.5


def test_code_strings_run_nothing(tmp_path):
    outputs = code_strings(str(tmp_path), "out")
    assert all(verify_countdown(o, GOLD).score == 0.0 for o in outputs)
    assert all(
        verify_countdown("\\boxed{3*5+7}", g).reason == "bad_reference" for g in code_strings(str(tmp_path), "g")
    )
    with Verifier("countdown", isolate=True, num_workers=1) as isolated:  # the pool path pickles it too
        assert [r.reason for r in isolated(["\\boxed{3*5+7}"], [GOLD])] == ["correct"]
    time.sleep(0.1)
    assert not [f for f in os.listdir(tmp_path) if f.startswith("PWNED")]


def test_verifier_routes_each_item_to_the_kind_its_record_names():
    assert "countdown" in KINDS
    outputs = ["\\boxed{3*5+7}", "\\boxed{42}", "\\boxed{3+5}", "\\boxed{41}"]
    golds = [GOLD, "42", GOLD, "42"]
    with Verifier("integer") as v:
        assert list(v.scores(outputs, golds, ["countdown", "integer", "countdown", None])) == [1, 1, 0, 0]
        # without kinds every item is scored as an integer: the countdown references are bad ones
        assert [r.reason for r in v(outputs[:1], golds[:1])] == ["bad_reference"]
        assert v.metrics() == {
            "reward/bad_reference": 1,
            "reward/correct": 1,
            "reward/countdown/correct": 1,
            "reward/countdown/wrong": 1,
            "reward/wrong": 1,
        }
        with pytest.raises(ValueError, match="unknown verifier kind 'nope'"):
            v(outputs[:1], golds[:1], ["nope"])
    with RoutedVerifier() as routed:
        assert [r.score for r in routed(outputs, golds, ["countdown", "integer", "countdown", "integer"])] == [
            1,
            1,
            0,
            0,
        ]


def test_countdown_is_a_built_in_reward_function_too():
    from upt_jax.rewards.functions import resolve

    name, fn = resolve("countdown")
    assert name == "countdown" and fn(["p"] * 2, ["\\boxed{3*5+7}", "\\boxed{3+5+7}"], [GOLD, GOLD]) == [1.0, 0.0]
