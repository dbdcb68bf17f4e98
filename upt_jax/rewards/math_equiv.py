"""Math answer equivalence with math-verify, configured so that nothing is evaluated.

`math_equivalent` is the function the `VerifierPool` workers run: it parses both
answers with math-verify's LaTeX extraction only (ANTLR grammar → sympy objects) and
compares them symbolically and numerically (``1/2 == 0.5``, ``2\\sqrt2 == \\sqrt8``,
``(1,2] == (1, 2]``, ``\\{1,2,3\\} == \\{3,2,1\\}``, ``5\\text{ cm} == 5``).

No code is ever run from a model output:

- math-verify's ``ExprExtractionConfig`` (which calls sympy ``parse_expr``, i.e. Python
  ``eval``) is never used;
- `install_eval_guard` replaces sympy's ``eval_expr`` (the one place sympy's string
  parsing calls ``eval``) with a check that only lets through what sympy builds
  internally (``Integer (12 )``, ``Float ('1.5' )``, ``Symbol ('kilo' )``, ``E``) and
  raises on anything else. The workers install it for good at start-up;
  `math_equivalent` called in any other process holds it for the duration of the call.

math-verify's own signal-based timeouts are disabled: the pool enforces the limit by
killing the worker, which also stops C code that a signal cannot interrupt.

Two modes:

- default (``strict=False``): math-verify's defaults, which are lenient: numbers are
  compared rounded to 6 decimals (``0.1000001`` counts for ``0.1``, ``0.333333`` for
  ``\\frac13``), a percentage is also its fraction (``100\\%`` counts for ``1``), and an
  equation counts for its right-hand side (``x=2`` for ``2``).
- ``strict=True`` (the ``math_strict`` verifier kind): only equal values count, closing
  that reward-hacking surface for RL. Numbers must agree to `STRICT_FLOAT_ROUNDING`
  decimals (a double's precision) instead of 6; a percent sign is read as a unit, like
  ``\\text{cm}`` (``50\\%`` counts for ``50``, not for ``0.5``); an equation counts only
  for an equation (``x=2`` for ``x=2``; ``2`` still counts for a reference ``x=2``).
  Equal forms still count: ``1/2``, ``0.5`` and ``\\frac{1}{2}``; ``2.0`` and ``2``;
  ``2\\sqrt2`` and ``\\sqrt8``; sets in any order; units. Both modes are math-verify
  with different settings, plus two checks on what it parsed.
"""

from __future__ import annotations

import contextlib
import functools
import re

from upt_jax.rewards import extract
from upt_jax.rewards.types import Reward

__all__ = ["eval_guard", "install_eval_guard", "normalize_for_latex", "math_equivalent", "STRICT_FLOAT_ROUNDING"]

# Decimals to which strict mode compares numbers (math-verify's default is 6): a double
# carries 15-17 significant digits, so this is equality up to how floats are stored.
STRICT_FLOAT_ROUNDING = 15

# The only strings sympy's parser may evaluate: what sympy itself builds internally when
# latex2sympy creates numbers (`Integer("12")` goes through sympify → parse_expr) and when
# sympy modules define their symbols on first use (`Symbol('kilo')`, `E`). None of these
# shapes can call anything but a sympy constructor on a literal.
_ALLOWED_EVAL = re.compile(
    r"\s*(?:"
    r"Integer\s*\(\s*\d{1,4300}\s*\)"
    r"|Float\s*\(\s*'\d{0,4300}(?:\.\d{0,4300})?(?:[eE][+-]?\d{1,6})?'\s*\)"
    r"|Symbol\s*\(\s*'[A-Za-z_][A-Za-z0-9_]{0,99}'\s*\)"
    r"|[A-Za-z][A-Za-z0-9]{0,31}"  # a bare name (no underscores: no dunders)
    r")\s*"
)
_SCI = re.compile(r"([+-]?\d+(?:\.\d*)?)[eE]([+-]?\d+)")


class EvalRefused(ValueError):
    """sympy tried to evaluate a string that is not a number literal."""


def _guarded(original):
    def guarded_eval_expr(code, local_dict, global_dict):
        if not isinstance(code, str) or _ALLOWED_EVAL.fullmatch(code) is None:
            raise EvalRefused("refusing to evaluate a non-literal string")
        return original(code, local_dict, global_dict)

    guarded_eval_expr.upt_jax_guard = True
    return guarded_eval_expr


def install_eval_guard() -> None:
    """Makes sympy's string evaluation accept literals only, for good (idempotent).

    The pool's workers call this at start-up.
    """
    import sympy.parsing.sympy_parser as sympy_parser

    if not getattr(sympy_parser.eval_expr, "upt_jax_guard", False):
        sympy_parser.eval_expr = _guarded(sympy_parser.eval_expr)


@contextlib.contextmanager
def eval_guard():
    """The guard for the duration of a block (restores sympy afterwards); not thread-safe."""
    import sympy.parsing.sympy_parser as sympy_parser

    original = sympy_parser.eval_expr
    if getattr(original, "upt_jax_guard", False):
        yield
        return
    sympy_parser.eval_expr = _guarded(original)
    try:
        yield
    finally:
        sympy_parser.eval_expr = original


def _load_math_verify():
    import math_verify
    from math_verify import grader, parser

    # We disable math-verify's SIGALRM timeouts on purpose (the pool kills workers);
    # silence its one-time warning about that.
    parser.TIMEOUT_WARNING_SHOWN = True
    grader.TIMEOUT_WARNING_SHOWN = True
    return math_verify


def normalize_for_latex(answer: str) -> str:
    """Strips ``$``/``\\(``/``\\[`` wrappers; ``4.5e33`` → ``4.5\\times10^{33}``."""
    s = extract.strip_math_delimiters(answer)
    m = _SCI.fullmatch(s)
    if m:
        s = f"{m.group(1)}\\times10^{{{m.group(2)}}}"
    return s


def _parse(answer: str):
    math_verify = _load_math_verify()
    config = [math_verify.LatexExtractionConfig(boxed_match_priority=0)]
    return math_verify.parse(
        "\\boxed{" + normalize_for_latex(answer) + "}",
        extraction_config=config,
        fallback_mode="first_match",
        parsing_timeout=None,
    )


# References repeat across a group's rollouts; cache short strings only (bounded memory).
_parse_cached = functools.lru_cache(maxsize=1024)(_parse)
_CACHE_MAX_CHARS = 2048


def _parse_maybe_cached(answer: str):
    return _parse_cached(answer) if len(answer) <= _CACHE_MAX_CHARS else _parse(answer)


def _without_percent(expr):
    """``expr`` with every ``x\\%`` (latex2sympy's ``x * UnevaluatedExpr(1/100)``) read as
    ``x``: in strict mode a percent sign is a unit, not a conversion."""
    from math_verify import grader
    from sympy import Basic

    if not isinstance(expr, Basic):
        return expr
    return expr.replace(lambda e: grader.get_pct_val(e) is not None, grader.get_pct_val)


def _strict_verify(math_verify, gold_parsed: list, pred_parsed: list) -> bool:
    from math_verify import grader
    from sympy import Basic

    def has_relation(parsed):
        return any(isinstance(x, Basic) and grader.is_relation(x) for x in parsed)

    # math-verify takes the right-hand side of a predicted equation when the reference is
    # not one (`x=2` for `2`, also `1=2` for `2`): strict mode does not.
    if has_relation(pred_parsed) and not has_relation(gold_parsed):
        return False
    return math_verify.verify(
        [_without_percent(x) for x in gold_parsed],
        [_without_percent(x) for x in pred_parsed],
        float_rounding=STRICT_FLOAT_ROUNDING,
        timeout_seconds=None,
    )


def math_equivalent(prediction: str, gold: str, *, strict: bool = False) -> Reward:
    """Whether two extracted answers are mathematically equal (math-verify).

    Args:
      prediction: the answer extracted from the model output (no surrounding text).
      gold: the reference answer (``\\boxed{}`` and ``$`` wrappers are removed).
      strict: only equal values count: no 6-decimal rounding, no percent conversion, no
        equation for a number (see the module docstring). Default: math-verify's
        lenient defaults.

    Returns:
      ``Reward(1.0, "correct")`` or ``Reward(0.0, "wrong")``; ``extracted`` is
      ``prediction``. Meant to run in a `VerifierPool` worker (it has no time limit of
      its own).
    """
    math_verify = _load_math_verify()
    boxed = extract.last_boxed(gold, max_chars=1 << 20) if "\\boxed" in gold else None
    gold = boxed if boxed is not None else gold
    with eval_guard():
        gold_parsed, pred_parsed = _parse_maybe_cached(gold), _parse_maybe_cached(prediction)
        if not gold_parsed:
            # Unparseable reference: fall back to a normalised string comparison.
            ok = " ".join(gold.split()) == " ".join(prediction.split())
        elif strict:
            ok = _strict_verify(math_verify, gold_parsed, pred_parsed)
        else:
            ok = math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=None)
    return Reward(1.0 if ok else 0.0, "correct" if ok else "wrong", extracted=prediction)
