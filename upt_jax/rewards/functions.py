"""Reward functions: your own Python callables as the rollouts' rewards, each call time-limited.

The interface (as TRL's ``reward_funcs``)::

    def my_reward(prompts: list, completions: list[str], **columns) -> list[float]:
        ...

* ``prompts``: each rollout's prompt as the dataset gave it: the question's text, or the chat
  prompt (a list of ``{"role", "content"}``) of a ``messages`` / conversational row;
* ``completions``: the sampled texts (special tokens removed);
* ``columns``: every other field of the dataset row, one list entry per rollout: ``answer`` (the
  reference, or ``None``) and the row's other columns (``columns["difficulty"][i]``; see
  `upt_jax.data.layouts`). Take ``**kwargs`` to ignore the ones you do not read.

It returns one finite number per completion. Each call is made for **one rollout at a time**
(lists of length 1) in a `VerifierPool` worker process under ``timeout_s``: a call that hangs is
killed at the limit (its worker replaced), one that raises or returns something other than one
finite number scores 0, and both are counted (``reward/<name>/timeout``, ``…/error``); the run
goes on. Several functions are summed with weights: ``reward = Σ_i w_i · f_i``; each function's
mean score is logged as ``reward/<name>`` (and the weighted total as ``reward/mean``).

From a config (``upt train ... --config.reward.functions='("my_rewards:length_penalty", "math")'
--config.reward.weights='(0.1, 1.0)'``), a function is named by import path ``module:function``
(``module`` is imported from ``sys.path``, with the working directory added when it is not on it)
or by a built-in name: ``math``, ``math_strict``, ``integer``, ``exact``, ``choice``, ``countdown`` (the verifiers
of `upt_jax.rewards.verifiers`, scoring ``completions`` against ``answer``) and ``format`` (a
complete ``\\boxed{}``) — the same interface. From Python, pass the callables themselves.

**How a function reaches the workers.** Workers are separate processes (started by the
forkserver; never forked from the trainer). A function of an importable module is sent by
reference and imported in the worker (its module's directory is put on the worker's
``sys.path``); a call that exceeds ``timeout_s`` is killed with its worker. A function defined in
a notebook, a script's ``__main__``, a lambda or a closure cannot be imported there, and nothing
is ever unpickled, so it runs in the calling process instead, one call at a time on a daemon
thread: a call past ``timeout_s`` counts as ``timeout`` and scores 0, but its thread cannot be
killed and keeps running. Put a function that may hang in a module (``%%writefile my_rewards.py``
in a notebook) to have it killed.

Example::

    >>> def brevity(prompts, completions, **_):
    ...     return [-len(c) / 100 for c in completions]
    >>> with RewardFunctions([brevity, "math"], weights=[0.1, 1.0], timeout_s=2.0) as rf:
    ...     total = rf.scores(["1+1?"], ["\\\\boxed{2}"], [{"answer": "2"}])
    >>> total, rf.metrics()["reward/math"]
    (array([0.9...], dtype=float32), 1.0)
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import numbers
import os
import sys
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["BUILTIN", "RewardFunctions", "resolve", "row_columns", "call_one"]

RewardFn = Callable[..., Sequence[float]]
# record keys that are the prompt or a response, not a column a reward function receives
_NOT_COLUMNS = (
    "question",
    "demonstration",
    "chosen",
    "rejected",
    "messages",
    "prompt_messages",
    "location",
    "layout",
    "columns",
    "text",
)


# ----------------------------------------------------------------------------- built-ins
def _verify(kind: str, completions, answer, **options) -> list[float]:
    from upt_jax.rewards import verifiers

    fn = {
        "math": verifiers.verify_math,
        "integer": verifiers.verify_integer,
        "exact": verifiers.verify_exact,
        "choice": verifiers.verify_choice,
        "countdown": verifiers.verify_countdown,
    }[kind]
    return [float(fn(c, "" if a is None else str(a), **options).score) for c, a in zip(completions, answer)]


def math(prompts, completions, answer, **_) -> list[float]:  # noqa: A001 -- the built-in's name
    """1 when the last ``\\boxed{}`` equals ``answer`` under math-verify (lenient), else 0."""
    return _verify("math", completions, answer)


def math_strict(prompts, completions, answer, **_) -> list[float]:
    """As `math`, counting only equal values (``0.1000001`` is not 0.1)."""
    return _verify("math", completions, answer, strict=True)


def integer(prompts, completions, answer, **_) -> list[float]:
    """1 when the last ``\\boxed{}`` is exactly the integer ``answer``."""
    return _verify("integer", completions, answer)


def exact(prompts, completions, answer, **_) -> list[float]:
    """1 when the extracted answer equals ``answer`` after whitespace/case folding."""
    return _verify("exact", completions, answer)


def choice(prompts, completions, answer, **_) -> list[float]:
    """1 when the chosen letter equals ``answer``'s."""
    return _verify("choice", completions, answer)


def countdown(prompts, completions, answer, **_) -> list[float]:
    """1 when the boxed expression reaches ``answer``'s target (``"22 from 3 5 7 with +*"``) from its
    numbers, each at most once, with its operations (`upt_jax.rewards.countdown`)."""
    return _verify("countdown", completions, answer)


def format(prompts, completions, **_) -> list[float]:  # noqa: A001 -- the built-in's name
    """1 when the completion holds a complete ``\\boxed{}``."""
    from upt_jax.rewards import verifiers

    return [float(verifiers.verify_format(c).score) for c in completions]


BUILTIN: dict[str, RewardFn] = {f.__name__: f for f in (math, math_strict, integer, exact, choice, countdown, format)}


# ----------------------------------------------------------------------------- resolving
def _import(module: str, where: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        if e.name != module.split(".")[0] or cwd in sys.path:
            raise ImportError(f"{where}: cannot import module {module!r} ({e})") from e
        sys.path.append(cwd)  # `upt` (a console script) does not put the working directory on sys.path
        try:
            return importlib.import_module(module)
        except ImportError as e2:
            raise ImportError(f"{where}: cannot import module {module!r} from sys.path or {cwd} ({e2})") from e2


def resolve(spec: str | RewardFn, where: str = "reward.functions") -> tuple[str, RewardFn]:
    """``(name, callable)`` of a reward: a built-in name (`BUILTIN`), ``"module:function"`` (the
    module imported), or a callable (named by its ``__name__``)."""
    if callable(spec):
        return getattr(spec, "__name__", type(spec).__name__), spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"{where}: a reward is a built-in name ({', '.join(BUILTIN)}), 'module:function' or a "
            f"callable, not {spec!r}"
        )
    if ":" not in spec:
        if spec not in BUILTIN:
            raise ValueError(f"{where}: unknown reward {spec!r}; built-in: {', '.join(BUILTIN)}, or 'module:function'")
        return spec, BUILTIN[spec]
    module, _, attr = spec.partition(":")
    fn = _import(module, f"{where}={spec!r}")
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ValueError(f"{where}={spec!r}: module {module!r} has no {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(f"{where}={spec!r}: {attr!r} is not callable")
    return attr.rsplit(".", 1)[-1], fn


# ----------------------------------------------------------------------------- shipping to workers
@dataclasses.dataclass(frozen=True)
class _Ref:
    """A reward function as a worker gets it: by import (``module``, ``qualname``, ``path``: a
    directory for the worker's ``sys.path``); ``local``: a function that cannot be imported
    (notebook, ``__main__``, lambda, closure), called in this process instead (never pickled)."""

    module: str = ""
    qualname: str = ""
    path: str = ""
    local: Any = dataclasses.field(default=None, compare=False)


def _importable(fn) -> bool:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:  # notebooks, scripts, lambdas, closures
        return False
    obj = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj is fn


def _ref(fn) -> _Ref:
    if not _importable(fn):
        return _Ref(local=fn)
    file = getattr(sys.modules[fn.__module__], "__file__", None) or ""
    root = os.path.dirname(os.path.abspath(file))
    for _ in range(fn.__module__.count(".")):  # the directory the top-level package is in
        root = os.path.dirname(root)
    return _Ref(module=fn.__module__, qualname=fn.__qualname__, path=root if file else "")


_LOADED: dict = {}  # in a worker: _Ref → function


def _load(ref: _Ref):
    if ref.local is not None:
        return ref.local
    if ref not in _LOADED:
        if ref.path and ref.path not in sys.path:
            sys.path.append(ref.path)
        fn = importlib.import_module(ref.module)
        for part in ref.qualname.split("."):
            fn = getattr(fn, part)
        _LOADED[ref] = fn
    return _LOADED[ref]


def _call_in_process(args: Sequence[tuple], timeout_s: float) -> list:
    """`call_one` on each of ``args`` in this process, each on a daemon thread given ``timeout_s``:
    the value, or ``Reward(0, "timeout" | "error")`` as the worker pool reports them (a timed-out
    thread is abandoned, not killed)."""
    import threading

    from upt_jax.rewards.types import Reward

    out = []
    for a in args:
        box: dict = {}

        def run(a=a, box=box):
            try:
                box["value"] = call_one(*a)
            except Exception as e:  # noqa: BLE001 -- reported as the pool reports a worker's exception
                box["error"] = type(e).__name__

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(timeout_s)
        if thread.is_alive():
            out.append(Reward(0.0, "timeout"))
        elif "error" in box:
            out.append(Reward(0.0, "error", detail=box["error"]))
        else:
            out.append(box["value"])
    return out


def call_one(ref: _Ref, prompt, completion: str, columns: Mapping[str, Any]) -> float:
    """Runs in a worker: the reward of one rollout, ``fn([prompt], [completion], **{k: [v]})``,
    checked to be one finite number (``TypeError`` / ``ValueError`` otherwise)."""
    out = _load(ref)([prompt], [completion], **{k: [v] for k, v in columns.items()})
    if isinstance(out, np.ndarray):
        out = out.tolist()
    if not isinstance(out, (list, tuple)) or len(out) != 1:
        raise TypeError("a reward function returns a list with one number per completion")
    value = out[0]
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise TypeError(f"a reward must be a number, not {type(value).__name__}")
    if not np.isfinite(float(value)):
        raise ValueError("a reward must be finite")
    return float(value)


def row_columns(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a reward function receives of a dataset record: ``answer`` and the row's other columns
    (``record["columns"]`` for a file row; the other fields of a synthetic record)."""
    cols = record.get("columns")
    if cols is None:
        cols = {k: v for k, v in record.items() if k not in _NOT_COLUMNS}
    return dict(cols, answer=record.get("answer"))


def prompt_of(record: Mapping[str, Any]):
    """The prompt a reward function receives: the chat prompt of a chat row, else the question."""
    return record.get("prompt_messages") or record.get("question")


# ----------------------------------------------------------------------------- the batch scorer
class RewardFunctions:
    """Weighted reward functions scored in a time-limited worker pool.

    Args:
      functions: each a built-in name, ``"module:function"`` or a callable (see `resolve`).
      weights: one per function (default: all 1).
      timeout_s: the limit of one call (one rollout, one function).
      num_workers: pool size (default ``min(4, cpu_count)``).
      pool: share an existing `VerifierPool` (not closed by `close`).
    """

    def __init__(
        self,
        functions: Sequence[str | RewardFn],
        weights: Sequence[float] | None = None,
        *,
        timeout_s: float = 5.0,
        num_workers: int | None = None,
        pool=None,
        where: str = "reward.functions",
    ):
        if not functions:
            raise ValueError(f"{where}: no reward function")
        resolved = [resolve(f, where) for f in functions]
        names = [n for n, _ in resolved]
        self.names = [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]
        self.weights = [1.0] * len(resolved) if weights is None or len(weights) == 0 else [float(w) for w in weights]
        if len(self.weights) != len(resolved) or not all(np.isfinite(self.weights)):
            raise ValueError(
                f"{where}: {len(resolved)} functions but weights {list(weights or [])}; give one finite "
                "weight per function (reward.weights)"
            )
        self._refs = [_ref(fn) for _, fn in resolved]
        self.timeout_s = float(timeout_s)
        self._pool, self._own_pool = pool, pool is None
        self.num_workers = num_workers
        self._sums = collections.Counter()
        self._counts = collections.Counter()

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

    def per_function(
        self, prompts: Sequence[Any], completions: Sequence[str], records: Sequence[Mapping[str, Any]]
    ) -> dict[str, np.ndarray]:
        """``{name: scores [B]}`` of every function (failed calls 0, counted)."""
        from upt_jax.rewards.types import Reward

        if not len(prompts) == len(completions) == len(records):
            raise ValueError(f"{len(prompts)} prompts, {len(completions)} completions, {len(records)} records")
        columns = [row_columns(r) for r in records]
        keys = sorted({k for c in columns for k in c})
        columns = [{k: c.get(k) for k in keys} for c in columns]
        out = {}
        for name, ref in zip(self.names, self._refs):
            args = [(ref, p, c, col) for p, c, col in zip(prompts, completions, columns)]
            results = (
                _call_in_process(args, self.timeout_s)
                if ref.local is not None
                else self.pool.map(call_one, args, timeout_s=self.timeout_s)
            )
            scores = np.zeros(len(results), np.float32)
            for i, r in enumerate(results):
                if isinstance(r, Reward):  # timeout, worker_died, error (the exception's type in detail)
                    self._counts[f"{name}/{r.reason}"] += 1
                else:
                    scores[i] = r
            self._sums[name] += float(scores.sum())
            self._counts[name] += len(scores)
            out[name] = scores
        return out

    def scores(
        self, prompts: Sequence[Any], completions: Sequence[str], records: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        """``Σ_i w_i · f_i`` per completion, float32 ``[B]``."""
        parts = self.per_function(prompts, completions, records)
        total = np.zeros(len(completions), np.float32)
        for w, name in zip(self.weights, self.names):
            total += np.float32(w) * parts[name]
        return total

    def metrics(self, prefix: str = "reward/") -> dict[str, float]:
        """Since the last call: ``reward/<name>`` (mean score) and ``reward/<name>/<failure>``
        (counts of timeout, error, worker_died); then reset."""
        out = {f"{prefix}{n}": self._sums[n] / self._counts[n] for n in self.names if self._counts[n]}
        out.update({f"{prefix}{k}": float(v) for k, v in sorted(self._counts.items()) if "/" in k})
        self._sums.clear()
        self._counts.clear()
        return out

    def close(self) -> None:
        if self._pool is not None and self._own_pool:
            self._pool.close()
        self._pool = None

    def __enter__(self) -> "RewardFunctions":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
