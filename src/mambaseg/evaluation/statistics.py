"""Statistics for comparing segmentation models on the same cases (pure numpy / scipy, deterministic given a seed).

Protocol (DESIGN.md "Comparison protocol", reference/metrics.md section 4.2):

* Inputs are **paired per-case values** (same cases, same order, one value per case and model, e.g. per-case Dice
  of one class or a per-case mean over classes). Missing values must be handled before (see ``aggregate``).
* **Two models**: :func:`paired_wilcoxon` (Wilcoxon signed-rank on the per-case differences) plus
  :func:`paired_bootstrap_mean_diff_ci` (percentile bootstrap CI of the mean difference).
* **More than two models**: :func:`friedman` on a ``(n_cases, n_models)`` table, then :func:`pairwise_wilcoxon`
  with :func:`holm` correction; :func:`average_ranks` and :func:`nemenyi_cd` for a critical-difference diagram.

Choices:

* Bootstrap: **percentile method** (the CI is the ``(1-c)/2`` and ``(1+c)/2`` quantiles, linear interpolation, of the
  resampled statistic). Resampling draws indices with ``numpy.random.default_rng(seed).integers(0, n,
  (n_resamples, n))``, the same draw as ``scipy.stats.bootstrap(..., rng=default_rng(seed), method="percentile")``,
  so results agree with scipy for the same seed. A paired bootstrap resamples *cases* (the same indices for both
  models), i.e. it bootstraps the per-case differences.
* Wilcoxon: ``scipy.stats.wilcoxon`` on the differences ``a - b`` **rounded to ``decimals=6``** first (otherwise
  floating-point noise breaks genuine ties; metrics.md 4.2), ``zero_method="wilcox"`` (zero differences are
  dropped, scipy's default; metrics.md's vector gives the same p for ``"zsplit"``), ``correction=False`` (no continuity
  correction), ``method="auto"`` (scipy 1.17: exact null distribution when n <= 50 without ties or zeros; an
  exhaustive sign-flip permutation test when there are ties or zeros and n <= 13; the normal approximation
  otherwise; all deterministic), ``alternative="two-sided"`` by default. If every difference is zero the p-value
  is 1.0 (no evidence of a difference) instead of scipy's error.
* Holm: step-down adjusted p-values ``p_(i) * (m - i + 1)``, made monotone and capped at 1.
* Ranks: rank 1 = best; ties get the average rank (``scipy.stats.rankdata``).
* Nemenyi critical difference (Demsar 2006, JMLR 7:1-30): ``CD = q_alpha * sqrt(k (k + 1) / (6 N))`` with
  ``q_alpha = studentized_range.ppf(1 - alpha, k, inf) / sqrt(2)`` computed by scipy instead of a printed table
  (gives 1.960, 2.343, 2.569, 2.728 for k = 2..5 at alpha = 0.05, Demsar's Table 5a).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import stats as sps

__all__ = [
    "BootstrapCI",
    "FriedmanResult",
    "WilcoxonResult",
    "average_ranks",
    "bootstrap_ci",
    "friedman",
    "holm",
    "nemenyi_cd",
    "paired_bootstrap_mean_diff_ci",
    "paired_wilcoxon",
    "pairwise_wilcoxon",
]


class BootstrapCI(NamedTuple):
    """Result of a percentile bootstrap.

    Attributes:
        estimate: The statistic on the original sample.
        low: Lower CI bound.
        high: Upper CI bound.
        confidence: Confidence level, e.g. 0.95.
        n_resamples: Number of bootstrap resamples.
        method: Always ``"percentile"``.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    method: str = "percentile"


class WilcoxonResult(NamedTuple):
    """Result of :func:`paired_wilcoxon`.

    Attributes:
        statistic: scipy's statistic (two-sided: min(W+, W-); one-sided: W+).
        pvalue: p-value.
        n: Number of pairs.
        n_nonzero: Number of non-zero (rounded) differences used by ``zero_method="wilcox"``.
        mean_diff: Mean of ``a - b``.
        median_diff: Median of ``a - b``.
        alternative: ``"two-sided"``, ``"greater"`` (a > b) or ``"less"``.
        signed_rank_sum: ``W+ - W-``, the sum of the signed ranks of the non-zero differences: positive when the
            ranks favour larger ``a``. It gives the direction the test rejects in; the mean difference can point
            the other way (many small differences one way, a few large ones the other).
    """

    statistic: float
    pvalue: float
    n: int
    n_nonzero: int
    mean_diff: float
    median_diff: float
    alternative: str
    signed_rank_sum: float = 0.0


class FriedmanResult(NamedTuple):
    """Result of :func:`friedman`.

    Attributes:
        statistic: Friedman chi-square statistic.
        pvalue: p-value.
        average_ranks: ``(k,)`` average rank per model (1 = best).
    """

    statistic: float
    pvalue: float
    average_ranks: np.ndarray


def _as_1d(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per case), got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{name} is empty.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; handle missing / empty cases before testing.")
    return arr


def _as_pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must be paired (same length), got {x.size} and {y.size}.")
    return x, y


def _as_table(table: Any, min_models: int = 2) -> np.ndarray:
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] < min_models or t.shape[0] < 2:
        raise ValueError(
            f"table must have shape (n_cases >= 2, n_models >= {min_models}), got {t.shape}."
        )
    if not np.all(np.isfinite(t)):
        raise ValueError("table contains NaN or inf; handle missing / empty cases first.")
    return t


def bootstrap_ci(
    values: Any,
    stat: Callable[..., Any] = np.mean,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> BootstrapCI:
    """Percentile bootstrap confidence interval of a statistic of one sample.

    Args:
        values: ``(n,)`` per-case values.
        stat: Statistic; called as ``stat(x, axis=-1)`` on a ``(n_resamples, n)`` array when it accepts ``axis``
            (numpy reductions do), otherwise once per resample on ``(n,)`` arrays.
        n_resamples: Number of resamples.
        confidence: Confidence level in (0, 1).
        seed: Seed of ``numpy.random.default_rng``; equal seeds give equal intervals.

    Returns:
        :class:`BootstrapCI` with the statistic and its percentile-method interval.
    """
    x = _as_1d(values, "values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}.")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, (int(n_resamples), x.size))
    resampled = x[idx]
    try:
        theta = np.asarray(stat(resampled, axis=-1), dtype=np.float64)
    except TypeError:
        theta = np.array([float(stat(row)) for row in resampled])
    if theta.shape != (int(n_resamples),):
        raise ValueError(f"stat must return one number per sample, got shape {theta.shape} for all resamples.")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(theta, [100 * alpha, 100 * (1 - alpha)])
    return BootstrapCI(float(stat(x)), float(low), float(high), float(confidence), int(n_resamples))


def paired_bootstrap_mean_diff_ci(
    a: Any,
    b: Any,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> BootstrapCI:
    """Paired percentile bootstrap CI of the mean difference ``mean(a - b)``.

    Cases are resampled with replacement and the same indices are used for both models. Equal to
    ``scipy.stats.bootstrap((a, b), lambda x, y: mean(x - y), paired=True, method="percentile",
    rng=default_rng(seed))``.

    Args:
        a: ``(n,)`` per-case values of model A.
        b: ``(n,)`` per-case values of model B (same cases, same order).
        n_resamples: Number of resamples.
        confidence: Confidence level in (0, 1).
        seed: Seed of ``numpy.random.default_rng``.

    Returns:
        :class:`BootstrapCI`; the difference is significant at ``1 - confidence`` when the interval excludes 0.
    """
    x, y = _as_pair(a, b)
    return bootstrap_ci(x - y, np.mean, n_resamples=n_resamples, confidence=confidence, seed=seed)


def paired_wilcoxon(
    a: Any,
    b: Any,
    *,
    alternative: str = "two-sided",
    decimals: int | None = 6,
) -> WilcoxonResult:
    """Wilcoxon signed-rank test on paired per-case values.

    Uses ``scipy.stats.wilcoxon(d, zero_method="wilcox", correction=False, alternative=alternative,
    method="auto")`` on ``d = round(a - b, decimals)``.

    Args:
        a: ``(n,)`` per-case values of model A.
        b: ``(n,)`` per-case values of model B (same cases, same order).
        alternative: ``"two-sided"``, ``"greater"`` (A tends to be larger) or ``"less"``.
        decimals: Round the differences to this many decimals before ranking so floating-point noise does not
            break ties (None: no rounding).

    Returns:
        :class:`WilcoxonResult`. With no non-zero difference the p-value is 1.0 and the statistic 0.
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}.")
    x, y = _as_pair(a, b)
    d = x - y
    if decimals is not None:
        d = np.round(d, decimals)
    n_nonzero = int(np.count_nonzero(d))
    mean_diff, median_diff = float(np.mean(x - y)), float(np.median(x - y))
    if n_nonzero == 0:
        return WilcoxonResult(0.0, 1.0, int(d.size), 0, mean_diff, median_diff, alternative)
    res = sps.wilcoxon(d, zero_method="wilcox", correction=False, alternative=alternative, method="auto")
    nz = d[d != 0]
    signed_rank_sum = float(np.sum(np.sign(nz) * sps.rankdata(np.abs(nz))))
    return WilcoxonResult(
        float(res.statistic), float(res.pvalue), int(d.size), n_nonzero, mean_diff, median_diff, alternative,
        signed_rank_sum,
    )


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values.

    Args:
        pvalues: ``(m,)`` raw p-values.

    Returns:
        ``(m,)`` adjusted p-values in the input order; reject hypothesis i at level alpha when ``adj[i] <= alpha``.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be 1-D, got shape {p.shape}.")
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("pvalues must be in [0, 1] and not NaN.")
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m, dtype=np.float64)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def average_ranks(table: Any, *, higher_is_better: bool = True) -> np.ndarray:
    """Average rank of each model over cases (1 = best, ties averaged), for a critical-difference diagram.

    Args:
        table: ``(n_cases, n_models)`` per-case values.
        higher_is_better: True for Dice/NSD, False for distances (HD95, ASSD).

    Returns:
        ``(n_models,)`` mean rank.
    """
    t = _as_table(table)
    ranks = sps.rankdata(-t if higher_is_better else t, axis=1)
    return ranks.mean(axis=0)


def friedman(table: Any, *, higher_is_better: bool = True) -> FriedmanResult:
    """Friedman test that all models perform alike (``scipy.stats.friedmanchisquare`` over the columns).

    Args:
        table: ``(n_cases, n_models)`` per-case values, ``n_models >= 3``.
        higher_is_better: Direction used for the reported average ranks (the test itself is symmetric).

    Returns:
        :class:`FriedmanResult` with the chi-square statistic, p-value and average ranks.
    """
    t = _as_table(table, min_models=3)
    res = sps.friedmanchisquare(*t.T)
    return FriedmanResult(float(res.statistic), float(res.pvalue), average_ranks(t, higher_is_better=higher_is_better))


def pairwise_wilcoxon(
    table: Any,
    names: Sequence[str] | None = None,
    *,
    decimals: int | None = 6,
) -> list[dict[str, Any]]:
    """Two-sided paired Wilcoxon test for every pair of models, Holm-corrected over all pairs.

    Args:
        table: ``(n_cases, n_models)`` per-case values.
        names: Model names (default ``"0"``, ``"1"``, ...).
        decimals: Rounding of differences, as in :func:`paired_wilcoxon`.

    Returns:
        One dict per pair ``(i < j)``: ``model_a``, ``model_b``, ``mean_diff`` (a - b), ``median_diff``,
        ``statistic``, ``pvalue``, ``pvalue_holm``.
    """
    t = _as_table(table)
    k = t.shape[1]
    names = [str(i) for i in range(k)] if names is None else [str(n) for n in names]
    if len(names) != k:
        raise ValueError(f"got {len(names)} names for {k} models.")
    out: list[dict[str, Any]] = []
    for i, j in itertools.combinations(range(k), 2):
        r = paired_wilcoxon(t[:, i], t[:, j], decimals=decimals)
        out.append(
            {
                "model_a": names[i],
                "model_b": names[j],
                "mean_diff": r.mean_diff,
                "median_diff": r.median_diff,
                "statistic": r.statistic,
                "pvalue": r.pvalue,
            }
        )
    adjusted = holm([row["pvalue"] for row in out])
    for row, p in zip(out, adjusted):
        row["pvalue_holm"] = float(p)
    return out


def nemenyi_cd(n_models: int, n_cases: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks (Demsar 2006).

    Two models differ significantly when their average ranks differ by more than the CD.

    Args:
        n_models: Number of models ``k >= 2``.
        n_cases: Number of cases (or data sets) ``N >= 1`` the ranks are averaged over.
        alpha: Family-wise significance level.

    Returns:
        ``q_alpha * sqrt(k (k + 1) / (6 N))`` with ``q_alpha = studentized_range.ppf(1 - alpha, k, inf) / sqrt(2)``.
    """
    if n_models < 2 or n_cases < 1:
        raise ValueError(f"need n_models >= 2 and n_cases >= 1, got {n_models} and {n_cases}.")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}.")
    q = float(sps.studentized_range.ppf(1 - alpha, n_models, np.inf)) / math.sqrt(2)
    return q * math.sqrt(n_models * (n_models + 1) / (6.0 * n_cases))
