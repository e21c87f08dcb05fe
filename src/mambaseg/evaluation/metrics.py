"""Segmentation metrics: a functional, numpy-based core.

Every function here works on one pair of masks (or label maps) of one case and returns plain Python floats.
Aggregation over cases lives in :mod:`mambaseg.evaluation.aggregate`, statistics in
:mod:`mambaseg.evaluation.statistics`.

Conventions (the numbers depend on them, so they are fixed and tested):

* **Masks and spacing.** ``pred`` and ``ref`` are arrays of the same shape ``(*spatial)`` (1-D, 2-D or 3-D; any
  N >= 1 works). Binary functions accept ``bool`` arrays or arrays holding only 0 and 1. ``spacing`` is the voxel
  size in mm **in numpy array axis order** (nibabel ``header.get_zooms()[:ndim]``; for SimpleITK use
  ``img.GetSpacing()[::-1]``). ``None`` means 1 mm along every axis.
* **Overlap.** Dice = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN), sensitivity = TP / (TP + FN),
  precision = TP / (TP + FP).
* **Boundary.** The boundary of a mask is the set of its *inner boundary voxels*: ``mask & ~binary_erosion(mask)``
  with **face connectivity** (scipy's default structure, ``generate_binary_structure(ndim, 1)``) and
  ``border_value=0``, so an object touching the image edge has a boundary along that edge. This is MONAI's default
  (``get_mask_edges`` without spacing), medpy's ``connectivity=1`` and MetricsReloaded's, so our values can be checked
  against MONAI to float precision. Face connectivity gives the thinnest closed boundary (a voxel is on the boundary
  when one of its 2N face neighbours is background); full connectivity (seg-metrics' ``LabelContour``) gives thicker
  contours and different numbers. Every boundary voxel counts equally.
* **Distances.** ``d(x, Y)`` is the Euclidean distance in mm from boundary voxel ``x`` to the nearest boundary voxel
  of the other mask, from ``scipy.ndimage.distance_transform_edt(~boundary, sampling=spacing)`` (computed on the
  bounding box of ``pred | ref``, which gives identical values).
* **Hausdorff** = max of the two directed maxima. **HD95** = max of the two directed 95th percentiles, percentiles
  linearly interpolated (``np.percentile`` default; MONAI ``compute_hausdorff_distance(percentile=95)`` and
  MetricsReloaded). This is *not* medpy's pooled percentile and *not* DeepMind's area-weighted one.
* **ASSD** = mean of all boundary distances pooled from both directions,
  ``(sum_p d(p, dG) + sum_g d(g, dP)) / (|dP| + |dG|)`` (Heimann 2009, MONAI ``symmetric=True``, medpy >= 0.5).
  **MASD** = mean of the two directed means (MetricsReloaded "MASD"); offered as a separate metric.
* **NSD** (normalised surface distance, surface Dice at tolerance tau in mm, Nikolov et al. 2021) =
  ``(|{p in dP: d(p, dG) <= tau}| + |{g in dG: d(g, dP) <= tau}|) / (|dP| + |dG|)``, inclusive ``<=``.
  Boundary elements are **boundary voxels counted with equal weight** (MONAI ``compute_surface_dice`` default,
  MetricsReloaded). DeepMind's surface-distance instead weights each surface element ("surfel", on a grid shifted by
  half a voxel) by its area from a spacing-dependent lookup table; that is *not* implemented here. The two differ by a
  small amount on smooth objects and more on thin or anisotropic ones, e.g. two 2x2 squares shifted by one voxel at
  spacing (2, 1) give 0.8 here vs 0.8703 in DeepMind, two single pixels 2 mm apart give NSD@1mm 0 here vs 0.5.
* **Empty masks** (per class, per case; never NaN for a *missed* structure, NaN only means "not applicable"):

  ==============================  ==============  ============================  ==============
  case                            Dice/IoU        HD, HD95, ASSD, MASD          NSD
  ==============================  ==============  ============================  ==============
  both empty                      NaN [1]_        NaN                           NaN [1]_
  reference empty, prediction not 0               inf                           0
  prediction empty, reference not 0               inf                           0
  ==============================  ==============  ============================  ==============

  .. [1] ``empty_score=1.0`` scores the both-empty case as 1 (Kaggle / MetricsReloaded / miseval convention).

  Sensitivity is NaN when the reference is empty, precision is NaN when the prediction is empty. The aggregate
  (:func:`mambaseg.evaluation.aggregate.summarize`) replaces ``inf`` distances by a documented worst value (each row
  carries ``worst_distance_mm``, the image diagonal in mm) and counts the substitutions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage

__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "DISTANCE_METRICS",
    "SurfaceDistances",
    "assd",
    "boundary",
    "compute_case_metrics",
    "confusion_counts",
    "dice",
    "hausdorff",
    "hd95",
    "image_diagonal_mm",
    "iou",
    "masd",
    "nsd",
    "precision",
    "sensitivity",
    "surface_distances",
]

DEFAULT_METRICS: tuple[str, ...] = ("dice", "iou", "sensitivity", "precision", "hd95", "assd", "nsd")
"""Metrics computed by :func:`compute_case_metrics` unless told otherwise."""
DISTANCE_METRICS: tuple[str, ...] = ("hd95", "assd", "hausdorff", "masd")
"""Metrics in mm that are ``inf`` when exactly one mask is empty."""
ALL_METRICS: tuple[str, ...] = DEFAULT_METRICS + ("hausdorff", "masd")


# ----------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------
def _as_mask(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a boolean or numeric array, got dtype {arr.dtype}.")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(
            f"{name} must be a binary mask (bool or values 0/1), got values {np.unique(arr)[:5].tolist()}...; "
            "pass `labels == k` or use compute_case_metrics for label maps."
        )
    return arr.astype(bool)


def _check_pair(pred: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _as_mask(pred, "pred")
    g = _as_mask(ref, "ref")
    if p.shape != g.shape:
        raise ValueError(f"pred and ref must have the same shape, got pred {p.shape} and ref {g.shape}.")
    if p.ndim < 1:
        raise ValueError("masks must have at least one spatial dimension, got a 0-d array.")
    return p, g


def _check_spacing(spacing: Sequence[float] | float | None, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim, dtype=np.float64)
    sp = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if sp.ndim != 1 or sp.size != ndim:
        raise ValueError(
            f"spacing must have one value per array axis ({ndim} for a {ndim}-D mask, in array axis order), "
            f"got {np.asarray(spacing).tolist()}."
        )
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing values must be finite and > 0, got {sp.tolist()}.")
    return sp


def _check_tolerance(tolerance_mm: float) -> float:
    tol = float(tolerance_mm)
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tolerance_mm must be finite and >= 0, got {tolerance_mm}.")
    return tol


# ----------------------------------------------------------------------------------------------------------------
# overlap metrics
# ----------------------------------------------------------------------------------------------------------------
def confusion_counts(pred: Any, ref: Any) -> tuple[int, int, int, int]:
    """Voxel counts of the confusion matrix.

    Args:
        pred: Predicted binary mask, shape ``(*spatial)``.
        ref: Reference binary mask, same shape.

    Returns:
        ``(tp, fp, fn, tn)`` as Python ints.
    """
    p, g = _check_pair(pred, ref)
    tp = int(np.count_nonzero(p & g))
    n_p = int(np.count_nonzero(p))
    n_g = int(np.count_nonzero(g))
    return tp, n_p - tp, n_g - tp, int(p.size - n_p - n_g + tp)


def _ratio(num: float, den: float, empty: float = math.nan) -> float:
    return float(num) / float(den) if den > 0 else float(empty)


def dice(pred: Any, ref: Any, *, empty_score: float = math.nan) -> float:
    """Dice similarity coefficient 2TP / (2TP + FP + FN).

    Args:
        pred: Predicted binary mask, shape ``(*spatial)``.
        ref: Reference binary mask, same shape.
        empty_score: Value returned when both masks are empty (default NaN = not applicable; 1.0 for the
            "correctly predicted absence" convention).

    Returns:
        Dice in [0, 1]; 0 when exactly one mask is empty.
    """
    tp, fp, fn, _ = confusion_counts(pred, ref)
    return _ratio(2 * tp, 2 * tp + fp + fn, empty_score)


def iou(pred: Any, ref: Any, *, empty_score: float = math.nan) -> float:
    """Intersection over union (Jaccard) TP / (TP + FP + FN).

    Args:
        pred: Predicted binary mask, shape ``(*spatial)``.
        ref: Reference binary mask, same shape.
        empty_score: Value returned when both masks are empty (default NaN).

    Returns:
        IoU in [0, 1]; 0 when exactly one mask is empty.
    """
    tp, fp, fn, _ = confusion_counts(pred, ref)
    return _ratio(tp, tp + fp + fn, empty_score)


def sensitivity(pred: Any, ref: Any) -> float:
    """Sensitivity (recall, true positive rate) TP / (TP + FN); NaN when the reference is empty.

    Args:
        pred: Predicted binary mask, shape ``(*spatial)``.
        ref: Reference binary mask, same shape.
    """
    tp, _, fn, _ = confusion_counts(pred, ref)
    return _ratio(tp, tp + fn)


def precision(pred: Any, ref: Any) -> float:
    """Precision (positive predictive value) TP / (TP + FP); NaN when the prediction is empty.

    Args:
        pred: Predicted binary mask, shape ``(*spatial)``.
        ref: Reference binary mask, same shape.
    """
    tp, fp, _, _ = confusion_counts(pred, ref)
    return _ratio(tp, tp + fp)


# ----------------------------------------------------------------------------------------------------------------
# boundary and surface distances
# ----------------------------------------------------------------------------------------------------------------
def boundary(mask: Any) -> np.ndarray:
    """Inner boundary voxels of a binary mask: ``mask & ~erosion(mask)``, face connectivity, ``border_value=0``.

    Args:
        mask: Binary mask, shape ``(*spatial)``.

    Returns:
        Boolean array of the same shape, True on boundary voxels.
    """
    m = _as_mask(mask, "mask")
    if not m.any():
        return np.zeros_like(m)
    structure = ndimage.generate_binary_structure(m.ndim, 1)
    return m & ~ndimage.binary_erosion(m, structure=structure, border_value=0)


class SurfaceDistances(NamedTuple):
    """Boundary-to-boundary distances of one mask pair, in mm.

    Attributes:
        pred_to_ref: ``(|dP|,)`` distance of each predicted boundary voxel to the reference boundary (``inf`` for
            every voxel when the reference is empty).
        ref_to_pred: ``(|dG|,)`` distance of each reference boundary voxel to the predicted boundary (``inf`` when
            the prediction is empty).
    """

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray

    @property
    def both_empty(self) -> bool:
        """True when neither mask has a boundary (both masks empty)."""
        return self.pred_to_ref.size == 0 and self.ref_to_pred.size == 0

    @property
    def one_empty(self) -> bool:
        """True when exactly one mask is empty."""
        return (self.pred_to_ref.size == 0) != (self.ref_to_pred.size == 0)


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other) if other else mask)
        slices.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(slices)


def surface_distances(pred: Any, ref: Any, spacing: Sequence[float] | float | None = None) -> SurfaceDistances:
    """Directed boundary distances in both directions.

    Args:
        pred: Predicted binary mask, shape ``(*spatial)``.
        ref: Reference binary mask, same shape.
        spacing: Voxel size in mm per array axis (array axis order); ``None`` = 1 mm.

    Returns:
        :class:`SurfaceDistances`; arrays are empty for an empty mask, and the other direction is all ``inf``.
    """
    p, g = _check_pair(pred, ref)
    sp = _check_spacing(spacing, p.ndim)
    union = p | g
    if not union.any():
        empty = np.zeros(0, dtype=np.float64)
        return SurfaceDistances(empty, empty.copy())
    # Cropping to the bounding box of the union changes neither the boundaries (outside is background for both
    # masks, as with border_value=0) nor the distances (all boundary voxels lie inside); it only saves time.
    box = _bbox(union)
    bp, bg = boundary(p[box]), boundary(g[box])
    if not bg.any():
        return SurfaceDistances(np.full(int(bp.sum()), np.inf), np.zeros(0, dtype=np.float64))
    if not bp.any():
        return SurfaceDistances(np.zeros(0, dtype=np.float64), np.full(int(bg.sum()), np.inf))
    dist_to_g = ndimage.distance_transform_edt(~bg, sampling=sp)
    dist_to_p = ndimage.distance_transform_edt(~bp, sampling=sp)
    return SurfaceDistances(np.asarray(dist_to_g[bp], np.float64), np.asarray(dist_to_p[bg], np.float64))


def _hausdorff_from(sd: SurfaceDistances, percentile: float = 100.0) -> float:
    if sd.both_empty:
        return math.nan
    if sd.one_empty:
        return math.inf
    if percentile >= 100:
        return float(max(sd.pred_to_ref.max(), sd.ref_to_pred.max()))
    return float(max(np.percentile(sd.pred_to_ref, percentile), np.percentile(sd.ref_to_pred, percentile)))


def _assd_from(sd: SurfaceDistances) -> float:
    if sd.both_empty:
        return math.nan
    if sd.one_empty:
        return math.inf
    total = sd.pred_to_ref.sum() + sd.ref_to_pred.sum()
    return float(total / (sd.pred_to_ref.size + sd.ref_to_pred.size))


def _masd_from(sd: SurfaceDistances) -> float:
    if sd.both_empty:
        return math.nan
    if sd.one_empty:
        return math.inf
    return float(0.5 * (sd.pred_to_ref.mean() + sd.ref_to_pred.mean()))


def _nsd_from(sd: SurfaceDistances, tolerance_mm: float, empty_score: float = math.nan) -> float:
    if sd.both_empty:
        return float(empty_score)
    if sd.one_empty:
        return 0.0
    n_ok = np.count_nonzero(sd.pred_to_ref <= tolerance_mm) + np.count_nonzero(sd.ref_to_pred <= tolerance_mm)
    return float(n_ok / (sd.pred_to_ref.size + sd.ref_to_pred.size))


def hausdorff(
    pred: Any, ref: Any, spacing: Sequence[float] | float | None = None, *, percentile: float = 100.0
) -> float:
    """Symmetric Hausdorff distance in mm: max of the two directed maxima (or directed percentiles).

    Args:
        pred: Predicted binary mask, shape ``(*spatial)``.
        ref: Reference binary mask, same shape.
        spacing: Voxel size in mm per array axis; ``None`` = 1 mm.
        percentile: 100 for the classic HD; e.g. 95 gives :func:`hd95` (max of directed percentiles,
            linear interpolation).

    Returns:
        Distance in mm; ``inf`` if exactly one mask is empty, NaN if both are.
    """
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}.")
    return _hausdorff_from(surface_distances(pred, ref, spacing), percentile)


def hd95(pred: Any, ref: Any, spacing: Sequence[float] | float | None = None) -> float:
    """95th-percentile Hausdorff distance in mm: ``max(P95 d(dP, dG), P95 d(dG, dP))`` (MONAI / Metrics Reloaded).

    Args:
        pred: Predicted binary mask, shape ``(*spatial)``.
        ref: Reference binary mask, same shape.
        spacing: Voxel size in mm per array axis; ``None`` = 1 mm.

    Returns:
        Distance in mm; ``inf`` if exactly one mask is empty, NaN if both are.
    """
    return _hausdorff_from(surface_distances(pred, ref, spacing), 95.0)


def assd(pred: Any, ref: Any, spacing: Sequence[float] | float | None = None) -> float:
    """Average symmetric surface distance in mm, distances pooled from both directions.

    Args:
        pred: Predicted binary mask, shape ``(*spatial)``.
        ref: Reference binary mask, same shape.
        spacing: Voxel size in mm per array axis; ``None`` = 1 mm.

    Returns:
        ``(sum d(dP, dG) + sum d(dG, dP)) / (|dP| + |dG|)``; ``inf`` if exactly one mask is empty, NaN if both are.
    """
    return _assd_from(surface_distances(pred, ref, spacing))


def masd(pred: Any, ref: Any, spacing: Sequence[float] | float | None = None) -> float:
    """Mean average surface distance in mm: the mean of the two directed mean distances.

    Args:
        pred: Predicted binary mask, shape ``(*spatial)``.
        ref: Reference binary mask, same shape.
        spacing: Voxel size in mm per array axis; ``None`` = 1 mm.

    Returns:
        ``(mean d(dP, dG) + mean d(dG, dP)) / 2``; ``inf`` if exactly one mask is empty, NaN if both are.
    """
    return _masd_from(surface_distances(pred, ref, spacing))


def nsd(
    pred: Any,
    ref: Any,
    tolerance_mm: float,
    spacing: Sequence[float] | float | None = None,
    *,
    empty_score: float = math.nan,
) -> float:
    """Normalised surface distance (surface Dice) at a tolerance in mm, boundary voxels weighted equally.

    Args:
        pred: Predicted binary mask, shape ``(*spatial)``.
        ref: Reference binary mask, same shape.
        tolerance_mm: Acceptable boundary deviation tau in mm (``d <= tau`` counts as correct).
        spacing: Voxel size in mm per array axis; ``None`` = 1 mm.
        empty_score: Value when both masks are empty (default NaN).

    Returns:
        Fraction in [0, 1] of boundary voxels of both masks within tau of the other boundary; 0 if exactly one mask
        is empty.
    """
    tol = _check_tolerance(tolerance_mm)
    return _nsd_from(surface_distances(pred, ref, spacing), tol, empty_score)


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float] | float | None = None) -> float:
    """Length in mm of the image diagonal, ``sqrt(sum((shape_i * spacing_i)^2))``: the default worst distance.

    Args:
        shape: Spatial shape of the image.
        spacing: Voxel size in mm per array axis; ``None`` = 1 mm.
    """
    sp = _check_spacing(spacing, len(shape))
    return float(np.sqrt(np.sum((np.asarray(shape, dtype=np.float64) * sp) ** 2)))


# ----------------------------------------------------------------------------------------------------------------
# label maps -> per-class rows
# ----------------------------------------------------------------------------------------------------------------
def _as_label_map(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == bool or arr.dtype.kind in "iu":
        return arr
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(
                f"{name} must hold integer labels; got a float array with non-integer values "
                "(pass argmax'ed / thresholded label maps, not probabilities)."
            )
        return arr
    raise TypeError(f"{name} must be an integer label map, got dtype {arr.dtype}.")


def _normalise_labels(
    labels: Sequence[int | Sequence[int]] | Mapping[str, int | Sequence[int]],
) -> list[tuple[str, int | tuple[int, ...]]]:
    items = list(labels.items()) if isinstance(labels, Mapping) else [(None, lab) for lab in labels]
    if not items:
        raise ValueError("labels must name at least one label or region.")
    out: list[tuple[str, int | tuple[int, ...]]] = []
    for name, lab in items:
        if isinstance(lab, (bool, np.bool_)):
            raise TypeError(f"labels must be integers or tuples of integers, got {lab!r}.")
        if isinstance(lab, (int, np.integer)):
            value: int | tuple[int, ...] = int(lab)
            default_name = str(int(lab))
        elif isinstance(lab, Sequence) and not isinstance(lab, str) and len(lab) > 0:
            if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in lab):
                raise TypeError(f"a region must be a tuple of integer labels, got {lab!r}.")
            value = tuple(int(v) for v in lab)
            default_name = "+".join(str(v) for v in value)
        else:
            raise TypeError(f"labels must be integers or non-empty tuples of integers, got {lab!r}.")
        out.append((str(name) if name is not None else default_name, value))
    return out


def compute_case_metrics(
    pred_labels: Any,
    ref_labels: Any,
    labels: Sequence[int | Sequence[int]] | Mapping[str, int | Sequence[int]],
    spacing: Sequence[float] | float | None = None,
    *,
    nsd_tolerance_mm: float = 1.0,
    metrics: Sequence[str] = DEFAULT_METRICS,
    empty_score: float = math.nan,
    case_id: str | None = None,
) -> list[dict[str, Any]]:
    """Per-class metrics of one case from integer label maps.

    Args:
        pred_labels: Predicted label map, integer array of shape ``(*spatial)`` (not one-hot, not probabilities).
        ref_labels: Reference label map, same shape.
        labels: Classes to evaluate. Each entry is a label ``k`` (mask ``labels == k``) or a tuple of labels merged
            into one region (e.g. BraTS whole tumour ``(1, 2, 3)``). A mapping ``{name: label_or_region}`` sets the
            row's ``label_name``.
        spacing: Voxel size in mm per array axis (array axis order); ``None`` = 1 mm.
        nsd_tolerance_mm: NSD tolerance tau in mm.
        metrics: Names from :data:`ALL_METRICS`; the surface distances are computed once per class.
        empty_score: Dice/IoU/NSD value when both masks are empty (default NaN).
        case_id: Stored in each row as ``case_id`` when given.

    Returns:
        One dict per entry of ``labels`` with keys ``case_id`` (if given), ``label`` (int or tuple),
        ``label_name``, ``n_pred``, ``n_ref``, ``tp``, ``fp``, ``fn`` (voxel counts), ``empty`` (``"none"``,
        ``"both"``, ``"ref"`` = only the reference is empty, ``"pred"`` = only the prediction is empty),
        ``spacing`` (list, mm), ``nsd_tolerance_mm``, ``worst_distance_mm`` (image diagonal in mm, used by the
        aggregate in place of ``inf``) and one float per requested metric.
    """
    pred_arr = _as_label_map(pred_labels, "pred_labels")
    ref_arr = _as_label_map(ref_labels, "ref_labels")
    if pred_arr.shape != ref_arr.shape:
        raise ValueError(
            f"pred_labels and ref_labels must have the same shape, got pred {pred_arr.shape} and ref {ref_arr.shape}."
        )
    if pred_arr.ndim < 1:
        raise ValueError("label maps must have at least one spatial dimension.")
    sp = _check_spacing(spacing, pred_arr.ndim)
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(ALL_METRICS)}.")
    tol = _check_tolerance(nsd_tolerance_mm)
    worst = image_diagonal_mm(pred_arr.shape, sp)
    needs_surface = any(m in ("nsd",) + DISTANCE_METRICS for m in metrics)

    rows: list[dict[str, Any]] = []
    for name, lab in _normalise_labels(labels):
        values = lab if isinstance(lab, tuple) else (lab,)
        p = np.isin(pred_arr, values)
        g = np.isin(ref_arr, values)
        tp, fp, fn, _ = confusion_counts(p, g)
        n_pred, n_ref = tp + fp, tp + fn
        empty = "both" if n_pred == n_ref == 0 else "ref" if n_ref == 0 else "pred" if n_pred == 0 else "none"
        row: dict[str, Any] = {} if case_id is None else {"case_id": case_id}
        row.update(
            label=lab, label_name=name, n_pred=n_pred, n_ref=n_ref, tp=tp, fp=fp, fn=fn, empty=empty,
            spacing=sp.tolist(), nsd_tolerance_mm=tol, worst_distance_mm=worst,
        )  # fmt: skip
        sd = surface_distances(p, g, sp) if needs_surface else None
        for m in metrics:
            if m == "dice":
                row[m] = _ratio(2 * tp, 2 * tp + fp + fn, empty_score)
            elif m == "iou":
                row[m] = _ratio(tp, tp + fp + fn, empty_score)
            elif m == "sensitivity":
                row[m] = _ratio(tp, tp + fn)
            elif m == "precision":
                row[m] = _ratio(tp, tp + fp)
            elif m == "hd95":
                row[m] = _hausdorff_from(sd, 95.0)
            elif m == "hausdorff":
                row[m] = _hausdorff_from(sd, 100.0)
            elif m == "assd":
                row[m] = _assd_from(sd)
            elif m == "masd":
                row[m] = _masd_from(sd)
            elif m == "nsd":
                row[m] = _nsd_from(sd, tol, empty_score)
        rows.append(row)
    return rows
