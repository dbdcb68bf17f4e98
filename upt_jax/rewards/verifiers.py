"""Verifiers: model output + reference → `Reward` (score, reason).

| kind      | function          | what counts as correct                                   | where it runs |
|-----------|-------------------|----------------------------------------------------------|---------------|
| `math`    | `verify_math`     | last ``\\boxed{}`` (or fallback) equals the reference under math-verify | pool (fast path in-process) |
| `math_strict` | `verify_math(strict=True)` | as `math`, only equal values (see below) | pool (fast path in-process) |
| `integer` | `verify_integer`  | last ``\\boxed{}`` is exactly the reference integer (synthetic tasks) | in-process |
| `exact`   | `verify_exact`    | extracted answer equals the reference after whitespace/case folding | in-process |
| `choice`  | `verify_choice`   | the chosen letter (GPQA) equals the reference letter    | in-process |
| `format`  | `verify_format`   | a complete ``\\boxed{}`` (optionally a ``<think>`` block) | in-process |
| `countdown` | `verify_countdown` | the boxed expression reaches the reference's target from its numbers, each at most once, with its operations (`upt_jax.rewards.countdown`) | in-process |

The in-process verifiers only use `upt_jax.rewards.extract` (bounded, linear-time, no
backtracking regex) and integer comparison, so their running time is bounded by
construction; ``math`` needs sympy, which can hang, so it goes to a `VerifierPool`
whose workers are killed at the time limit. `Verifier` batches all of this::

  >>> with Verifier("math", timeout_s=5.0, num_workers=2) as verifier:
  ...   rewards = verifier(["... so \\\\boxed{\\\\frac{1}{2}}", "I think 7"], ["0.5", "8"])
  >>> [(r.score, r.reason) for r in rewards]
  [(1.0, 'correct'), (0.0, 'wrong')]

``math`` keeps math-verify's lenient defaults, under which ``0.1000001`` counts for 0.1,
``100\\%`` for 1 and ``x=2`` for 2: a surface a policy can learn to exploit. For RL on
numeric answers prefer ``math_strict`` (``Verifier("math_strict")``, or
``Verifier("math", strict=True)``, or ``data.verifier="math_strict"`` in a config),
which still accepts equal forms (``1/2`` = ``0.5`` = ``\\frac{1}{2}``, ``2.0`` = ``2``,
units); see `upt_jax.rewards.math_equiv`.

Nothing is ever ``eval``-ed or ``exec``-ed (see `upt_jax.rewards.math_equiv`).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Sequence

import numpy as np

from upt_jax.rewards import extract
from upt_jax.rewards.countdown import verify_countdown
from upt_jax.rewards.types import Reward

__all__ = [
    "KINDS",
    "prepare_math",
    "verify_math",
    "verify_integer",
    "verify_exact",
    "verify_choice",
    "verify_format",
    "verify_countdown",
    "Verifier",
    "RoutedVerifier",
]

KINDS = ("math", "math_strict", "integer", "exact", "choice", "format", "countdown")
_MATH_KINDS = ("math", "math_strict")


def _found(answer: str | None, how: str) -> Reward | None:
    if answer is None:
        return Reward(0.0, "too_long" if how == "too_long" else "no_answer")
    return None


def prepare_math(
    output: str,
    gold: str,
    *,
    fallbacks: tuple[str, ...] = extract.FALLBACKS,
    max_chars: int = extract.DEFAULT_MAX_CHARS,
) -> Reward | tuple[str, str]:
    """The in-process half of `verify_math`.

    Extracts the answer; decides at once when there is none or when both answers are
    plain integers (no sympy needed). Otherwise returns ``(answer, gold)`` for
    `upt_jax.rewards.math_equiv.math_equivalent` in a worker.
    """
    answer, how = extract.extract_answer(output, fallbacks, max_chars)
    early = _found(answer, how)
    if early is not None:
        return early
    pred_int, gold_int = extract.parse_integer(answer), extract.parse_integer(gold)
    if pred_int is not None and gold_int is not None:
        ok = pred_int == gold_int
        return Reward(float(ok), "correct" if ok else "wrong", extracted=answer)
    if gold_int is not None and len(answer) > 4 * len(gold) + 64:
        # A huge expression against an integer reference: not worth a parse.
        return Reward(0.0, "wrong", extracted=answer[:64])
    return answer, gold


def verify_math(
    output: str,
    gold: str,
    *,
    fallbacks: tuple[str, ...] = extract.FALLBACKS,
    max_chars: int = extract.DEFAULT_MAX_CHARS,
    strict: bool = False,
) -> Reward:
    """`prepare_math`, then math-verify **in this process, without a time limit**.

    ``strict``: only equal values count (the ``math_strict`` kind; see
    `upt_jax.rewards.math_equiv`). `prepare_math`'s integer fast path is exact either way.
    For training and evaluation use `Verifier("math")`, which runs the math-verify part
    in the worker pool under a time limit.
    """
    from upt_jax.rewards import math_equiv

    prepared = prepare_math(output, gold, fallbacks=fallbacks, max_chars=max_chars)
    if isinstance(prepared, Reward):
        return prepared
    return math_equiv.math_equivalent(*prepared, strict=strict)


def verify_integer(output: str, gold: str | int, *, fallbacks: tuple[str, ...] = (), max_chars: int = 128) -> Reward:
    """Exact integer comparison of the last ``\\boxed{}`` (the synthetic-task fast path).

    Strict by default (no fallback): a demonstration-style output must end in a box.

    A reference that is not an integer (``"1/2"``, ``"5.0"``, ``"nan"``) is a data error,
    which `upt_jax.data.load_records` rejects at read time; one that gets here anyway
    scores 0 with reason ``bad_reference`` (counted in `Verifier.metrics`) rather than
    stopping a run mid-step.
    """
    if isinstance(gold, int) and not isinstance(gold, bool):
        gold_int = gold
    else:
        gold_int = extract.parse_integer(gold) if isinstance(gold, str) else None
    if gold_int is None:
        return Reward(0.0, "bad_reference", detail=f"not an integer reference: {gold!r:.80}")
    answer, how = extract.extract_answer(output, fallbacks, max_chars)
    early = _found(answer, how)
    if early is not None:
        return early
    ok = extract.parse_integer(answer) == gold_int
    return Reward(float(ok), "correct" if ok else "wrong", extracted=answer)


def _with_extracted(reward: Reward, extracted: str) -> Reward:
    """``reward`` with ``extracted`` filled in (timeouts and crashes come back without)."""
    if reward.extracted is not None:
        return reward
    return dataclasses.replace(reward, extracted=extracted)


def _fold(s: str) -> str:
    return " ".join(extract.strip_math_delimiters(s).split()).casefold()


def verify_exact(
    output: str,
    gold: str,
    *,
    extract_answer: bool = True,
    fallbacks: tuple[str, ...] = ("answer_is",),
    max_chars: int = extract.DEFAULT_MAX_CHARS,
) -> Reward:
    """String equality after folding whitespace, case and ``$`` wrappers.

    With ``extract_answer`` the boxed (or fallback) answer is compared, else the whole
    output (only its last ``max_chars`` characters are looked at beyond the length check).
    """
    if extract_answer:
        answer, how = extract.extract_answer(output, fallbacks, max_chars)
        early = _found(answer, how)
        if early is not None:
            return early
    else:
        if len(output) > max_chars:
            return Reward(0.0, "too_long")
        answer = output
    ok = _fold(answer) == _fold(gold)
    return Reward(float(ok), "correct" if ok else "wrong", extracted=answer)


def verify_choice(
    output: str, gold: str, *, choices: str = "ABCD", max_chars: int = extract.DEFAULT_MAX_CHARS
) -> Reward:
    """Multiple choice (GPQA): the extracted letter equals the reference letter."""
    letter = extract.extract_choice(output, choices, max_chars)
    if letter is None:
        return Reward(0.0, "no_answer")
    ok = letter == gold.strip().strip("()").upper()
    return Reward(float(ok), "correct" if ok else "wrong", extracted=letter)


def verify_format(
    output: str,
    gold: Any = None,
    *,
    require_boxed: bool = True,
    require_think: bool = False,
    max_chars: int = extract.DEFAULT_MAX_CHARS,
) -> Reward:
    """1.0 when the output has the required structure (the reference is ignored).

    Args:
      require_boxed: a complete, balanced ``\\boxed{...}`` of at most ``max_chars``.
      require_think: exactly one ``<think>...</think>`` block, at the start, with the
        box (if required) after it.
    """
    boxed_at = 0
    if require_boxed:
        try:
            content = extract.last_boxed(output, max_chars)
        except extract.TooLong:
            return Reward(0.0, "too_long")
        if content is None:
            return Reward(0.0, "bad_format", detail="no \\boxed{}")
        boxed_at = output.rfind("\\boxed")
    if require_think:
        stripped = output.lstrip()
        close = output.find("</think>")
        if (
            not stripped.startswith("<think>")
            or close < 0
            or output.count("<think>") != 1
            or output.count("</think>") != 1
            or (require_boxed and boxed_at < close)
        ):
            return Reward(0.0, "bad_format", detail="think block")
    return Reward(1.0, "correct")


_FUNCTIONS = {
    "math": verify_math,
    "math_strict": verify_math,
    "integer": verify_integer,
    "exact": verify_exact,
    "choice": verify_choice,
    "format": verify_format,
    "countdown": verify_countdown,
}


class Verifier:
    """A batched verifier of one kind, with its worker pool when it needs one.

    Args:
      kind: one of `KINDS`; ``"math_strict"`` is ``"math"`` with ``strict=True``.
      timeout_s: time limit per item in the pool.
      num_workers: pool size (default ``min(4, cpu_count)``).
      isolate: run every item in the pool, even for the in-process kinds.
      pool: share an existing `VerifierPool` (not closed by `close`).
      **options: keyword arguments of the verify function (``fallbacks``,
        ``max_chars``, ``choices``, ``require_think``, ``strict`` for ``math``, ...).

    Calling it on ``(outputs [B], golds [B])`` returns ``B`` `Reward` s;
    `scores` returns them as a float32 array ``[B]``. ``stats`` counts reasons over the
    verifier's lifetime (for the run's metrics).

    ``kinds [B]`` (optional): the kind that scores each item, a record's own ``verifier`` (a
    synthetic task family's, `upt_jax.data.tasks`). None or this verifier's kind: this verifier;
    another kind: a `RoutedVerifier` (made on first need, closed with this one) with this verifier
    for its own kind, its other kinds' reasons counted as ``<kind>/<reason>``
    (``reward/countdown/correct``), so a run whose data mixes families scores each with its own
    verifier.
    """

    def __init__(
        self,
        kind: str = "math",
        *,
        timeout_s: float = 5.0,
        num_workers: int | None = None,
        isolate: bool = False,
        pool=None,
        **options,
    ):
        if kind not in KINDS:
            raise ValueError(f"unknown verifier kind {kind!r}; expected one of {KINDS}")
        if kind == "math_strict":
            if options.get("strict", True) is not True:
                raise ValueError("math_strict is strict: use kind 'math' for strict=False")
            options = dict(options, strict=True)
        self.kind, self.timeout_s, self.num_workers = kind, timeout_s, num_workers
        self.isolate, self.options = isolate, options
        self._pool, self._own_pool = pool, pool is None
        self.stats = collections.Counter()
        self._router: RoutedVerifier | None = None  # scores the items of other kinds (kinds=)

    @property
    def running_pool(self):
        """The worker pool when one has been started (or was given), else None."""
        return self._pool

    @property
    def pool(self):
        if self._pool is None:
            from upt_jax.rewards.pool import VerifierPool

            self._pool = VerifierPool(self.num_workers, self.timeout_s)
        return self._pool

    def __call__(
        self, outputs: Sequence[str], golds: Sequence[Any], kinds: Sequence[str | None] | None = None
    ) -> list[Reward]:
        if len(outputs) != len(golds):
            raise ValueError(f"{len(outputs)} outputs but {len(golds)} references")
        if kinds is None or all(k in (None, self.kind) for k in kinds):
            return self._score(outputs, golds)
        if len(kinds) != len(outputs):
            raise ValueError(f"{len(outputs)} outputs but {len(kinds)} kinds")
        if self._router is None:  # the other kinds share one RoutedVerifier; this one scores its own
            self._router = RoutedVerifier(timeout_s=self.timeout_s, num_workers=self.num_workers)
            self._router.verifiers[self.kind] = self
        return self._router(outputs, golds, [k if k is not None else self.kind for k in kinds])

    def _score(self, outputs: Sequence[str], golds: Sequence[Any]) -> list[Reward]:
        fn = _FUNCTIONS[self.kind]
        if self.isolate:
            rewards = self.pool.map(fn, list(zip(outputs, golds)), self.options, timeout_s=self.timeout_s)
        elif self.kind in _MATH_KINDS:
            from upt_jax.rewards import math_equiv

            options = dict(self.options)
            strict = {"strict": True} if options.pop("strict", False) else None
            rewards: list[Any] = [prepare_math(o, str(g), **options) for o, g in zip(outputs, golds)]
            todo = [i for i, r in enumerate(rewards) if not isinstance(r, Reward)]
            if todo:
                done = self.pool.map(
                    math_equiv.math_equivalent, [rewards[i] for i in todo], strict, timeout_s=self.timeout_s
                )
                for i, r in zip(todo, done):
                    rewards[i] = _with_extracted(r, rewards[i][0])
        else:
            rewards = [fn(o, g, **self.options) for o, g in zip(outputs, golds)]
        self.stats.update(r.reason for r in rewards)
        return rewards

    def scores(
        self, outputs: Sequence[str], golds: Sequence[Any], kinds: Sequence[str | None] | None = None
    ) -> np.ndarray:
        """Rewards as a float32 array ``[B]``."""
        return np.asarray([r.score for r in self(outputs, golds, kinds)], np.float32)

    def metrics(self, prefix: str = "reward/") -> dict[str, int]:
        """Reason counts so far, e.g. ``{"reward/timeout": 2, ...}``; another kind's as
        ``{"reward/countdown/correct": 1}``."""
        out = {f"{prefix}{k}": v for k, v in self.stats.items()}
        for kind, verifier in self._router.verifiers.items() if self._router is not None else ():
            if verifier is not self:
                out.update(verifier.metrics(f"{prefix}{kind}/"))
        return dict(sorted(out.items()))

    def close(self) -> None:
        if self._router is not None:
            self._router.verifiers.pop(self.kind, None)  # this one closes below, not through it
            self._router.close()
            self._router = None
        if self._pool is not None and self._own_pool:
            self._pool.close()
        self._pool = None

    def __enter__(self) -> "Verifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RoutedVerifier:
    """Scores a mixed batch, item ``i`` with verifier kind ``kinds[i]``; one shared pool.

    For evaluation over several benchmarks at once (GPQA is ``choice``, the rest
    ``math``) and for mixing synthetic (``integer``) and real (``math`` or
    ``math_strict``) questions.
    Records from `upt_jax.data` carry their kind in ``record["verifier"]``.

    Args:
      timeout_s, num_workers: of the shared pool (started on first need).
      options: per-kind keyword arguments, e.g. ``{"math": {"fallbacks": ()}}``.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 5.0,
        num_workers: int | None = None,
        options: dict[str, dict[str, Any]] | None = None,
    ):
        self.timeout_s, self.num_workers = timeout_s, num_workers
        self.options = dict(options or {})
        unknown = set(self.options) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown verifier kinds {sorted(unknown)}; expected {KINDS}")
        self._pool = None
        self._verifiers: dict[str, Verifier] = {}

    @property
    def running_pool(self):
        """The worker pool the math (and isolated) kinds share, once one of them ran; else None."""
        return self._pool

    @property
    def verifiers(self) -> dict[str, Verifier]:
        """The `Verifier` of every kind used so far."""
        return self._verifiers

    def verifier(self, kind: str) -> Verifier:
        """The `Verifier` of ``kind`` (made on first use)."""
        if kind not in self._verifiers:
            if kind not in KINDS:
                raise ValueError(f"unknown verifier kind {kind!r}; expected one of {KINDS}")
            pool = None
            if kind in _MATH_KINDS or self.options.get(kind, {}).get("isolate"):
                if self._pool is None:
                    from upt_jax.rewards.pool import VerifierPool

                    self._pool = VerifierPool(self.num_workers, self.timeout_s)
                pool = self._pool
            self._verifiers[kind] = Verifier(kind, timeout_s=self.timeout_s, pool=pool, **self.options.get(kind, {}))
        return self._verifiers[kind]

    def __call__(self, outputs: Sequence[str], golds: Sequence[Any], kinds: Sequence[str]) -> list[Reward]:
        if not len(outputs) == len(golds) == len(kinds):
            raise ValueError(f"{len(outputs)} outputs, {len(golds)} references, {len(kinds)} kinds")
        rewards: list[Any] = [None] * len(outputs)
        for kind in dict.fromkeys(kinds):
            idx = [i for i, k in enumerate(kinds) if k == kind]
            for i, r in zip(idx, self.verifier(kind)([outputs[i] for i in idx], [golds[i] for i in idx])):
                rewards[i] = r
        return rewards

    def metrics(self, prefix: str = "reward/") -> dict[str, int]:
        """Reason counts per kind, e.g. ``{"reward/math/timeout": 2, ...}``."""
        out = {}
        for kind, verifier in sorted(self._verifiers.items()):
            out.update(verifier.metrics(f"{prefix}{kind}/"))
        return out

    def close(self) -> None:
        for verifier in self._verifiers.values():
            verifier.close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> "RoutedVerifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
