"""The strict math verifier (issue #20 item 6): only genuinely equal answers count.

The default ``math`` verifier follows math-verify's defaults, which accept ``0.1000001``
for 0.1 (numbers rounded to 6 decimals), ``100\\%`` for 1 (percent converted) and ``x=2``
for 2 (an equation's right-hand side): a reward-hacking surface for RL. ``math_strict``
closes those three and keeps the forms that are equal.
"""

import pytest

from tests.rewards.table import MATH_PAIRS
from upt_jax.data.readers import DataConfig
from upt_jax.rewards import RoutedVerifier, Verifier, math_equivalent, verify_math

HACKS = [
    ("0.1000001", "0.1"),  # within math-verify's default 6-decimal rounding
    ("100\\%", "1"),  # percent converted to a fraction
    ("x=2", "2"),  # an equation's right-hand side taken as the answer
]
STRICT_REJECTS = HACKS + [
    ("0.333333", "\\frac{1}{3}"),  # an approximation is not the number
    ("50\\%", "0.5"),
    ("0.5", "50\\%"),
    ("0.1000000001", "0.1"),
    ("y=2", "x=2"),
]
GENUINE = [
    ("1/2", "0.5"),
    ("\\frac{1}{2}", "0.5"),
    ("0.5", "\\frac{1}{2}"),
    ("2.0", "2"),
    ("1.60", "1.6"),
    ("0.125", "\\frac{1}{8}"),
    ("1234.5678", "\\frac{12345678}{10000}"),
    ("123456789.123", "\\frac{123456789123}{1000}"),
    ("50\\%", "50"),  # the percent sign read as a unit, like "cm"
    ("12.5\\%", "12.5\\%"),
    ("5\\text{ cm}", "5"),
    ("x=2", "x=2"),
    ("2", "x=2"),  # the value of the reference's assignment
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\{3,2,1\\}", "\\{1,2,3\\}"),
    ("(0.5, 1]", "(\\frac{1}{2}, 1]"),
    ("4.5\\times 10^{33}", "4.5e33"),
    ("-\\frac{3}{4}", "-0.75"),
]


@pytest.mark.parametrize("prediction, gold", HACKS)
def test_default_math_verifier_still_accepts_the_lenient_forms(prediction, gold):
    """Unchanged default (documented as lenient): existing runs score as before."""
    assert math_equivalent(prediction, gold).correct
    assert verify_math(f"\\boxed{{{prediction}}}", gold).correct


@pytest.mark.parametrize("prediction, gold", STRICT_REJECTS)
def test_strict_rejects_approximations_percent_conversion_and_equations(prediction, gold):
    reward = math_equivalent(prediction, gold, strict=True)
    assert (reward.score, reward.reason) == (0.0, "wrong")
    assert verify_math(f"\\boxed{{{prediction}}}", gold, strict=True).score == 0.0


@pytest.mark.parametrize("prediction, gold", GENUINE)
def test_strict_accepts_genuinely_equal_forms(prediction, gold):
    assert math_equivalent(prediction, gold, strict=True).correct
    assert math_equivalent(prediction, gold).correct  # and so does the default


def test_strict_differs_from_default_on_the_table_only_where_the_default_is_lenient():
    lenient = {
        ("\\boxed{2\\pi}", "6.283185307"),  # 2π approximated to 9 decimals
        ("\\boxed{x=3}", "3"),
    }  # an equation for a number
    differ = {(o, g) for o, g, _ in MATH_PAIRS if verify_math(o, g, strict=True).score != verify_math(o, g).score}
    assert differ == lenient


def test_math_strict_kind_through_the_pool_and_the_router():
    outputs = [f"so \\boxed{{{p}}}" for p, _ in HACKS + GENUINE[:3]]
    golds = [g for _, g in HACKS + GENUINE[:3]]
    with Verifier("math_strict", num_workers=1) as strict, Verifier("math", pool=strict.pool) as lax:
        assert [r.score for r in strict(outputs, golds)] == [0.0] * 3 + [1.0] * 3
        assert [r.score for r in lax(outputs, golds)] == [1.0] * 6
    with Verifier("math", strict=True, isolate=True, num_workers=1) as isolated:
        assert [r.score for r in isolated(outputs, golds)] == [0.0] * 3 + [1.0] * 3
    with RoutedVerifier(num_workers=1) as router:
        kinds = ["math_strict", "math"] * 3
        rewards = router(outputs[:6], golds[:6], kinds)
        assert [r.score for r in rewards] == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
        assert router.metrics()["reward/math_strict/wrong"] == 2
    with pytest.raises(ValueError, match="math_strict is strict"):
        Verifier("math_strict", strict=False)


def test_math_strict_is_a_data_verifier_kind():
    assert DataConfig(verifier="math_strict").verifier == "math_strict"
