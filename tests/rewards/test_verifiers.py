"""The in-process verifiers: integer fast path, exact match, choice, format."""

import pytest

from upt_jax.rewards import Reward, Verifier, prepare_math, verify_choice, verify_exact, verify_format, verify_integer


@pytest.mark.parametrize(
    "output, gold, expected",
    [
        ("7+6+0=13, carry 1, so far 3\n\\boxed{13}", "13", Reward(1.0, "correct", "13")),
        ("\\boxed{013}", 13, Reward(1.0, "correct", "013")),
        ("\\boxed{14}", "13", Reward(0.0, "wrong", "14")),
        ("\\boxed{13.0}", "13", Reward(0.0, "wrong", "13.0")),
        ("the answer is 13", "13", Reward(0.0, "no_answer")),  # strict: needs a box
        ("\\boxed{" + "1" * 200 + "}", "13", Reward(0.0, "too_long")),
    ],
)
def test_verify_integer(output, gold, expected):
    assert verify_integer(output, gold) == expected


@pytest.mark.parametrize("gold", ["1/2", "5.0", "nan", "", 5.0, None])
def test_integer_verifier_scores_a_bad_reference_zero_and_counts_it(gold):
    """A malformed reference is a data error (the reader rejects it); if one gets here
    anyway it scores 0 as ``bad_reference`` instead of crashing the run mid-step."""
    reward = verify_integer("\\boxed{5}", gold)
    assert (reward.score, reward.reason) == (0.0, "bad_reference")
    assert repr(gold) in reward.detail
    verifier = Verifier("integer")
    rewards = verifier(["\\boxed{5}", "no box", "\\boxed{5}"], [gold, gold, "5"])
    assert [r.reason for r in rewards] == ["bad_reference", "bad_reference", "correct"]
    assert verifier.metrics() == {"reward/bad_reference": 2, "reward/correct": 1}


def test_prepare_math_decides_integers_in_process():
    assert prepare_math("\\boxed{12}", "12") == Reward(1.0, "correct", "12")
    assert prepare_math("\\boxed{1,200}", "1200") == Reward(1.0, "correct", "1,200")
    assert prepare_math("\\boxed{11}", "12") == Reward(0.0, "wrong", "11")
    assert prepare_math("nothing", "12") == Reward(0.0, "no_answer")
    assert prepare_math("\\boxed{\\frac{24}{2}}", "12") == ("\\frac{24}{2}", "12")  # → pool


@pytest.mark.parametrize(
    "output, gold, score",
    [
        ("\\boxed{Evelyn}", "evelyn", 1.0),
        ("The answer is  New   York.", "new york", 1.0),
        ("\\boxed{$x$}", "x", 1.0),
        ("\\boxed{Bob}", "Evelyn", 0.0),
    ],
)
def test_verify_exact(output, gold, score):
    assert verify_exact(output, gold).score == score


def test_verify_exact_whole_output():
    assert verify_exact("  Paris ", "paris", extract_answer=False).score == 1.0
    assert verify_exact("x" * 2000, "x", extract_answer=False).reason == "too_long"


def test_verify_choice_reasons():
    assert verify_choice("The answer is (C)", "(c)") == Reward(1.0, "correct", "C")
    assert verify_choice("no idea", "C") == Reward(0.0, "no_answer")
    assert verify_choice("Answer: E", "E", choices="ABCDE").score == 1.0


@pytest.mark.parametrize(
    "output, kwargs, score",
    [
        ("work... \\boxed{3}", {}, 1.0),
        ("work... 3", {}, 0.0),
        ("work... \\boxed{3", {}, 0.0),
        ("<think>hmm</think> so \\boxed{3}", {"require_think": True}, 1.0),
        ("<think>hmm so \\boxed{3}</think>", {"require_think": True}, 0.0),  # box inside think
        ("so \\boxed{3}", {"require_think": True}, 0.0),
        ("<think>a</think><think>b</think>\\boxed{3}", {"require_think": True}, 0.0),
        ("<think>a</think> done", {"require_think": True, "require_boxed": False}, 1.0),
    ],
)
def test_verify_format(output, kwargs, score):
    assert verify_format(output, **kwargs).score == score


def test_verifier_kinds_and_validation():
    with pytest.raises(ValueError, match="unknown verifier kind"):
        Verifier("regex")
    with pytest.raises(ValueError, match="2 outputs but 1 references"):
        Verifier("exact")(["a", "b"], ["a"])
    rewards = Verifier("integer")(["\\boxed{5}", "\\boxed{6}"], ["5", "5"])
    assert [r.score for r in rewards] == [1.0, 0.0]


def test_isolate_runs_in_process_kinds_in_the_pool():
    with Verifier("integer", isolate=True, num_workers=1) as verifier:
        rewards = verifier(["\\boxed{5}", "\\boxed{6}"], ["5", "5"])
        assert verifier.running_pool is not None
    assert [r.score for r in rewards] == [1.0, 0.0]


def test_routed_verifier_mixes_kinds_with_one_pool():
    from upt_jax.data import load_benchmark, synthetic
    from upt_jax.rewards import RoutedVerifier

    gpqa = load_benchmark("gpqa_diamond")[0]
    aime = load_benchmark("aime24")[0]
    syn = synthetic.make_question("add_3", 0, 0)
    records = [gpqa, aime, syn, aime]
    outputs = [f"The answer is ({gpqa['answer']})", "\\boxed{\\frac{408}{2}}", syn["demonstration"], "\\boxed{205}"]
    with RoutedVerifier(timeout_s=5.0, num_workers=1, options={"math": {"fallbacks": ()}}) as router:
        rewards = router(outputs, [r["answer"] for r in records], [r["verifier"] for r in records])
        assert [r.reason for r in rewards] == ["correct", "correct", "correct", "wrong"]
        assert router.metrics() == {
            "reward/choice/correct": 1,
            "reward/integer/correct": 1,
            "reward/math/correct": 1,
            "reward/math/wrong": 1,
        }
        assert router.verifier("math").running_pool is router.running_pool is not None
    with pytest.raises(ValueError, match="unknown verifier kinds"):
        RoutedVerifier(options={"regex": {}})
