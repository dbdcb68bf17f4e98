"""The ``countdown`` verifier: the answer is an arithmetic expression that reaches a target from
given numbers, each used at most once, with the allowed operations (`upt_jax.data.countdown`).

A countdown answer is not unique (``(3*5)+7`` and ``7+5*3`` both make 22 from 3, 5, 7), so it is
checked, not compared: the reference names the problem, ``"22 from 3 5 7 with +*"`` (`parse_reference`),
and the last ``\\boxed{...}`` of the output must hold an expression over integers, ``+ - *`` and
parentheses (``\\times``, ``\\cdot``, ``×``, ``·`` and ``−`` are read as ``*`` and ``-``;
optionally followed by ``= <target>``) that

* uses only given numbers, each at most as often as it is given;
* uses only the allowed operations (binary: a unary minus is malformed);
* evaluates to the target (intermediate values may be anything).

Model output is adversarial input. Nothing is ``eval``-ed: the expression is at most `MAX_CHARS`
characters of a fixed alphabet, parsed by ``ast.parse(mode="eval")`` (the standard library's
parser, on at most a few dozen tokens) and walked over an allow-list of node types; the number
check comes before any arithmetic, so the values stay as small as the given numbers make them.
Anything else scores 0 with a reason: ``no_answer`` (no box), ``too_long``, ``bad_format`` (not
such an expression; the cause in ``detail``), ``wrong`` (a well-formed expression that breaks a
rule or misses the target; which in ``detail``), ``bad_reference`` (the reference is malformed).
"""

from __future__ import annotations

import ast
import collections
import re

from upt_jax.rewards import extract
from upt_jax.rewards.types import Reward

__all__ = ["MAX_CHARS", "Malformed", "parse_reference", "parse_expression", "expression_value", "verify_countdown"]

MAX_CHARS = 64
_REFERENCE = re.compile(r"\s*(\d{1,6}) from ((?:\d{1,6} ){0,9}\d{1,6}) with ([-+*]{1,3})\s*")
_ALLOWED = frozenset("0123456789+-*() ")
_SPELLINGS = (
    ("\\times", "*"),
    ("\\cdot", "*"),
    ("×", "*"),
    ("·", "*"),
    ("−", "-"),
    ("\\left(", "("),
    ("\\right)", ")"),
    ("\\,", " "),
    ("\\ ", " "),
)
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}


class Malformed(ValueError):
    """The answer is not an expression over integers with ``+ - *`` and parentheses."""


def parse_reference(gold: str) -> tuple[tuple[int, ...], int, str] | None:
    """``"22 from 3 5 7 with +*"`` → ``((3, 5, 7), 22, "+*")``; None when malformed."""
    m = _REFERENCE.fullmatch(gold) if isinstance(gold, str) else None
    if m is None or len(set(m.group(3))) != len(m.group(3)):
        return None
    return tuple(int(x) for x in m.group(2).split()), int(m.group(1)), m.group(3)


def _normalize(answer: str) -> str:
    for spelling, op in _SPELLINGS:
        answer = answer.replace(spelling, op)
    return answer


def parse_expression(answer: str, *, max_chars: int = MAX_CHARS) -> tuple[ast.expr, list[int], set[str]]:
    """The expression's tree, the integers it uses (in order) and its operations.

    Raises:
      Malformed: longer than ``max_chars``, characters outside digits, ``+ - *``, parentheses and
        spaces, a syntax error, or anything but binary ``+ - *`` on non-negative integer literals.
    """
    if len(answer) > max_chars:
        raise Malformed(f"longer than {max_chars} characters")
    bad = set(answer) - _ALLOWED
    if bad:
        raise Malformed(f"characters {''.join(sorted(bad))!r}")
    try:
        tree = ast.parse(answer.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise Malformed(f"not an expression ({type(e).__name__})") from None
    numbers: list[int] = []
    ops: set[str] = set()
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            ops.add(_OPS[type(node.op)])
            todo += [node.right, node.left]
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            numbers.append(node.value)
        else:
            what = type(node.op if isinstance(node, ast.BinOp) else node).__name__
            raise Malformed(f"{what} is not allowed")
    return tree, numbers, ops


def expression_value(tree: ast.expr) -> int:
    """The value of a tree `parse_expression` accepted (its depth is bounded by its length; call it
    after checking the numbers, which bound the values)."""
    if isinstance(tree, ast.Constant):
        return tree.value
    a, b = expression_value(tree.left), expression_value(tree.right)
    return a + b if isinstance(tree.op, ast.Add) else a - b if isinstance(tree.op, ast.Sub) else a * b


def verify_countdown(output: str, gold: str, *, max_chars: int = MAX_CHARS) -> Reward:
    """1.0 when the last ``\\boxed{}`` of ``output`` reaches the target of ``gold`` (a
    `parse_reference` string) from its numbers, each at most once, with its operations."""
    problem = parse_reference(gold)
    if problem is None:
        return Reward(0.0, "bad_reference", detail=f"not a countdown reference: {gold!r:.80}")
    numbers, target, allowed = problem
    answer, how = extract.extract_answer(output, (), max_chars + 32)
    if answer is None:
        return Reward(0.0, "too_long" if how == "too_long" else "no_answer")
    expr = _normalize(answer)
    if expr.count("=") == 1:  # "(3*5)+7 = 22": the right side must be the target
        expr, rhs = expr.split("=")
        if rhs.strip() != str(target):
            return Reward(0.0, "wrong", extracted=answer, detail=f"claims {rhs.strip()[:16]!r}, not {target}")
    try:
        tree, used, ops = parse_expression(expr, max_chars=max_chars)
    except Malformed as e:
        reason = "too_long" if str(e).startswith("longer") else "bad_format"
        return Reward(0.0, reason, extracted=answer[:max_chars], detail=str(e))
    extra = collections.Counter(used) - collections.Counter(numbers)
    if extra:
        return Reward(0.0, "wrong", extracted=answer, detail=f"uses {sorted(extra.elements())} beyond {list(numbers)}")
    if not ops <= set(allowed):
        return Reward(
            0.0, "wrong", extracted=answer, detail=f"operations {''.join(sorted(ops - set(allowed)))} not allowed"
        )
    value = expression_value(tree)
    ok = value == target
    return Reward(
        float(ok),
        "correct" if ok else "wrong",
        extracted=answer,
        detail=None if ok else f"value {value}, target {target}",
    )
