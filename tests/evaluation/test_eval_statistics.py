"""Statistics against scipy and the reference vector of reference/metrics.md section 4.2 (tolerance 1e-9 unless the
reference value is printed with fewer digits, then half a unit of its last digit)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from mambaseg.evaluation import (
    average_ranks,
    bootstrap_ci,
    friedman,
    holm,
    nemenyi_cd,
    paired_bootstrap_mean_diff_ci,
    paired_wilcoxon,
    pairwise_wilcoxon,
)

A = np.array([0.91, 0.88, 0.93, 0.85, 0.90, 0.87, 0.92, 0.89, 0.86, 0.94])
B = np.array([0.89, 0.87, 0.92, 0.86, 0.88, 0.85, 0.91, 0.88, 0.84, 0.93])
TOL = 1e-9


def test_reference_vector_wilcoxon():
    r = paired_wilcoxon(A, B)
    assert r.pvalue == pytest.approx(14 / 1024, abs=TOL)
    assert r.mean_diff == pytest.approx(0.012, abs=TOL)
    assert r.statistic == 3.5  # rounded differences keep the genuine ties (4.0 without rounding)
    assert paired_wilcoxon(A, B, decimals=None).statistic == 4.0
    assert paired_wilcoxon(A, B, alternative="greater").pvalue == pytest.approx(0.0068359375, abs=TOL)


def test_wilcoxon_zero_difference():
    x = [0.9, 0.8, 0.7, 0.6]
    y = [0.9, 0.7, 0.75, 0.5]
    r = paired_wilcoxon(x, y)
    assert r.pvalue == pytest.approx(0.5, abs=TOL) and r.n_nonzero == 3
    assert r.pvalue == pytest.approx(sps.wilcoxon(x, y, zero_method="zsplit").pvalue, abs=TOL)
    same = paired_wilcoxon(x, x)
    assert same.pvalue == 1.0 and same.n_nonzero == 0


def test_reference_vector_paired_bootstrap():
    ci = paired_bootstrap_mean_diff_ci(A, B, n_resamples=10000, seed=0)
    assert ci.method == "percentile" and ci.estimate == pytest.approx(0.012, abs=TOL)
    assert (ci.low, ci.high) == (pytest.approx(0.006, abs=5e-4), pytest.approx(0.017, abs=5e-4))
    ref = sps.bootstrap(
        (A, B), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True, n_resamples=10000,
        method="percentile", rng=np.random.default_rng(0),
    ).confidence_interval
    assert ci.low == pytest.approx(ref.low, abs=TOL) and ci.high == pytest.approx(ref.high, abs=TOL)


@pytest.mark.parametrize("stat", [np.mean, np.median])
def test_bootstrap_matches_scipy_and_is_deterministic(stat):
    v = np.random.default_rng(5).random(23)
    ci = bootstrap_ci(v, stat, n_resamples=2000, confidence=0.9, seed=11)
    ref = sps.bootstrap(
        (v,), stat, n_resamples=2000, confidence_level=0.9, method="percentile", rng=np.random.default_rng(11)
    ).confidence_interval
    assert ci.low == pytest.approx(ref.low, abs=TOL) and ci.high == pytest.approx(ref.high, abs=TOL)
    assert bootstrap_ci(v, stat, n_resamples=2000, confidence=0.9, seed=11) == ci
    # a statistic without an `axis` argument falls back to a loop and gives the same interval
    assert bootstrap_ci(v, lambda x: float(stat(x)), n_resamples=2000, confidence=0.9, seed=11)[1:3] == ci[1:3]


def test_reference_vector_friedman_and_ranks():
    table = np.c_[A, B, B - 0.01]
    r = friedman(table)
    ref = sps.friedmanchisquare(A, B, B - 0.01)
    assert r.statistic == pytest.approx(ref.statistic, abs=TOL)
    assert r.pvalue == pytest.approx(ref.pvalue, abs=TOL)
    assert r.statistic == pytest.approx(16.769, abs=5e-4)
    assert r.pvalue == pytest.approx(2.28e-4, abs=5e-7)
    np.testing.assert_allclose(r.average_ranks, average_ranks(table), atol=TOL)
    assert r.average_ranks[0] < r.average_ranks[1] < r.average_ranks[2]  # rank 1 = best (highest Dice)
    assert average_ranks(table, higher_is_better=False)[2] < average_ranks(table, higher_is_better=False)[0]
    assert average_ranks([[1.0, 1.0, 0.0], [0.0, 1.0, 0.5]]).tolist() == [2.25, 1.25, 2.5]  # ties averaged


def test_holm():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02], atol=TOL)
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0], atol=TOL)
    assert holm([]).size == 0
    with pytest.raises(ValueError):
        holm([0.1, 1.5])


def test_pairwise_wilcoxon_holm():
    # continuous values without ties: scipy's exact path (the tied reference vector needs a slower permutation)
    table = np.random.default_rng(3).random((12, 3)) + [0.0, 0.05, 0.1]
    rows = pairwise_wilcoxon(table, ["a", "b", "c"])
    assert [(r["model_a"], r["model_b"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    raw = [paired_wilcoxon(table[:, i], table[:, j]).pvalue for i, j in ((0, 1), (0, 2), (1, 2))]
    np.testing.assert_allclose([r["pvalue"] for r in rows], raw, atol=TOL)
    np.testing.assert_allclose([r["pvalue_holm"] for r in rows], holm(raw), atol=TOL)


def test_nemenyi_cd():
    # q_0.05 from Demsar (2006) Table 5a: k=2..5 -> 1.960, 2.343, 2.569, 2.728; k=10 -> 3.164
    for k, q in ((2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728), (10, 3.164)):
        cd = nemenyi_cd(k, 30)
        assert cd / np.sqrt(k * (k + 1) / (6 * 30)) == pytest.approx(q, abs=1e-3)  # table truncates


def test_input_errors():
    with pytest.raises(ValueError, match="same length"):
        paired_wilcoxon([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap_mean_diff_ci([1, np.nan], [1, 2])
    with pytest.raises(ValueError, match="n_models"):
        friedman(np.c_[A, B])
