"""pass@k against brute-force enumeration of every k-subset; avg@k; mean ± std over seeds."""

import itertools
import math

import numpy as np
import pytest

from upt_jax.eval import metrics


def brute_pass_at_k(n, c, k):
    """Fraction of the C(n, k) subsets of k samples that hold at least one correct sample."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert metrics.pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)
            # the closed form with binomials, exact rationals
            exact = 1 - math.comb(n - c, k) / math.comb(n, k)
            assert metrics.pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_edge_cases():
    assert metrics.pass_at_k(10, 0, 1) == 0.0
    assert metrics.pass_at_k(10, 0, 10) == 0.0
    assert metrics.pass_at_k(10, 10, 1) == 1.0
    assert metrics.pass_at_k(10, 10, 10) == 1.0
    assert metrics.pass_at_k(10, 1, 10) == 1.0  # k = n: any correct sample is drawn
    assert metrics.pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 = c/n
    assert metrics.pass_at_k(4, 1, 2) == 0.5
    # stable for large n where C(n, k) overflows a float
    with pytest.raises(OverflowError):
        float(math.comb(2000, 1000))
    v = metrics.pass_at_k(2000, 3, 1000)
    assert v == pytest.approx(1 - (1000 * 999 * 998) / (2000 * 1999 * 1998), rel=1e-12)
    for bad in [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5), (0, 0, 1)]:
        with pytest.raises(ValueError):
            metrics.pass_at_k(*bad)


def test_pass_at_k_vectorised_and_monotone_in_k():
    rng = np.random.default_rng(0)
    n = 16
    counts = rng.integers(0, n + 1, size=50)
    per = metrics.pass_at_k_per_question(n, counts, 4)
    assert per.shape == (50,)
    np.testing.assert_allclose(per, [metrics.pass_at_k(n, int(c), 4) for c in counts])
    curve = [metrics.mean_pass_at_k(n, counts, k) for k in range(1, n + 1)]
    assert all(b >= a - 1e-12 for a, b in zip(curve, curve[1:]))
    assert curve[0] == pytest.approx(counts.mean() / n)
    assert curve[-1] == pytest.approx(np.mean(counts > 0))


def test_avg_at_k():
    correct = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    assert metrics.avg_at_k(correct) == pytest.approx(6 / 12)
    # avg@k is pass@1 estimated from the same k samples
    assert metrics.avg_at_k(correct) == pytest.approx(metrics.mean_pass_at_k(4, correct.sum(1), 1))
    assert math.isnan(metrics.avg_at_k(np.zeros((0, 4))))
    with pytest.raises(ValueError):
        metrics.avg_at_k([1, 0, 1])


def test_default_ks():
    assert metrics.default_ks(1) == (1,)
    assert metrics.default_ks(8) == (1, 2, 4, 8)
    assert metrics.default_ks(12) == (1, 2, 4, 8, 12)


def test_mean_std_and_aggregation():
    ms = metrics.mean_std([0.5, 0.7, 0.6])
    assert ms.mean == pytest.approx(0.6) and ms.std == pytest.approx(0.1) and ms.n == 3
    assert ms.format(1, 100) == "60.0 ± 10.0"
    one = metrics.mean_std([0.25])
    assert one.std == 0.0 and one.format(2, 100) == "25.00"
    runs = [{"add_2": 0.5, "add_8": 0.1}, {"add_2": 0.7, "add_8": 0.3}, {"add_2": 0.6}]
    agg = metrics.aggregate_seeds(runs)
    assert list(agg) == ["add_2", "add_8"]
    assert agg["add_2"].mean == pytest.approx(0.6) and agg["add_2"].n == 3
    assert agg["add_8"].mean == pytest.approx(0.2) and agg["add_8"].n == 2
    assert agg["add_8"].std == pytest.approx(np.std([0.1, 0.3], ddof=1))
    # group average: per seed first (seed 3 lacks add_8 and is skipped), then over seeds
    g = metrics.group_average(runs, ["add_2", "add_8"])
    assert g.n == 2 and g.mean == pytest.approx(np.mean([0.3, 0.5]))
    assert g.std == pytest.approx(np.std([0.3, 0.5], ddof=1))
    assert metrics.group_average(runs, []).n == 0
