"""Column arithmetic with index hints: every digit carries the label of its column.

The plain format of `upt_jax.data.synthetic` asks a small model to find column ``j``'s digits by
counting back a distance that depends on the content (the lengths of the lines written so far),
which a 2-layer character model learns late and unreliably: an audit of its base model found the
wrong-operand-digit error to be nearly its only one (add_3: 58 of 64 greedy decodes). Here, as
with the index hints of Zhou et al. (2023, "What Algorithms can Transformers Learn?"), each digit
of the question is preceded by a label naming its operand and column, and each step of the
demonstration writes the labels of the digits it reads, so every lookup is "the digit after the
one occurrence of this label in the question" (what an induction head does)::

    What is C4B7+N5M6?                       (47 + 56; B/M = units, C/N = tens)
    B7+M6+0=13, carry 1, so far 3
    C4+N5+1=10, carry 1, so far 03
    carry 1, so far 103
    \\boxed{103}

Labels: the first operand's columns (units first) are ``BCDEFGHIJK``, the second's
``MNOPRSTUVX`` (the capitals of the prompt templates' words, ``Question``, ``Answer``, ``Let's``
and ``What``, are never labels, so every label occurs once in a question). Multiplication by one
digit labels that digit ``M``; subtraction borrows as in the plain format.

Tiers (`HINT_TIERS`; the levels are where the shipped base model is expected to sit, see the
family's docs): ``hadd_2``, ``hadd_3`` (base, in the corpus); ``hmul_2x1`` (in the corpus, only
partly learned: ``rl``); ``hsub_3`` (a new operation on the corpus's labels, its one-column facts
in the corpus: ``sft``); ``hadd_4``, ``hmul_3x1``, ``hadd_6``, ``hmul_4x1`` (more columns than the
corpus, ``hadd_4``/``hadd_6`` with labels it never saw: held out, ``ood``).

Why ``hsub_3`` and not ``hadd_4`` is the SFT tier (docs/testbed.md, "Why the SFT arm collapsed"):
SFT on ``hadd_4``/``hmul_3x1`` demonstrations has to build new lookups (labels ``E``/``P`` the base
never saw, a third multiplicand column), and while it does, the shared lookup circuit blurs: the
solved tiers lose 15–50 points at T = 1 within 120 steps at any rate tried, their greedy answers
intact. Subtraction reuses the corpus's labels and facts and only adds the borrow's notation; SFT
teaches it (0 → 33 % at T = 1) with the solved tiers within 5 points.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from upt_jax.data import synthetic
from upt_jax.data.synthetic import arithmetic_facts, corpus_document
from upt_jax.data.task_registry import TaskFamily, TaskTier, register_task

__all__ = ["LABELS", "HINT_TIERS", "ARITH_HINT", "hinted", "make_hinted_question"]

LABELS = ("BCDEFGHIJK", "MNOPRSTUVX")
_SYMBOL = {"add": "+", "sub": "-", "mul": "*"}

# name: (op, digits of each operand, level)
HINT_TIERS = {
    "hadd_2": ("add", (2, 2), "base"),
    "hadd_3": ("add", (3, 3), "base"),
    "hmul_2x1": ("mul", (2, 1), "rl"),
    "hsub_3": ("sub", (3, 3), "sft"),
    "hadd_4": ("add", (4, 4), "ood"),
    "hmul_3x1": ("mul", (3, 1), "ood"),
    "hadd_6": ("add", (6, 6), "ood"),
    "hmul_4x1": ("mul", (4, 1), "ood"),
}
# the pre-training corpus's tiers, repeated to weight them (2-digit addition is learned first)
CORPUS_TIERS = ("hadd_2", "hadd_3", "hadd_3", "hmul_2x1", "hmul_2x1")
# the RL tier is intermediate by construction, not by where training happened to stop: 40 % of its
# corpus demonstrations make one arithmetic slip, so a converged base model samples a wrong product
# about that often at temperature 1 (its greedy answer stays right); a verifier's reward can remove
# the slips, and the rate reproduces across pre-training seeds because it is the data's
CORPUS_SLIPS = {"hmul_2x1": 0.4}


def hinted(x: int, operand: int) -> str:
    """``x`` with each digit preceded by its column's label: ``hinted(47, 0) == "C4B7"``."""
    s = str(x)
    labels = LABELS[operand]
    if len(s) > len(labels):
        raise ValueError(f"{x}: at most {len(labels)} digits take index hints")
    return "".join(labels[len(s) - 1 - i] + ch for i, ch in enumerate(s))


def _label(operand: int, column: int) -> str:
    return LABELS[operand][column]


def make_hinted_question(tier: str, seed: int, index: int) -> dict[str, Any]:
    """Item ``index`` of hinted ``tier`` for ``seed``: ``question``, ``answer``, ``demonstration``,
    ``operands`` (the demonstration ends in ``\\boxed{answer}``)."""
    op, digits, _ = HINT_TIERS[tier]
    rng = random.Random(f"upt_jax.hinted/{seed}/{tier}/{index}")
    a, b = (rng.randint(10 ** (d - 1), 10**d - 1) for d in digits)
    if op == "sub" and a < b:
        a, b = b, a
    lines: list[str] = []
    if op == "add":
        result = synthetic.column_add((a, b), lines, label=_label)
    elif op == "sub":
        result = synthetic.column_sub(a, b, lines, label=_label)
    else:
        result = synthetic._column_mul_digit(a, b, lines, label=_label)
    expected = {"add": a + b, "sub": a - b, "mul": a * b}[op]
    assert result == expected, (tier, a, b, result)
    lines.append(f"\\boxed{{{result}}}")
    return {
        "question": f"What is {hinted(a, 0)}{_SYMBOL[op]}{hinted(b, 1)}?",
        "answer": str(result),
        "demonstration": "\n".join(lines),
        "operands": (a, b),
    }


def slipped(item: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """``item`` (a ``mul`` question) with a demonstration that makes one arithmetic slip: one
    column's product written 1 off (column and sign drawn from ``rng``), carried through to a wrong
    boxed answer, as a careless solver writes it."""
    a, b = item["operands"]
    lines: list[str] = []
    result = synthetic._column_mul_digit(
        a, b, lines, label=_label, slip=(rng.randrange(len(str(a))), rng.choice((-1, 1)))
    )
    lines.append(f"\\boxed{{{result}}}")
    return {**item, "demonstration": "\n".join(lines)}


def _corpus_doc(rng: random.Random, tiers: Sequence[str], template: str = "zero", *, seed: int = 0, **options) -> str:
    """A pre-training document: a hinted question of ``tiers`` and its demonstration, or one-column
    facts (the plain format's: the per-column arithmetic is the same). A demonstration of a tier in
    `CORPUS_SLIPS` makes one arithmetic slip with that probability."""

    def make(tier, seed, index):
        item = make_hinted_question(tier, seed, index)
        slip = CORPUS_SLIPS.get(tier, 0.0)
        return slipped(item, rng) if slip and rng.random() < slip else item

    return corpus_document(rng, tiers, template, seed=seed, make=make, facts=arithmetic_facts, **options)


ARITH_HINT = register_task(
    TaskFamily(
        name="arith_hint",
        tiers=tuple(
            TaskTier(name, level, f"{op} of {'x'.join(map(str, d))} digits, index-hinted")
            for name, (op, d, level) in HINT_TIERS.items()
        ),
        make_record=make_hinted_question,
        verifier="integer",
        corpus_doc=_corpus_doc,
        description="Column arithmetic whose digits carry their column's label (index hints): every step "
        "reads its inputs by a content lookup.",
    ),
    replace=True,
)
