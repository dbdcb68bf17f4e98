"""Built-in synthetic verifiable tasks: multi-digit arithmetic with written-out steps.

The embedded default task lets the whole project run on a laptop CPU. A question is an
addition, subtraction or multiplication of random n-digit numbers; its demonstration is
the school method, one column per line, from the right, keeping a running string of the
answer digits ("so far") so that every step only needs the previous line::

  What is 347+586?                       (question)
  7+6+0=13, carry 1, so far 3            (demonstration)
  4+8+1=13, carry 1, so far 33
  3+5+1=9, carry 0, so far 933
  \\boxed{933}

Multiplication by one digit is the same with ``a*d+carry``; by several digits it writes
each partial product, shifts it and adds the partials column by column. Subtraction
borrows (``4-8-1<0, 14-8-1=5, borrow 1``). Every demonstration ends in
``\\boxed{answer}``, which the integer verifier of `upt_jax.rewards` checks exactly.

Tiers (`TIERS`):

| level  | tiers                         | role                                             |
|--------|-------------------------------|--------------------------------------------------|
| easy   | add_2, add_3, mul_2x1         | in the pre-training corpus: the base model solves them |
| medium | add_4, mul_3x1                | one step beyond the corpus (length generalisation)     |
| hard   | add_5, add_6, mul_2x2         | far beyond it: the base model fails, HPT's SFT branch must teach them |
| ood    | add_8, add3_3, sub_3, mul_4x1 | held out of post-training: more digits, more operands, a new operation |

The pre-training corpus (`pretraining_corpus`) holds only easy-tier demonstrations and
single-step arithmetic facts in the same notation (``7+6+1=14``, ``7*6+4=46``,
``4-8-1<0, 14-8-1=5``), so a tiny model learns the notation and the per-column facts but
has seen the full procedure only for short numbers.

Generation is seeded and random-access: item ``i`` of a tier depends only on
``(seed, tier, i)``, so `SyntheticSource` can back a grain ``MapDataset`` and a prefix of
a larger draw equals a smaller draw.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Sequence

from upt_jax.data import templates as templates_lib
from upt_jax.data.task_registry import TaskFamily, TaskTier, TierSource, register_task

__all__ = [
    "Tier",
    "TIERS",
    "EASY_TIERS",
    "MEDIUM_TIERS",
    "HARD_TIERS",
    "TRAIN_TIERS",
    "OOD_TIERS",
    "make_question",
    "generate",
    "synthetic_records",
    "SyntheticSource",
    "arithmetic_facts",
    "pretraining_corpus",
]


@dataclasses.dataclass(frozen=True)
class Tier:
    """A difficulty tier.

    Attributes:
      name: e.g. ``"add_3"``.
      op: ``"add"``, ``"sub"`` or ``"mul"``.
      digits: the number of digits of each operand (the first digit is never 0).
      level: ``"easy"``, ``"medium"``, ``"hard"`` or ``"ood"``.
    """

    name: str
    op: str
    digits: tuple[int, ...]
    level: str


TIERS = {
    t.name: t
    for t in (
        Tier("add_2", "add", (2, 2), "easy"),
        Tier("add_3", "add", (3, 3), "easy"),
        Tier("mul_2x1", "mul", (2, 1), "easy"),
        Tier("add_4", "add", (4, 4), "medium"),
        Tier("mul_3x1", "mul", (3, 1), "medium"),
        Tier("add_5", "add", (5, 5), "hard"),
        Tier("add_6", "add", (6, 6), "hard"),
        Tier("mul_2x2", "mul", (2, 2), "hard"),
        Tier("add_8", "add", (8, 8), "ood"),
        Tier("add3_3", "add", (3, 3, 3), "ood"),
        Tier("sub_3", "sub", (3, 3), "ood"),
        Tier("mul_4x1", "mul", (4, 1), "ood"),
    )
}
EASY_TIERS = tuple(n for n, t in TIERS.items() if t.level == "easy")
MEDIUM_TIERS = tuple(n for n, t in TIERS.items() if t.level == "medium")
HARD_TIERS = tuple(n for n, t in TIERS.items() if t.level == "hard")
TRAIN_TIERS = EASY_TIERS + MEDIUM_TIERS + HARD_TIERS
OOD_TIERS = tuple(n for n, t in TIERS.items() if t.level == "ood")
_SYMBOL = {"add": "+", "sub": "-", "mul": "*"}


# ----------------------------------------------------------------------------- procedures


def _no_label(operand: int, column: int) -> str:
    return ""


def column_add(operands: Sequence[int], lines: list[str], label=_no_label) -> int:
    """Column addition of any number of operands, right to left. ``label(operand, column)`` is
    written before each digit a step reads (column 0 = units; `upt_jax.data.hinted`'s index hints)."""
    strs = [str(x) for x in operands]
    width = max(len(s) for s in strs)
    padded = [s.rjust(width, "0") for s in strs]
    carry, so_far = 0, ""
    for j in range(width - 1, -1, -1):
        digits = [p[j] for p in padded]
        total = sum(int(d) for d in digits) + carry
        so_far = str(total % 10) + so_far
        read = "+".join(label(k, width - 1 - j) + d for k, d in enumerate(digits))
        lines.append(f"{read}+{carry}={total}, carry {total // 10}, so far {so_far}")
        carry = total // 10
    if carry:
        so_far = str(carry) + so_far
        lines.append(f"carry {carry}, so far {so_far}")
    return int(so_far)


def _column_mul_digit(a: int, d: int, lines: list[str], label=_no_label, slip: tuple[int, int] | None = None) -> int:
    """``a * d`` for a single digit ``d`` (``label`` as in `column_add`; ``d`` is operand 1's
    column 0). ``slip=(j, δ)``: column ``j``'s product is written ``δ`` off (an arithmetic slip,
    carried through consistently, so the result is wrong)."""
    carry, so_far = 0, ""
    for j, ch in enumerate(reversed(str(a))):
        p = int(ch) * d + carry
        if slip is not None and j == slip[0]:
            p = p + slip[1] if p + slip[1] >= 0 else p - slip[1]
        so_far = str(p % 10) + so_far
        lines.append(f"{label(0, j)}{ch}*{label(1, 0)}{d}+{carry}={p}, carry {p // 10}, so far {so_far}")
        carry = p // 10
    if carry:
        so_far = str(carry) + so_far
        lines.append(f"carry {carry}, so far {so_far}")
    return int(so_far)


def _long_mul(a: int, b: int, lines: list[str]) -> int:
    if b < 10:
        return _column_mul_digit(a, b, lines)
    shifted = []
    for k, ch in enumerate(reversed(str(b))):
        lines.append(f"{a}*{ch}:")
        p = _column_mul_digit(a, int(ch), lines)
        lines.append(f"shift {k}, {p * 10**k}")
        shifted.append(p * 10**k)
    lines.append("+".join(str(s) for s in shifted) + ":")
    return column_add(shifted, lines)


def column_sub(a: int, b: int, lines: list[str], label=_no_label) -> int:
    """``a - b`` for ``a >= b``, borrowing (``label`` as in `column_add`)."""
    sa = str(a)
    sb = str(b).rjust(len(sa), "0")
    borrow, so_far = 0, ""
    for j in range(len(sa) - 1, -1, -1):
        t, s = int(sa[j]), int(sb[j])
        v = t - s - borrow
        col = len(sa) - 1 - j
        head = f"{label(0, col)}{t}-{label(1, col)}{s}-{borrow}"
        if v >= 0:
            so_far = str(v) + so_far
            lines.append(f"{head}={v}, borrow 0, so far {so_far}")
            borrow = 0
        else:
            so_far = str(v + 10) + so_far
            lines.append(f"{head}<0, 1{t}-{s}-{borrow}={v + 10}, borrow 1, so far {so_far}")
            borrow = 1
    if len(so_far) > 1 and so_far[0] == "0":
        lines.append(f"drop leading zeros, {int(so_far)}")
    return int(so_far)


def _random_number(rng: random.Random, digits: int) -> int:
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def make_question(tier: str, seed: int, index: int) -> dict[str, Any]:
    """Item ``index`` of ``tier`` for ``seed``: a record with its demonstration.

    Returns:
      ``{"id", "question", "answer", "demonstration", "tier", "level", "task": "arith",
      "operands", "verifier": "integer", "chosen": None, "rejected": None, "location"}``;
      ``answer`` is the decimal string.
    """
    spec = TIERS[tier]
    rng = random.Random(f"upt_jax.synthetic/{seed}/{tier}/{index}")
    operands = [_random_number(rng, d) for d in spec.digits]
    if spec.op == "sub" and operands[0] < operands[1]:
        operands[0], operands[1] = operands[1], operands[0]
    lines: list[str] = []
    if spec.op == "add":
        result = column_add(operands, lines)
        expected = sum(operands)
    elif spec.op == "sub":
        result = column_sub(operands[0], operands[1], lines)
        expected = operands[0] - operands[1]
    else:
        result = _long_mul(operands[0], operands[1], lines)
        expected = operands[0] * operands[1]
    assert result == expected, (tier, operands, result)
    lines.append(f"\\boxed{{{result}}}")
    ident = f"{tier}/{seed}/{index}"
    return {
        "id": ident,
        "question": f"What is {_SYMBOL[spec.op].join(str(x) for x in operands)}?",
        "answer": str(result),
        "demonstration": "\n".join(lines),
        "chosen": None,
        "rejected": None,
        "location": f"synthetic:{ident}",
        "tier": tier,
        "level": spec.level,
        "task": "arith",
        "verifier": "integer",
        "operands": tuple(operands),
    }


def generate(tier: str, n: int, seed: int = 0, start: int = 0) -> list[dict[str, Any]]:
    """Items ``start .. start+n-1`` of ``tier`` (see `make_question`)."""
    if tier not in TIERS:
        raise KeyError(f"unknown tier {tier!r}; tiers are {tuple(TIERS)}")
    return [make_question(tier, seed, i) for i in range(start, start + n)]


class SyntheticSource(TierSource):
    """`upt_jax.data.tasks.TierSource` over tiers of this family only: item ``i`` is drawn from
    tier ``tiers[i % k]`` (item ``i // k`` when each tier is named once)."""

    def __init__(self, tiers: Sequence[str], n_per_tier: int, seed: int = 0):
        for t in tiers:
            if t not in TIERS:
                raise KeyError(f"unknown tier {t!r}; tiers are {tuple(TIERS)}")
        super().__init__(tiers, n_per_tier, seed)


def synthetic_records(
    tiers: Sequence[str] = TRAIN_TIERS, n_per_tier: int = 1000, seed: int = 0
) -> list[dict[str, Any]]:
    """All items of `SyntheticSource` as a list."""
    src = SyntheticSource(tiers, n_per_tier, seed)
    return [src[i] for i in range(len(src))]


# ----------------------------------------------------------------------------- pre-training


def arithmetic_facts(rng: random.Random, n: int) -> list[str]:
    """``n`` single-column facts in the demonstrations' notation."""
    out = []
    for _ in range(n):
        kind = rng.randrange(3)
        a, b = rng.randrange(10), rng.randrange(10)
        if kind == 0:
            c = rng.randrange(2)
            out.append(f"{a}+{b}+{c}={a + b + c}")
        elif kind == 1:
            c = rng.randrange(9)
            out.append(f"{a}*{b}+{c}={a * b + c}")
        else:
            c = rng.randrange(2)
            v = a - b - c
            out.append(f"{a}-{b}-{c}={v}" if v >= 0 else f"{a}-{b}-{c}<0, 1{a}-{b}-{c}={v + 10}")
    return out


def pretraining_corpus(
    n_docs: int,
    seed: int = 0,
    *,
    tiers: Sequence[str] = EASY_TIERS,
    demo_fraction: float = 0.75,
    facts_per_doc: int = 12,
    template: str = "zero",
    tokenizer=None,
) -> list[str]:
    """Documents for pre-training the tiny base model.

    A document is either an easy-tier question rendered with ``template`` followed by
    its demonstration (probability ``demo_fraction``), or ``facts_per_doc`` arithmetic
    facts, one per line. Questions are drawn from a stream separate from `generate`'s.

    Returns:
      ``n_docs`` strings (no BOS/EOS: the tokenizing code adds them).
    """
    return [
        corpus_document(
            random.Random(f"upt_jax.pretrain/{seed}/{i}"),
            tiers,
            template,
            seed=seed,
            demo_fraction=demo_fraction,
            facts_per_doc=facts_per_doc,
            tokenizer=tokenizer,
        )
        for i in range(n_docs)
    ]


def corpus_document(
    rng: random.Random,
    tiers: Sequence[str],
    template: str = "zero",
    *,
    seed: int = 0,
    demo_fraction: float = 0.75,
    facts_per_doc: int = 12,
    tokenizer=None,
    make=make_question,
    facts=arithmetic_facts,
) -> str:
    """One document of `pretraining_corpus` drawn from ``rng``: a question of ``tiers`` (drawn with
    ``make(tier, seed=-1 - seed, index)``, a stream apart from `generate`'s) rendered with
    ``template`` and its demonstration (probability ``demo_fraction``), else ``facts_per_doc``
    one-column facts (``facts(rng, n)``), one per line."""
    if rng.random() < demo_fraction:
        tier = tiers[rng.randrange(len(tiers))]
        item = make(tier, seed=-1 - seed, index=rng.randrange(1 << 30))
        prompt = templates_lib.render_prompt(item["question"], template, tokenizer=tokenizer)
        return templates_lib.join(prompt, item["demonstration"], template)
    return "\n".join(facts(rng, facts_per_doc))


def _make_record(tier: str, seed: int, index: int) -> dict[str, Any]:
    return make_question(tier, seed, index)


# the family as a `upt_jax.data.tasks.TaskFamily` (its corpus draws the same documents as
# `pretraining_corpus`)
ARITH = register_task(
    TaskFamily(
        name="arith",
        tiers=tuple(
            TaskTier(t.name, t.level, f"{t.op} of {'x'.join(map(str, t.digits))} digits") for t in TIERS.values()
        ),
        make_record=_make_record,
        verifier="integer",
        corpus_doc=corpus_document,
        corpus_stream="upt_jax.pretrain",
        description="Column arithmetic in plain notation (the historical built-in task: a digit's column "
        "is found by counting back a content-dependent distance).",
    ),
    replace=True,
)
