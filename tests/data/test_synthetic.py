"""Synthetic arithmetic tasks: demonstrations are correct line by line and under the
verifier for every tier; generation is deterministic, random-access and fast."""

import json
import re
import time

import pytest

from upt_jax.data import readers, synthetic
from upt_jax.rewards import Verifier, verify_integer

N = 200
_ADD = re.compile(r"(\d(?:\+\d)+)\+(\d)=(\d+), carry (\d), so far (\d+)")
_MUL = re.compile(r"(\d)\*(\d)\+(\d)=(\d+), carry (\d), so far (\d+)")
_SUB_OK = re.compile(r"(\d)-(\d)-([01])=(\d), borrow 0, so far (\d+)")
_SUB_BORROW = re.compile(r"(\d)-(\d)-([01])<0, 1(\d)-(\d)-([01])=(\d), borrow 1, so far (\d+)")
_CARRY = re.compile(r"carry (\d), so far (\d+)")
_HEADER = re.compile(r"(\d+)\*(\d):|shift (\d+), (\d+)|(\d+(?:\+\d+)+):")
_QUESTION = re.compile(r"What is (\d+(?:[-+*]\d+)+)\?")


def _operands(question):
    expr = _QUESTION.fullmatch(question).group(1)
    op = next(c for c in "+-*" if c in expr)
    return op, [int(x) for x in expr.split(op)]


def check_demonstration(item):
    """Independent check: every line's arithmetic is right, the running digits are
    consistent, and the box holds the true result of the question."""
    op, xs = _operands(item["question"])
    truth = {"+": sum(xs), "-": xs[0] - xs[-1], "*": xs[0] * xs[-1]}[op]
    assert item["answer"] == str(truth)
    lines = item["demonstration"].split("\n")
    assert lines[-1] == f"\\boxed{{{truth}}}"
    so_far, columns = "", 0
    for line in lines[:-1]:
        if m := _ADD.fullmatch(line):
            digits, carry_in, total, carry, new = m.groups()
            assert sum(map(int, digits.split("+"))) + int(carry_in) == int(total)
            assert int(carry) == int(total) // 10 and new == str(int(total) % 10) + so_far
        elif m := _MUL.fullmatch(line):
            a, b, carry_in, total, carry, new = m.groups()
            assert int(a) * int(b) + int(carry_in) == int(total)
            assert int(carry) == int(total) // 10 and new == str(int(total) % 10) + so_far
        elif m := _SUB_OK.fullmatch(line):
            t, s, b, v, new = m.groups()
            assert int(t) - int(s) - int(b) == int(v) >= 0 and new == v + so_far
        elif m := _SUB_BORROW.fullmatch(line):
            t, s, b, t2, s2, b2, v, new = m.groups()
            assert (t, s, b) == (t2, s2, b2) and int(t) - int(s) - int(b) < 0
            assert 10 + int(t) - int(s) - int(b) == int(v) and new == v + so_far
        elif m := _CARRY.fullmatch(line):
            carry, new = m.groups()
            assert new == carry + so_far
        elif m := _HEADER.fullmatch(line):
            so_far = ""  # a new partial product or the final sum starts
            if m.group(3) is not None:
                assert m.group(4).endswith("0" * int(m.group(3)))
            continue
        elif line.startswith("drop leading zeros, "):
            assert line == f"drop leading zeros, {int(so_far)}"
            continue
        else:
            raise AssertionError(f"unexpected line {line!r}")
        so_far = new
        columns += 1
    assert int(so_far) == truth
    return columns


@pytest.mark.parametrize("tier", list(synthetic.TIERS))
def test_demonstrations_are_correct_for_every_tier(tier):
    spec = synthetic.TIERS[tier]
    items = synthetic.generate(tier, N, seed=0)
    for item in items:
        op, xs = _operands(item["question"])
        assert op == {"add": "+", "sub": "-", "mul": "*"}[spec.op]
        assert tuple(len(str(x)) for x in xs) == spec.digits
        assert item["tier"] == tier and item["level"] == spec.level
        columns = check_demonstration(item)
        assert columns >= max(spec.digits)
    # ... and under the reward verifiers: the exact-integer fast path and the math one.
    rewards = [verify_integer(x["demonstration"], x["answer"]) for x in items]
    assert all(r.reason == "correct" for r in rewards)
    wrong = [verify_integer(x["demonstration"], str(int(x["answer"]) + 1)) for x in items]
    assert not any(r.score for r in wrong)
    math_rewards = Verifier("math")([x["demonstration"] for x in items], [x["answer"] for x in items])
    assert all(r.reason == "correct" for r in math_rewards)


def test_a_sample_through_the_math_verify_pool():
    items = [synthetic.make_question(t, 1, 0) for t in synthetic.TIERS]
    with Verifier("math", isolate=True, num_workers=2) as verifier:
        rewards = verifier(
            [x["demonstration"] for x in items], [f"\\frac{{{2 * int(x['answer'])}}}{{2}}" for x in items]
        )
    assert [r.reason for r in rewards] == ["correct"] * len(items)


def test_example_demonstration():
    lines = []
    assert synthetic.column_add([347, 586], lines) == 933
    assert lines == ["7+6+0=13, carry 1, so far 3", "4+8+1=13, carry 1, so far 33", "3+5+1=9, carry 0, so far 933"]
    lines = []
    assert synthetic.column_sub(523, 518, lines) == 5
    assert lines[-1] == "drop leading zeros, 5"


@pytest.mark.parametrize(
    "old, new",
    [
        ("4+8+1=13", "4+8+1=14"),  # wrong sum
        ("carry 1, so far 33", "carry 0, so far 33"),  # wrong carry
        ("so far 933", "so far 939"),  # running digits inconsistent
        ("\\boxed{933}", "\\boxed{934}"),  # wrong final answer
    ],
)
def test_the_checker_catches_mistakes(old, new):
    item = {
        "question": "What is 347+586?",
        "answer": "933",
        "demonstration": "7+6+0=13, carry 1, so far 3\n4+8+1=13, carry 1, so far 33\n"
        "3+5+1=9, carry 0, so far 933\n\\boxed{933}",
    }
    assert check_demonstration(item) == 3
    broken = dict(item, demonstration=item["demonstration"].replace(old, new))
    assert broken != item
    with pytest.raises(AssertionError):
        check_demonstration(broken)


def test_tier_structure():
    assert synthetic.EASY_TIERS == ("add_2", "add_3", "mul_2x1")
    assert synthetic.HARD_TIERS == ("add_5", "add_6", "mul_2x2")
    assert set(synthetic.TRAIN_TIERS).isdisjoint(synthetic.OOD_TIERS)
    assert len(synthetic.TRAIN_TIERS) + len(synthetic.OOD_TIERS) == len(synthetic.TIERS)
    assert {synthetic.TIERS[t].op for t in synthetic.TRAIN_TIERS} == {"add", "mul"}
    assert "sub" in {synthetic.TIERS[t].op for t in synthetic.OOD_TIERS}  # a new operation
    max_train = max(max(synthetic.TIERS[t].digits) for t in synthetic.TRAIN_TIERS)
    assert max(synthetic.TIERS["add_8"].digits) > max_train  # more digits


def test_generation_is_deterministic_and_random_access():
    a = synthetic.generate("add_4", 50, seed=3)
    assert a == synthetic.generate("add_4", 50, seed=3)
    assert a[:20] == synthetic.generate("add_4", 20, seed=3)  # prefix property
    assert a[20:] == synthetic.generate("add_4", 30, seed=3, start=20)
    b = synthetic.generate("add_4", 50, seed=4)
    assert [x["question"] for x in a] != [x["question"] for x in b]
    assert len({x["id"] for x in a + b}) == 100
    src = synthetic.SyntheticSource(["add_2", "mul_2x2"], 10, seed=3)
    assert len(src) == 20 and src[5] == synthetic.make_question("mul_2x2", 3, 2)
    assert src[-1] == src[19]
    with pytest.raises(IndexError):
        src[20]
    with pytest.raises(KeyError, match="unknown tier"):
        synthetic.SyntheticSource(["add_99"], 1)
    # pinned values: a change of generator shows up here
    first = synthetic.make_question("add_3", 0, 0)
    assert (first["question"], first["answer"]) == ("What is 617+321?", "938")


def test_generation_of_ten_thousand_records_does_not_stall():
    """A guard against a generator that stalls (a rejection loop that never ends, quadratic work),
    not a speed target: about 1 s on a quiet 2-core host, and it failed at 2.2 s under a loaded one
    when it asserted 2 s. Speed is a benchmark's business."""
    start = time.perf_counter()
    records = synthetic.synthetic_records(synthetic.TRAIN_TIERS, 1250, seed=0)
    assert len(records) == 10_000 and len({r["id"] for r in records}) == 10_000
    assert time.perf_counter() - start < 60.0


def test_synthetic_source_in_a_resumable_grain_pipeline():
    src = synthetic.SyntheticSource(synthetic.TRAIN_TIERS, 20, seed=0)
    ds = readers.make_dataset(src, seed=1, num_epochs=None, batch_size=4)
    it = iter(ds)
    next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [[x["id"] for x in next(it)] for _ in range(3)]
    it2 = iter(readers.make_dataset(src, seed=1, num_epochs=None, batch_size=4))
    it2.set_state(state)
    assert [[x["id"] for x in next(it2)] for _ in range(3)] == expected


_FACT = re.compile(r"(\d)([-+*])(\d)([-+])(\d)=(\d+)|(\d)-(\d)-([01])<0, 1(\d)-(\d)-([01])=(\d)")


def test_pretraining_corpus():
    docs = synthetic.pretraining_corpus(2000, seed=0)
    assert docs == synthetic.pretraining_corpus(2000, seed=0)
    assert docs != synthetic.pretraining_corpus(2000, seed=1)
    demos = [d for d in docs if d.startswith("Question:\n")]
    assert 0.7 < len(demos) / len(docs) < 0.8
    tiers_seen = set()
    for doc in demos:
        question = doc.split("\n")[1]
        op, xs = _operands(question)
        digits = tuple(len(str(x)) for x in xs)
        tier = {("+", (2, 2)): "add_2", ("+", (3, 3)): "add_3", ("*", (2, 1)): "mul_2x1"}[
            (op, digits)
        ]  # only easy tiers: KeyError otherwise
        tiers_seen.add(tier)
        prompt, demo = doc.split("Let's think step by step.\n")
        check_demonstration({"question": question, "demonstration": demo, "answer": demo.rsplit("{", 1)[1][:-1]})
    assert tiers_seen == set(synthetic.EASY_TIERS)
    for doc in docs:
        if doc in demos:
            continue
        for fact in doc.split("\n"):
            m = _FACT.fullmatch(fact)
            assert m, fact
            if m.group(1):
                a, op, b, op2, c, r = m.groups()[:6]
                value = int(a) * int(b) if op == "*" else (int(a) + int(b) if op == "+" else int(a) - int(b))
                value = value + int(c) if op2 == "+" else value - int(c)
                assert value == int(r)
            else:
                a, b, c, _, _, _, r = m.groups()[6:]
                assert int(a) - int(b) - int(c) < 0 and 10 + int(a) - int(b) - int(c) == int(r)
    # The post-training questions of the evaluation seed are not all in the corpus.
    corpus_questions = {d.split("\n")[1] for d in demos}
    hard = synthetic.generate("add_5", 100, seed=0)
    assert not corpus_questions & {x["question"] for x in hard}


def test_pretraining_corpus_with_other_templates():
    from upt_jax.data.tokenizer import char_tokenizer

    plain = synthetic.pretraining_corpus(20, seed=0, template="plain", demo_fraction=1.0)
    assert all(d.startswith("What is ") for d in plain)
    chat = synthetic.pretraining_corpus(5, seed=0, template="chat", demo_fraction=1.0, tokenizer=char_tokenizer())
    assert all(d.startswith("<bos><|user|>What is ") and "<|assistant|>" in d for d in chat)
