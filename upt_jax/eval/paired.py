"""Paired differences against a base model, with bootstrap standard errors.

An arm trained from a base model is compared with that base on the *same* questions: per question
``q``, ``d_q = mean_s acc_s(q) − acc_base(q)``, where ``acc_s(q)`` is the arm's accuracy on ``q``
(correct samples / samples) for training seed ``s`` and ``acc_base(q)`` the base model's. The
effect is ``Δ = mean_q d_q``. Pairing removes the questions' difficulty from the noise: an
unpaired difference of two accuracies on 64 questions at 50 % carries about ±9 points of
question noise, the paired one only what the training changed.

The standard error comes from a two-level bootstrap: resample the training seeds (the arm's
source of run-to-run noise) and, independently, the questions, and recompute ``Δ``; the SE is the
standard deviation of the replicates. With one seed only the questions are resampled (and the
SE says nothing about seed-to-seed variation: `PairedDifference.n_seeds` tells).

    from upt_jax.eval.paired import paired_difference
    d = paired_difference(base_result, [arm_seed0, arm_seed1, arm_seed2])   # SuiteResults
    print(f"{100 * d.delta:+.1f} ± {100 * d.se:.1f} points")
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

__all__ = ["PairedDifference", "paired_difference", "accuracy_by_id"]


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """``delta``: mean over questions of (arm − base) accuracy (a fraction; × 100 for points);
    ``se``: its bootstrap standard error; ``ci95``: the bootstrap 2.5 / 97.5 percentiles;
    ``base``, ``arm``: the two mean accuracies on the paired questions; ``n_questions``,
    ``n_seeds``: what was paired and resampled."""

    delta: float
    se: float
    ci95: tuple[float, float]
    base: float
    arm: float
    n_questions: int
    n_seeds: int

    @property
    def z(self) -> float:
        """``delta / se`` (inf when se is 0 and delta is not)."""
        if self.se > 0:
            return self.delta / self.se
        return 0.0 if self.delta == 0 else float("inf") * np.sign(self.delta)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["ci95"] = list(self.ci95)
        d["z"] = self.z
        return d


def accuracy_by_id(result) -> dict[str, float]:
    """``{record id: correct samples / k}`` of a `upt_jax.eval.evaluate.SuiteResult` (or its dict)."""
    r = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    k = int(r["k"])
    return {str(i): c / k for i, c in zip(r["ids"], r["correct_counts"])}


def _as_acc(x) -> dict[str, float]:
    return dict(x) if isinstance(x, Mapping) and "correct_counts" not in x else accuracy_by_id(x)


def paired_difference(base, arms: Sequence, *, n_boot: int = 2000, seed: int = 0) -> PairedDifference:
    """The paired difference of ``arms`` (one result per training seed) against ``base``.

    Args:
      base: the base model's result: a ``SuiteResult``, its dict, or ``{id: accuracy}``; or a list
        of them, one per training seed of another arm (arm against arm, e.g. HPT against GRPO:
        the bootstrap then resamples the base's seeds too, independently of the arm's).
      arms: the arm's results, one per training seed, same kinds.
      n_boot: bootstrap replicates.
      seed: the bootstrap's random seed.
    Returns:
      a `PairedDifference` over the questions every result holds (raises if none); its
      ``n_seeds`` counts the arm's seeds.
    """
    bases = [_as_acc(x) for x in base] if isinstance(base, (list, tuple)) else [_as_acc(base)]
    a = [_as_acc(x) for x in arms]
    if not a or not bases:
        raise ValueError("paired_difference: no arm results" if not a else "paired_difference: no base results")
    ids = sorted(set(bases[0]).intersection(*bases[1:], *a))
    if not ids:
        raise ValueError("paired_difference: the base and the arms share no question id")
    base_acc = np.asarray([[b[i] for i in ids] for b in bases], np.float64)  # [Sb, Q]
    arm_acc = np.asarray([[x[i] for i in ids] for x in a], np.float64)  # [S, Q]
    (s, q), sb = arm_acc.shape, base_acc.shape[0]
    rng = np.random.default_rng(seed)
    draw = lambda n: rng.integers(0, n, size=(n_boot, n)) if n > 1 else np.zeros((n_boot, 1), np.int64)  # noqa: E731
    seeds, questions = draw(s), rng.integers(0, q, size=(n_boot, q))
    base_seeds = draw(sb)
    # replicate r: over resampled questions, the mean of the arm's resampled seeds minus the base's
    reps = np.concatenate(
        [
            arm_acc[seeds[c, :, None], questions[c, None, :]].mean(axis=(1, 2))
            - base_acc[base_seeds[c, :, None], questions[c, None, :]].mean(axis=(1, 2))
            for c in np.array_split(np.arange(n_boot), max(1, n_boot * max(s, sb) * q // 4_000_000))
        ]
    )
    lo, hi = np.percentile(reps, [2.5, 97.5])
    arm_mean, base_mean = float(arm_acc.mean()), float(base_acc.mean())
    return PairedDifference(
        delta=arm_mean - base_mean,
        se=float(reps.std(ddof=1)),
        ci95=(float(lo), float(hi)),
        base=base_mean,
        arm=arm_mean,
        n_questions=q,
        n_seeds=s,
    )
