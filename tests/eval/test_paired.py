"""Paired differences with bootstrap SEs: exact on known shifts, the bootstrap SE agrees with the
analytic one, pairing removes question difficulty from the noise, and SuiteResults pair by id."""

import numpy as np
import pytest

from upt_jax.eval.evaluate import SuiteResult
from upt_jax.eval.paired import accuracy_by_id, paired_difference


def _result(ids, counts, k):
    return SuiteResult(
        name="t",
        k=k,
        num_questions=len(ids),
        avg_at_k=float(np.mean(counts)) / k,
        pass_at_k={},
        mean_response_length=0.0,
        truncated_frac=0.0,
        reasons={},
        correct_counts=list(counts),
        ids=list(ids),
    )


def test_identical_and_shifted_arms():
    base = {f"q{i}": (i % 5) / 4 for i in range(40)}
    same = paired_difference(base, [base, base])
    assert same.delta == 0.0 and same.se == 0.0 and same.n_questions == 40 and same.n_seeds == 2
    shifted = {k: v + 0.1 for k, v in base.items()}
    d = paired_difference(base, [shifted])
    assert d.delta == pytest.approx(0.1) and d.se == pytest.approx(0.0, abs=1e-12)
    assert d.arm - d.base == pytest.approx(0.1)


def test_bootstrap_se_matches_the_analytic_se_for_one_seed():
    rng = np.random.default_rng(0)
    q = 400
    p = rng.uniform(0, 1, q)
    base = {f"q{i}": rng.binomial(8, p[i]) / 8 for i in range(q)}
    arm = {f"q{i}": rng.binomial(8, min(1, p[i] + 0.05)) / 8 for i in range(q)}
    d = paired_difference(base, [arm], n_boot=4000)
    diff = np.asarray([arm[k] - base[k] for k in base])
    assert d.delta == pytest.approx(diff.mean())
    assert d.se == pytest.approx(diff.std(ddof=1) / np.sqrt(q), rel=0.1)
    # pairing: the unpaired SE (two independent means) is much larger on questions this varied
    unpaired = np.sqrt(np.var(list(arm.values()), ddof=1) / q + np.var(list(base.values()), ddof=1) / q)
    assert d.se < 0.6 * unpaired
    assert d.ci95[0] < d.delta < d.ci95[1]


def test_seed_to_seed_variation_enters_the_se():
    base = {f"q{i}": 0.5 for i in range(100)}
    arms = [{k: 0.5 + s for k in base} for s in (-0.1, 0.0, 0.1)]  # seeds disagree, questions do not
    d = paired_difference(base, arms)
    assert d.delta == pytest.approx(0.0, abs=1e-12) and d.se > 0.03


def test_suite_results_pair_by_id_and_ignore_unshared_questions():
    base = _result(["a", "b", "c"], [0, 4, 2], k=4)
    arm = _result(["c", "b", "a", "z"], [4, 4, 2, 0], k=4)  # another order, one extra question
    assert accuracy_by_id(arm) == {"c": 1.0, "b": 1.0, "a": 0.5, "z": 0.0}
    d = paired_difference(base, [arm, arm.to_dict()])
    assert d.n_questions == 3 and d.delta == pytest.approx((0.5 + 0 + 0.5) / 3)
    with pytest.raises(ValueError, match="share no question"):
        paired_difference(_result(["x"], [1], 1), [arm])


def test_arm_against_arm_resamples_both_arms_seeds():
    """HPT against GRPO: the 'base' is another arm's seeds, whose seed-to-seed noise enters the SE."""
    rng = np.random.default_rng(1)
    qs = [f"q{i}" for i in range(80)]
    other = [{k: 0.5 + s for k in qs} for s in (-0.1, 0.0, 0.1)]  # its seeds disagree
    arm = [{k: float(rng.uniform(0.55, 0.65)) for k in qs} for _ in range(3)]
    d = paired_difference(other, arm)
    want = np.mean([[a[k] for k in qs] for a in arm]) - 0.5
    assert d.delta == pytest.approx(want) and d.n_seeds == 3
    assert d.se > paired_difference({k: 0.5 for k in qs}, arm).se + 0.02  # the other arm's seeds count
    one = paired_difference([other[1]], arm)  # a one-seed list is the single result
    assert (one.delta, one.se) == pytest.approx(
        (paired_difference(other[1], arm).delta, paired_difference(other[1], arm).se)
    )
