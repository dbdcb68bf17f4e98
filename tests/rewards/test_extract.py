"""Answer extraction: balanced braces, fallbacks, choices, integers, bounded work."""

import time

import pytest

from upt_jax.rewards import extract


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{\\frac{1}{2}} and finally \\boxed{3}", "3"),
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces do not count
        ("\\boxed{a \\} b}", "a \\} b"),
        ("\\boxed{12} then a truncated \\boxed{13", "12"),  # last *complete* box
        ("\\fbox{7}", "7"),
        ("\\boxed 7 done", "7"),
        ("\\boxed{ 5 }", "5"),
        ("no box here", None),
        ("\\boxed{", None),
    ],
)
def test_last_boxed(text, expected):
    assert extract.last_boxed(text) == expected


def test_last_boxed_length_bound():
    assert extract.last_boxed("\\boxed{" + "1" * 50 + "}", max_chars=50) == "1" * 50
    with pytest.raises(extract.TooLong):
        extract.last_boxed("\\boxed{" + "1" * 51 + "}", max_chars=50)


@pytest.mark.parametrize(
    "text, fallbacks, expected",
    [
        ("\\boxed{$\\frac{3}{4}$}", extract.FALLBACKS, ("\\frac{3}{4}", "boxed")),
        ("The answer is $\\frac{3}{4}$.", extract.FALLBACKS, ("\\frac{3}{4}", "answer_is")),
        ("Final answer: 12\nThanks", extract.FALLBACKS, ("12", "answer_is")),
        ("**Answer:** 5", extract.FALLBACKS, ("5", "answer_is")),
        ("we get 1,234 apples.", extract.FALLBACKS, ("1234", "last_number")),
        ("we get -0.5 then", extract.FALLBACKS, ("-0.5", "last_number")),
        ("The answer is $\\frac{3}{4}$.", (), (None, "none")),
        ("we get 12", ("answer_is",), (None, "none")),
        ("nothing", extract.FALLBACKS, (None, "none")),
        ("\\boxed{" + "9" * 2000 + "}", extract.FALLBACKS, (None, "too_long")),
    ],
)
def test_extract_answer(text, fallbacks, expected):
    assert extract.extract_answer(text, fallbacks) == expected


def test_unknown_fallback():
    with pytest.raises(ValueError, match="unknown fallback"):
        extract.extract_answer("x", ("first_number",))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is (C).", "C"),
        ("Answer: B", "B"),
        ("**Answer:** D", "D"),
        ("The correct option is **A**", "A"),
        ("Therefore \\boxed{D}", "D"),
        ("\\boxed{\\text{(B)}}", "B"),
        ("\\boxed{b}", "B"),
        ("reasoning...\n(B)", "B"),
        ("reasoning...\nC.", "C"),
        ("The answer is a planet", None),  # lower-case words are not choices
        ("The answer is E", None),  # not one of ABCD
        ("\\boxed{42}", None),
        ("", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract.extract_choice(text) == expected


@pytest.mark.parametrize(
    "s, expected",
    [
        ("42", 42),
        (" -0042 ", -42),
        ("+7", 7),
        ("1,234", 1234),
        ("1{,}000", 1000),
        ("$12$", 12),
        ("12.", 12),
        ("1,2", None),
        ("1.5", None),
        ("x", None),
        (None, None),
        ("9" * 100, int("9" * 100)),
        ("9" * 101, None),
    ],
)
def test_parse_integer(s, expected):
    assert extract.parse_integer(s) == expected


@pytest.mark.parametrize(
    "text",
    [
        "\\boxed{" * 300_000,  # thousands of unclosed boxes
        "{" * 1_000_000,
        "answer " * 200_000,
        "answer" + " " * 1_000_000 + "is",
        "1," * 500_000,
        "$" * 1_000_000,
    ],
)
def test_extraction_is_fast_on_adversarial_text(text):
    # a hang guard (a backtracking regex on a million characters takes minutes), with room for a
    # loaded shared host: not a speed target
    start = time.perf_counter()
    extract.extract_answer(text)
    extract.extract_choice(text)
    assert time.perf_counter() - start < 10.0
