"""Countdown with labelled values: reach a target from given numbers with ``+ − ×``, each number
used at most once; the demonstration is a short depth-first search trace (in the spirit of
Gandhi et al. 2024, "Stream of Search", made short enough for a 2-layer character model).

Every value carries a one-letter label, as the index hints of `upt_jax.data.hinted` do: the
target is ``T``, the given numbers are ``B C D E`` (in the order listed) and every result a try
writes gets the next unused label of `RESULT_LABELS`. A try reads two labelled values and writes
its result under a new label, so every value it reads is "the token after an earlier occurrence
of this label" (an induction-head lookup; a label always stands for one value), and every fact it
needs is one operation on a number up to 99 and a one-digit one::

    Make T22 from B3 C5 D7 with +*.          (reach 22 from 3, 5, 7 with + and ×)
    B3+C5=F8: F8+D7=G15, F8*D7=H56           keep 3+5 = 8 (below 22); 8+7 and 8×7 miss
    B3*C5=I15: I15+D7=J22                    keep 3×5 = 15; 15+7 is the target: stop
    \\boxed{(3*5)+7}

The search (`search`) is depth-first over the values still unused: pairs in label order, the
question's operations in the order listed, the new value first in the new state. A line
(`render`) is a path of kept tries, then the tries that end on it: the leaves (no value left to
combine with) after ``:``, or one try that is cut off (``over``) or reaches the target, so the box
copies the expression from its own line (``(3*5)+7`` from ``B3*C5=I15: ..., I15+D7=J22``). Its
rules keep the numbers small and the facts few: ``−`` writes the larger value first and is skipped
when the result would be 0; ``×`` only multiplies one-digit values (the times table); with only
``+`` and ``×`` (monotone on positive numbers) a value above the target is a dead end, written
``over`` and not expanded. Problems are drawn from a random expression over two or more of the
given numbers (the target is its value, 1–99, never one of the numbers) and drawn again until
the search takes at most `MAX_STEPS` tries and the demonstration `MAX_CHARS` characters (it fits
a 192-token rollout). The boxed answer is any expression that the ``countdown`` verifier
(`upt_jax.rewards.countdown`) accepts: the given numbers at most once each, the listed
operations, the target's value. The record's ``answer`` is the reference it checks against,
e.g. ``"22 from 3 5 7 with +*"``.

Tiers (`COUNTDOWN_TIERS`) and why each should sit at its level (to be measured, as
``arith_hint``'s were, once a base model is pre-trained on `CORPUS_TIERS`):

* ``cd_2`` (base): two numbers, ``+-*``: one level of search, at most three steps; teaches the
  step notation for all three operations (``−`` larger first) and the stop.
* ``cd_3p`` (base): three numbers, ``+`` only: the two-level search, the ``over`` cut-off and the
  box of a nested expression, without slips.
* ``cd_3`` (rl): three numbers, ``+*``. In the corpus, but intermediate by construction, as
  ``hinted.CORPUS_SLIPS`` makes ``hmul_2x1``: every ``cd_3`` problem is drawn so that its trace
  passes exactly one near miss (a step whose value is the target ± 1) before the solution, and
  40 % of its corpus demonstrations (`CORPUS_SLIPS`) write the target there instead (a careless
  "that's it") and box that expression, which the verifier rejects. A converged model writes the
  true value greedily but samples the slip about 40 % of the time at T = 1 (pass rate ~60 %); the
  rate is the data's, not the stopping point's, and a verifier's reward can remove it.
* ``cd_3m`` (sft): three numbers, ``+-*``, drawn so that no expression with ``+`` and ``×`` alone
  reaches the target (``−`` is needed). Never in the corpus; it reuses the corpus's labels, its
  step notation (``−`` steps are in ``cd_2``), its facts (`countdown_facts`) and its two-level
  search, but the base has only seen three-number searches with monotone operations, where a
  value above the target is cut off: the ``cd_3m`` search must expand those (``(7*8)-9``) and try
  ``−`` at the second level. Expected pass@64 = 0 at base; its demonstrations can teach it.
* ``cd_3r`` (ood): ``cd_3``'s numbers and operations listed the other way, ``*+``, so the search
  tries ``×`` first: a trace order no corpus document has, at the trained depth. Held out of
  post-training; its base rate reproduces over pre-training seeds (docs/testbed.md).
* ``cd_4`` (ext): four numbers, ``+*``: a third search level and a label (``E``) the corpus never
  has. ``cd_4m`` (ext): four numbers, ``+-*``. Held out of post-training; how far a seed's search
  extends to a level it never saw is the seed's (``cd_4m`` greedy 10–20 % over three seeds on
  1,024 questions), so a base's record reports these tiers and does not hold a rebuild to them.

Generation is seeded and random-access: item ``i`` depends only on ``(seed, tier, i)``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import random
from typing import Any, Sequence

from upt_jax.data import task_registry as tasks
from upt_jax.data.synthetic import corpus_document

__all__ = [
    "COUNTDOWN_TIERS",
    "CORPUS_TIERS",
    "CORPUS_SLIPS",
    "COUNTDOWN",
    "GIVEN_LABELS",
    "RESULT_LABELS",
    "TARGET_LABEL",
    "MAX_STEPS",
    "MAX_CHARS",
    "Value",
    "Step",
    "search",
    "render",
    "combine",
    "reachable",
    "make_countdown_question",
    "slipped",
    "countdown_facts",
    "reference",
]

TARGET_LABEL = "T"
GIVEN_LABELS = "BCDE"
# the capitals of the prompt templates' words (Question, Answer, Let's), of the question's own
# word ("Make") and the target's label are never labels, so every label occurs once in a prompt
RESULT_LABELS = "FGHIJKNOPRSUVXYZ"
MAX_STEPS = 12
MAX_CHARS = 160
MAX_TARGET = 99
OPS = "+-*"

# name: (how many numbers, the operations allowed, in the order the search tries them, level, what
# else a problem must satisfy: "near_miss" (its trace passes exactly one step at the target ± 1
# before the solution: where the RL tier's corpus slips), "needs_minus" (no expression with + and ×
# alone reaches the target))
COUNTDOWN_TIERS = {
    "cd_2": (2, "+-*", "base", ""),
    "cd_3p": (3, "+", "base", ""),
    "cd_3": (3, "+*", "rl", "near_miss"),
    "cd_3m": (3, "+-*", "sft", "needs_minus"),
    "cd_3r": (3, "*+", "ood", ""),
    "cd_4": (4, "+*", "ext", ""),
    "cd_4m": (4, "+-*", "ext", ""),
}
# the pre-training corpus's tiers, repeated to weight them (the RL tier's search is the longest)
CORPUS_TIERS = ("cd_2", "cd_3p", "cd_3", "cd_3")
# the RL tier is intermediate by construction: 40 % of its corpus demonstrations accept their one
# near miss as the target (see the module docstring); the verifier's reward can remove the slips
CORPUS_SLIPS = {"cd_3": 0.4}
_MAX_DRAWS = 10_000


@dataclasses.dataclass(frozen=True)
class Value:
    """A labelled value and the expression over the given numbers that made it."""

    label: str
    value: int
    expr: str


@dataclasses.dataclass(frozen=True)
class Step:
    """One try of the search: ``a op b = result``. ``path``: the tries it builds on (written before
    it on its line); ``leaf``: no value is left to combine its result with; ``over``: cut off (its
    result is above the target and only monotone operations are allowed)."""

    a: Value
    op: str
    b: Value
    result: Value
    path: tuple["Step", ...] = ()
    leaf: bool = False
    over: bool = False

    def text(self, written: int | None = None) -> str:
        """``B3*C5=F15``; ``written`` replaces the result's value (a slip)."""
        value = self.result.value if written is None else written
        return f"{self.a.label}{self.a.value}{self.op}{self.b.label}{self.b.value}={self.result.label}{value}"


def combine(x: int, y: int, op: str) -> tuple[int, int, int] | None:
    """The trace's rule for ``x op y``: ``(first, second, value)`` with ``−`` written larger first
    (None when the result would be 0) and ``×`` only on one-digit values (else None)."""
    if op == "+":
        return x, y, x + y
    if op == "-":
        first, second = max(x, y), min(x, y)
        return None if first == second else (first, second, first - second)
    if op == "*":
        return (x, y, x * y) if x < 10 and y < 10 else None
    raise ValueError(f"unknown operation {op!r}; expected one of {OPS!r}")


class _TooLong(Exception):
    pass


def search(numbers: Sequence[int], target: int, ops: str, *, max_steps: int = MAX_STEPS) -> list[Step] | None:
    """The depth-first search for ``numbers`` → ``target`` with ``ops``: its tries in order, the
    last one reaching the target; None when there is no solution within the trace's rules or the
    search takes more than ``max_steps`` tries."""
    monotone = "-" not in ops
    steps: list[Step] = []
    labels = iter(RESULT_LABELS[:max_steps])

    def dfs(state: tuple[Value, ...], path: tuple[Step, ...]) -> bool:
        for i, j in itertools.combinations(range(len(state)), 2):
            for op in ops:
                made = combine(state[i].value, state[j].value, op)
                if made is None:
                    continue
                a, b = (state[i], state[j]) if made[0] == state[i].value else (state[j], state[i])
                label = next(labels, None)
                if label is None:
                    raise _TooLong
                new = Value(label, made[2], f"({a.expr}{op}{b.expr})")
                rest = tuple(v for k, v in enumerate(state) if k not in (i, j))
                step = Step(a, op, b, new, path, leaf=not rest, over=monotone and made[2] > target and bool(rest))
                steps.append(step)
                if made[2] == target:
                    return True
                if not step.leaf and not step.over and dfs((new,) + rest, path + (step,)):
                    return True
        return False

    try:
        return steps if dfs(tuple(Value(GIVEN_LABELS[i], v, str(v)) for i, v in enumerate(numbers)), ()) else None
    except _TooLong:
        return None


def render(steps: Sequence[Step], written: int | None = None) -> str:
    """The demonstration of a search whose last try ends it (``written``: that try's value written
    instead of its own, a slip). A line is a path of kept tries, then the tries that end on it:
    its leaves, comma-separated after ``:`` (``B3+C5=F8: F8+D7=G15, F8*D7=H56``), or the one try
    that is cut off (``... over``) or reaches the target; the box copies the last line's
    expression."""
    lines, k = [], 0
    while k < len(steps):
        s, last = steps[k], k == len(steps) - 1
        prefix = [p.text() for p in s.path]
        if s.leaf:
            group = [s]
            while k + len(group) < len(steps) and steps[k + len(group)].leaf and steps[k + len(group)].path == s.path:
                group.append(steps[k + len(group)])
            k += len(group)
            tries = ", ".join(g.text(written if k == len(steps) and g is group[-1] else None) for g in group)
            lines.append(f"{', '.join(prefix)}: {tries}" if prefix else tries)
            continue
        if last or s.over:
            cut = " over" if s.over and not last else ""
            lines.append(", ".join(prefix + [s.text(written if last else None)]) + cut)
        k += 1
    return "\n".join(lines + [f"\\boxed{{{_top(steps[-1].result.expr)}}}"])


def reachable(numbers: Sequence[int], ops: str) -> set[int]:
    """Every value an expression over a non-empty subset of ``numbers`` (each at most once) with
    ``ops`` can take, without the trace's rules (any order for ``−``, any size for ``×``)."""
    out: set[int] = set()

    def walk(values: tuple[int, ...]) -> None:
        out.update(values)
        for i, j in itertools.permutations(range(len(values)), 2):
            rest = tuple(v for k, v in enumerate(values) if k not in (i, j))
            x, y = values[i], values[j]
            for op in ops:
                if op != "-" and i > j:
                    continue  # + and × commute: one order is enough
                walk(((x + y) if op == "+" else (x - y) if op == "-" else (x * y),) + rest)

    walk(tuple(numbers))
    return out


def _random_target(rng: random.Random, numbers: Sequence[int], ops: str) -> int | None:
    """The value of a random expression over a random subset of ``numbers`` (at least two) built by
    the trace's rules; None when a drawn operation breaks them."""
    values = rng.sample(list(numbers), rng.randint(2, len(numbers)))
    while len(values) > 1:
        i, j = rng.sample(range(len(values)), 2)
        made = combine(values[i], values[j], rng.choice(ops))
        if made is None:
            return None
        values = [v for k, v in enumerate(values) if k not in (i, j)] + [made[2]]
    return values[0]


def _near_misses(steps: Sequence[Step], target: int) -> list[int]:
    return [k for k, s in enumerate(steps[:-1]) if abs(s.result.value - target) == 1]


def reference(numbers: Sequence[int], target: int, ops: str) -> str:
    """The record's ``answer``: what the ``countdown`` verifier checks an expression against."""
    return f"{target} from {' '.join(map(str, numbers))} with {ops}"


def _top(expr: str) -> str:
    return expr[1:-1] if expr.startswith("(") else expr


def make_countdown_question(tier: str, seed: int, index: int, *, spec: tuple | None = None) -> dict[str, Any]:
    """Item ``index`` of ``tier`` for ``seed``: ``question``, ``answer`` (`reference`),
    ``demonstration`` (the search trace, ending in ``\\boxed{expression}``), ``numbers``,
    ``target``, ``ops``. ``spec``: the tier's ``(count, ops, level, rule)`` as in
    `COUNTDOWN_TIERS` (default: its entry there), so a family of other tiers can reuse the
    generator (``benchmarks/countdown_ood.py``'s variants)."""
    count, ops, _, rule = spec or COUNTDOWN_TIERS[tier]
    rng = random.Random(f"upt_jax.countdown/{seed}/{tier}/{index}")
    for _ in range(_MAX_DRAWS):
        numbers = [rng.randint(1, 9) for _ in range(count)]
        target = _random_target(rng, numbers, ops)
        if target is None or not 1 <= target <= MAX_TARGET or target in numbers:
            continue
        steps = search(numbers, target, ops)
        if steps is None or len(render(steps)) > MAX_CHARS:
            continue
        if rule == "near_miss" and len(_near_misses(steps, target)) != 1:
            continue
        if rule == "needs_minus" and target in reachable(numbers, ops.replace("-", "")):
            continue
        break
    else:  # pragma: no cover - the tiers draw a valid problem within a few hundred tries
        raise RuntimeError(f"countdown tier {tier!r}: no problem in {_MAX_DRAWS} draws (seed {seed}, item {index})")
    question = (
        f"Make {TARGET_LABEL}{target} from "
        f"{' '.join(f'{GIVEN_LABELS[i]}{v}' for i, v in enumerate(numbers))} with {ops}."
    )
    return {
        "question": question,
        "answer": reference(numbers, target, ops),
        "demonstration": render(steps),
        "numbers": tuple(numbers),
        "target": target,
        "ops": ops,
    }


def slipped(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` with a demonstration that accepts its first near miss as the target: the search up to
    that try, its value written as the target, that try's expression boxed (the verifier rejects
    it: its value is the target ± 1). ``item`` unchanged when its search has no near miss."""
    target = item["target"]
    steps = search(item["numbers"], target, item["ops"])
    misses = _near_misses(steps, target)
    if not misses:
        return item
    return {**item, "demonstration": render(steps[: misses[0] + 1], written=target)}


def countdown_facts(rng: random.Random, n: int, labelled: float = 0.0) -> list[str]:
    """``n`` one-step facts in the traces' notation without labels: ``7*8=56`` (one-digit
    factors), ``56+7=63`` and ``63-7=56`` (a value up to 99 and a one-digit number).

    With probability ``labelled`` (drawn only when it is > 0, so ``0`` gives the same facts as
    before it existed) the document's facts are written as trace steps with value labels,
    ``E7*C8=F56``, while unused labels last (each label once per document, so a label stands
    for one value; operands from `GIVEN_LABELS` and `RESULT_LABELS`, the result under the first
    unused result label, as a trace names its results), the rest unlabelled. That is how every
    label of the format occurs in the corpus: the three-number corpus never names a fourth given
    number ``E``, so without these facts its embedding is never trained (weight decay shrinks it
    to a tenth of the others'). Measured (docs/testbed.md): at 0.5 the embedding is trained, but
    ``cd_4``'s accuracy spreads over pre-training seeds as much as without, and one seed of three
    begins to sample ``cd_3m``; so the shipped base keeps 0."""
    out = []
    for _ in range(n):
        op, b = rng.choice(OPS), rng.randint(1, 9)
        if op == "*":
            a = rng.randint(1, 9)
        elif op == "+":
            a = rng.randint(1, MAX_TARGET - b)
        else:
            a = rng.randint(b + 1, MAX_TARGET)
        out.append((a, op, b, a * b if op == "*" else a + b if op == "+" else a - b))
    if labelled > 0 and rng.random() < labelled:
        unused = list(GIVEN_LABELS + RESULT_LABELS)
        lines = []
        for a, op, b, r in out:
            lr = next((lbl for lbl in RESULT_LABELS if lbl in unused), None)
            if lr is None or len(unused) < 3:
                lines.append(f"{a}{op}{b}={r}")
                continue
            unused.remove(lr)
            la = unused.pop(rng.randrange(len(unused)))
            lb = unused.pop(rng.randrange(len(unused)))
            lines.append(f"{la}{a}{op}{lb}{b}={lr}{r}")
        return lines
    return [f"{a}{op}{b}={r}" for a, op, b, r in out]


def _corpus_doc(
    rng: random.Random,
    tiers: Sequence[str],
    template: str = "zero",
    *,
    seed: int = 0,
    labelled_facts: float = 0.0,
    **options,
) -> str:
    """A pre-training document: a question of ``tiers`` and its search trace, or one-step facts
    (``labelled_facts``: the share of fact documents written with labels, `countdown_facts`). A
    demonstration of a tier in `CORPUS_SLIPS` accepts its near miss with that probability."""

    def make(tier, seed, index):
        item = make_countdown_question(tier, seed, index)
        slip = CORPUS_SLIPS.get(tier, 0.0)
        return slipped(item) if slip and rng.random() < slip else item

    facts = functools.partial(countdown_facts, labelled=labelled_facts) if labelled_facts else countdown_facts
    return corpus_document(rng, tiers, template, seed=seed, make=make, facts=facts, **options)


COUNTDOWN = tasks.register_task(
    tasks.TaskFamily(
        name="countdown",
        tiers=tuple(
            tasks.TaskTier(name, level, f"reach a target from {n} numbers with {ops}")
            for name, (n, ops, level, _) in COUNTDOWN_TIERS.items()
        ),
        make_record=make_countdown_question,
        verifier="countdown",
        corpus_doc=_corpus_doc,
        description="Countdown (reach a target from given numbers with + − ×, each at most once) with "
        "labelled values; the demonstration is a short depth-first search trace.",
    ),
    replace=True,
)
