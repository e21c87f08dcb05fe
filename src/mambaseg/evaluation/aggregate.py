"""Aggregation of per-case, per-class metric rows into a JSON-serialisable summary.

Input rows are the dicts returned by :func:`mambaseg.evaluation.metrics.compute_case_metrics` (one per case and
class), possibly concatenated over many cases. Conventions:

* **Grouping**: rows are grouped by ``label_name`` (classes keep the order of their first appearance).
* **NaN** (not applicable: both masks empty for Dice/IoU/NSD/distances, empty reference for sensitivity, empty
  prediction for precision) is excluded from every statistic and counted in ``n_nan``.
* **inf** distances (HD95, HD, ASSD, MASD when exactly one mask is empty, i.e. a missed or hallucinated structure)
  are replaced by a worst value before aggregation: by default each row's ``worst_distance_mm`` (the image
  diagonal in mm, ``sqrt(sum((shape_i * spacing_i)^2))``), or a fixed ``distance_worst`` passed to
  :func:`summarize`. ``n_substituted`` reports how many values were replaced. Misses therefore make the mean worse,
  never silently better.
* **Statistics** per class and metric: ``mean``, ``median``, ``std`` (sample standard deviation, ``ddof=1``;
  None for fewer than 2 values), ``q1``/``q3`` (25th/75th percentiles, linear interpolation), ``min``, ``max`` and
  ``n`` (number of cases used).
* **Edge-case counts** per class: ``n_cases``, ``n_both_empty``, ``n_ref_empty`` (reference empty, prediction not),
  ``n_pred_empty`` (prediction empty, reference not).
* **Per-image mean Dice vs pooled Dice**: ``metrics.dice.mean`` is the mean over cases of per-case Dice.
  ``pooled_dice`` is computed once from TP, FP, FN summed over all cases, ``2 sum TP / (2 sum TP + sum FP + sum FN)``
  (a "micro" or "global" Dice, like nnU-Net's training-time pseudo Dice). They are different numbers; the keys say
  which is which.
* **Overall**: ``overall.metrics[m].mean_of_class_means`` is the unweighted mean over classes of the per-class means
  (macro average, as nnU-Net's ``foreground_mean``; classes whose mean is undefined are skipped and counted).
* **JSON**: :func:`to_jsonable` turns NaN and +-inf into ``None`` and numpy scalars into Python numbers;
  :func:`summarize` already returns a JSON-ready dict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .metrics import ALL_METRICS, DISTANCE_METRICS

__all__ = ["describe", "pooled_dice", "summarize", "to_jsonable"]


def to_jsonable(obj: Any) -> Any:
    """Recursively convert to JSON-serialisable Python objects.

    NaN and +-inf become ``None``; numpy scalars and arrays become Python numbers and lists; tuples become lists.

    Args:
        obj: Nested dicts / lists / tuples / numbers / numpy objects.
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def describe(values: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """Descriptive statistics of finite values (NaN must already be removed).

    Args:
        values: ``(n,)`` values.

    Returns:
        Dict with ``n``, ``mean``, ``median``, ``std`` (ddof=1), ``q1``, ``q3``, ``min``, ``max``; statistics are
        None when ``n == 0`` (and ``std`` when ``n < 2``).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    n = int(v.size)
    if n == 0:
        return {"n": 0, "mean": None, "median": None, "std": None, "q1": None, "q3": None, "min": None, "max": None}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {
        "n": n,
        "mean": float(v.mean()),
        "median": float(med),
        "std": float(v.std(ddof=1)) if n > 1 else None,
        "q1": float(q1),
        "q3": float(q3),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def _group(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for i, row in enumerate(rows):
        if "label_name" in row:
            key = str(row["label_name"])
        elif "label" in row:
            key = str(row["label"])
        else:
            raise KeyError(f"row {i} has neither 'label_name' nor 'label': {sorted(row)}")
        groups.setdefault(key, []).append(row)
    return groups


def _pooled(rows: Sequence[Mapping[str, Any]]) -> float:
    try:
        tp = sum(int(r["tp"]) for r in rows)
        fp = sum(int(r["fp"]) for r in rows)
        fn = sum(int(r["fn"]) for r in rows)
    except KeyError as err:
        raise KeyError(f"pooled Dice needs 'tp', 'fp' and 'fn' in every row; missing {err}") from None
    den = 2 * tp + fp + fn
    return 2 * tp / den if den > 0 else math.nan


def pooled_dice(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Pooled ("micro", confusion-matrix) Dice per class from TP/FP/FN summed over all cases.

    This is **not** the mean of per-case Dice: large cases weigh more and empty cases weigh nothing.

    Args:
        rows: Rows from :func:`~mambaseg.evaluation.metrics.compute_case_metrics` (need ``tp``, ``fp``, ``fn``).

    Returns:
        ``{label_name: pooled Dice}``; NaN for a class empty in every prediction and reference.
    """
    return {name: _pooled(group) for name, group in _group(rows).items()}


def _metric_values(
    group: Sequence[Mapping[str, Any]], metric: str, distance_worst: float | None
) -> tuple[list[float], int, int]:
    values: list[float] = []
    n_nan = n_sub = 0
    for row in group:
        if metric not in row:
            continue
        v = row[metric]
        v = math.nan if v is None else float(v)
        if math.isnan(v):
            n_nan += 1
            continue
        if math.isinf(v):
            if metric not in DISTANCE_METRICS:
                raise ValueError(f"unexpected infinite value for non-distance metric {metric!r} in row {dict(row)}")
            if distance_worst is not None:
                worst = float(distance_worst)
            elif row.get("worst_distance_mm") is not None:
                worst = float(row["worst_distance_mm"])
            else:
                raise ValueError(
                    f"{metric} is inf (one mask empty) but the row has no 'worst_distance_mm' and no distance_worst "
                    "was given; pass summarize(..., distance_worst=<mm>)."
                )
            v = worst
            n_sub += 1
        values.append(v)
    return values, n_nan, n_sub


def summarize(
    rows: Iterable[Mapping[str, Any]],
    metrics: Sequence[str] | None = None,
    *,
    distance_worst: float | None = None,
) -> dict[str, Any]:
    """Summarise per-case rows per class and overall.

    Args:
        rows: Per-case, per-class dicts (see :func:`~mambaseg.evaluation.metrics.compute_case_metrics`).
        metrics: Metric keys to summarise; default = every key of :data:`ALL_METRICS` present in the rows.
        distance_worst: Fixed value (mm) substituted for ``inf`` distances; default None uses each row's
            ``worst_distance_mm`` (the image diagonal of that case).

    Returns:
        JSON-serialisable dict::

            {"conventions": {...},
             "classes": {label_name: {"n_cases", "n_both_empty", "n_ref_empty", "n_pred_empty",
                                      "pooled_dice",
                                      "metrics": {m: {"n", "mean", "median", "std", "q1", "q3", "min", "max",
                                                      "n_nan", "n_substituted"}}}},
             "overall": {"n_rows", "n_classes",
                         "metrics": {m: {"mean_of_class_means", "n_classes_used", "n_substituted"}},
                         "pooled_dice_mean_of_classes"}}
    """
    rows = list(rows)
    groups = _group(rows)
    if metrics is None:
        present = set().union(*(r.keys() for r in rows)) if rows else set()
        metrics = [m for m in ALL_METRICS if m in present]
    else:
        metrics = list(metrics)

    classes: dict[str, Any] = {}
    for name, group in groups.items():
        empties = [r.get("empty") for r in group]
        entry: dict[str, Any] = {
            "n_cases": len(group),
            "n_both_empty": empties.count("both"),
            "n_ref_empty": empties.count("ref"),
            "n_pred_empty": empties.count("pred"),
            "pooled_dice": _pooled(group) if all(k in r for r in group for k in ("tp", "fp", "fn")) else math.nan,
            "metrics": {},
        }
        for m in metrics:
            values, n_nan, n_sub = _metric_values(group, m, distance_worst)
            stats = describe(values)
            stats.update(n_nan=n_nan, n_substituted=n_sub)
            entry["metrics"][m] = stats
        classes[name] = entry

    overall_metrics: dict[str, Any] = {}
    for m in metrics:
        means = [c["metrics"][m]["mean"] for c in classes.values() if c["metrics"][m]["mean"] is not None]
        overall_metrics[m] = {
            "mean_of_class_means": float(np.mean(means)) if means else math.nan,
            "n_classes_used": len(means),
            "n_substituted": sum(c["metrics"][m]["n_substituted"] for c in classes.values()),
        }
    pooled = [c["pooled_dice"] for c in classes.values() if not math.isnan(c["pooled_dice"])]
    summary = {
        "conventions": {
            "aggregation": "per class over cases; NaN (not applicable) excluded and counted in n_nan",
            "std": "sample standard deviation (ddof=1)",
            "inf_distances": (
                f"replaced by distance_worst={distance_worst} mm"
                if distance_worst is not None
                else "replaced by each row's worst_distance_mm (image diagonal in mm)"
            ),
            "pooled_dice": "2*sum(TP) / (2*sum(TP) + sum(FP) + sum(FN)) over cases; not the mean of per-case Dice",
            "overall": "mean_of_class_means = unweighted mean over classes of per-class means (macro)",
        },
        "classes": classes,
        "overall": {
            "n_rows": len(rows),
            "n_classes": len(classes),
            "metrics": overall_metrics,
            "pooled_dice_mean_of_classes": float(np.mean(pooled)) if pooled else math.nan,
        },
    }
    return to_jsonable(summary)
