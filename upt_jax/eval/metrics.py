"""Evaluation metrics: the unbiased pass@k estimator, avg@k, and aggregation over seeds.

For one question with ``n`` samples of which ``c`` are correct, the unbiased estimator of
pass@k (the probability that at least one of ``k`` samples drawn without replacement from
the ``n`` is correct; Chen et al. 2021, "Evaluating Large Language Models Trained on Code")
is

    pass@k = 1 − C(n − c, k) / C(n, k)
           = 1 − Π_{i = n−c+1}^{n} (1 − k / i)        (when n − c ≥ k; else 1)

The product form never builds a binomial coefficient, so it is exact to float rounding for
any ``n`` (``C(1000, 500)`` overflows a float64). A benchmark's pass@k is the mean over its
questions. ``avg@k`` is the mean accuracy over the ``k`` samples of every question
(``mean_q c_q / k``), which equals pass@1 computed from the same ``k`` samples.

Aggregation: ``mean_std`` over seeds uses the sample standard deviation (``ddof=1``; 0 for
one seed); ``aggregate_seeds`` does it per suite (tier or benchmark).

Example::

  >>> pass_at_k(n=4, c=1, k=2)        # 1 − C(3,2)/C(4,2) = 1 − 3/6
  0.5
  >>> avg_at_k([[1, 0, 0, 1], [0, 0, 0, 0]])
  0.25
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "pass_at_k",
    "pass_at_k_per_question",
    "mean_pass_at_k",
    "avg_at_k",
    "default_ks",
    "MeanStd",
    "mean_std",
    "aggregate_seeds",
    "group_average",
]


def _check(n: int, c, k: int) -> np.ndarray:
    c = np.asarray(c)
    if not np.issubdtype(c.dtype, np.integer) and not np.all(np.equal(np.mod(c, 1), 0)):
        raise ValueError(f"correct counts must be integers, got {c!r}")
    c = c.astype(np.int64)
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    if np.any(c < 0) or np.any(c > n):
        raise ValueError(f"correct counts must be in [0, n={n}], got {c!r}")
    return c


def _unbiased(n: int, c: int, k: int) -> float:
    if n - c < k:
        return 1.0
    # C(n−c, k)/C(n, k) = Π_{i=n−c+1}^{n} (1 − k/i)
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(1.0 - k / i))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one question with ``c`` correct among ``n`` samples (``1 ≤ k ≤ n``).

    ``1 − C(n−c, k)/C(n, k)``, computed as ``1 − Π_{i=n−c+1}^{n}(1 − k/i)``; exactly 1 when
    ``n − c < k`` (every draw of ``k`` holds a correct sample) and exactly 0 when ``c = 0``.
    """
    c = int(_check(n, c, k))
    return _unbiased(n, c, k)


def pass_at_k_per_question(n: int, correct_counts: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """``[Q]`` pass@k for ``Q`` questions, each with ``n`` samples; ``correct_counts: [Q]``."""
    c = _check(n, correct_counts, k)
    return np.asarray([_unbiased(n, int(x), k) for x in c.reshape(-1)], np.float64).reshape(c.shape)


def mean_pass_at_k(n: int, correct_counts: Sequence[int] | np.ndarray, k: int) -> float:
    """Mean over questions of the unbiased pass@k (NaN for no questions)."""
    per = pass_at_k_per_question(n, correct_counts, k)
    return float(per.mean()) if per.size else float("nan")


def avg_at_k(correct: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Mean accuracy over the ``k`` samples of each question, averaged over questions.

    Args:
      correct: ``[Q, k]`` 0/1 (or scores in [0, 1]) of every sample.
    Returns:
      ``mean_q mean_j correct[q, j]`` (NaN for no questions).
    """
    x = np.asarray(correct, np.float64)
    if x.ndim != 2:
        raise ValueError(f"avg_at_k expects a [Q, k] array, got shape {x.shape}")
    return float(x.mean()) if x.size else float("nan")


def default_ks(k: int) -> tuple[int, ...]:
    """The pass@j reported for ``k`` samples: powers of two below ``k``, and ``k`` itself."""
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    ks = [1 << i for i in range(k.bit_length()) if (1 << i) < k]
    return tuple(ks + [k])


@dataclasses.dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation of ``n`` values (``std = 0`` for ``n = 1``)."""

    mean: float
    std: float
    n: int

    def format(self, digits: int = 1, scale: float = 1.0) -> str:
        if self.n == 0 or not math.isfinite(self.mean):
            return "–"
        m = f"{self.mean * scale:.{digits}f}"
        return m if self.n == 1 else f"{m} ± {self.std * scale:.{digits}f}"

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n}


def mean_std(values: Iterable[float]) -> MeanStd:
    """``MeanStd`` of the finite-or-not ``values`` (NaN mean for none)."""
    v = np.asarray(list(values), np.float64)
    if v.size == 0:
        return MeanStd(float("nan"), float("nan"), 0)
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return MeanStd(float(v.mean()), std, int(v.size))


def aggregate_seeds(runs: Sequence[Mapping[str, float]]) -> dict[str, MeanStd]:
    """Per suite mean ± std over seeds.

    Args:
      runs: one ``{suite: value}`` per seed (e.g. avg@k per tier). A suite missing from
        some seeds is aggregated over the seeds that have it.
    Returns:
      ``{suite: MeanStd}`` in first-seen order.
    """
    suites = list(dict.fromkeys(s for run in runs for s in run))
    return {s: mean_std(run[s] for run in runs if s in run) for s in suites}


def group_average(runs: Sequence[Mapping[str, float]], suites: Sequence[str]) -> MeanStd:
    """Mean over ``suites`` within each seed, then mean ± std of that over seeds.

    (For the ID / OOD average columns: the spread is that of the seeds' averages, not of the
    suites.) Seeds lacking any of ``suites`` are skipped; no suites or seeds give ``n = 0``.
    """
    if not suites:
        return MeanStd(float("nan"), float("nan"), 0)
    per_seed = [float(np.mean([run[s] for s in suites])) for run in runs if all(s in run for s in suites)]
    return mean_std(per_seed)
