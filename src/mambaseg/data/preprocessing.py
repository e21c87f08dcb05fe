"""Per-case preprocessing shared by training and prediction: normalisation, resampling, and its inverse.

Follows nnU-Net v2's ``DefaultPreprocessor`` (MIC-DKFZ/nnUNet ``nnunetv2/preprocessing``), without cropping to the
non-zero region:

* **Order of operations**: normalise, then resample (as nnU-Net). Normalisation schemes per channel
  (:data:`mambaseg.data.plan.NORMALIZATION_SCHEMES`): ``"ct"`` clips to the training foreground's
  ``[percentile_00_5, percentile_99_5]`` and z-scores with its ``mean``/``std`` (``CTNormalization``);
  ``"zscore"`` z-scores each image with its own mean and std (``ZScoreNormalization`` without a mask);
  ``"rgb"`` divides by 255; ``"none"`` leaves the values. ``std`` is clamped to ``>= 1e-8``.
* **Target shape**: ``round(original_spacing / target_spacing * original_shape)`` per axis (nnU-Net's
  ``compute_new_shape``). A plan's ``target_spacing`` lists every image axis; for a 2D plan on 3D images it may
  list only the in-plane axes, and the slice axis (``plan.slice_axis``, default 0) then keeps its spacing.
* **Grid alignment**: voxel centres are mapped with the half-voxel convention of skimage ``resize`` /
  ``torch.nn.functional.interpolate(align_corners=False)``: ``src = (dst + 0.5) * old / new - 0.5``, edges
  replicated.
* **Images**: cubic B-spline (order 3, scipy ``map_coordinates``/``affine_transform``), as nnU-Net.
* **Anisotropic data** (nnU-Net's "separate z" rule): if ``max(spacing) / min(spacing) > 3`` for the original
  spacing (or else for the target spacing) and exactly one axis has the largest spacing, that axis is resampled
  separately with nearest-neighbour (order 0, nnU-Net's ``order_z=0``) after an in-plane order-3 resampling of
  every slice. When two axes share the largest spacing nnU-Net v2 does not separate, and neither does this.
* **Labels**: nearest neighbour on the same grid (nnU-Net uses a per-label linear interpolation thresholded at 0.5,
  which smooths boundaries slightly more; nearest keeps every label value and is exact for integer zoom factors).
* **Reverting** predictions (:func:`revert_probabilities`): linear (bilinear / trilinear) interpolation of the class
  probabilities back to the original grid, with the same separate-z rule (linear in-plane, nearest along the
  low-resolution axis), as nnU-Net resamples its logits with order 1 / order_z 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .io import ImageMeta
from .plan import Plan

__all__ = [
    "ANISOTROPY_THRESHOLD",
    "compute_new_shape",
    "normalize",
    "preprocess_image",
    "preprocess_label",
    "revert_probabilities",
    "separate_z_axis",
    "target_spacing_for",
]

#: nnU-Net's ``ANISO_THRESHOLD``: above this ratio of largest to smallest spacing the low-resolution axis is
#: resampled separately (nearest neighbour).
ANISOTROPY_THRESHOLD = 3.0


# ------------------------------------------------------------------------------------------------ normalisation
def normalize(image: np.ndarray, plan: Plan, *, name: str | None = None) -> np.ndarray:
    """Normalise each channel with the plan's scheme.

    Args:
        image: ``(C, *S)`` float image, ``C == len(plan.channel_names)``.
        plan: the run's plan (``normalization`` and, for ``"ct"``, ``intensity_stats``).
        name: what to call the image in error messages (e.g. its file name).

    Returns:
        A new ``(C, *S)`` float32 array.

    Raises:
        ValueError: wrong channel count, NaN in the image (the message names the channel), or a ``"ct"`` channel
            without the statistics it needs.
    """
    what = name or "image"
    image = np.asarray(image)
    if image.ndim < 2 or image.shape[0] != len(plan.normalization):
        raise ValueError(f"{what}: expected (C, *spatial) with C = {len(plan.normalization)} channels "
                         f"{plan.channel_names}, got shape {image.shape}")
    out = np.empty(image.shape, dtype=np.float32)
    for c, scheme in enumerate(plan.normalization):
        x = image[c].astype(np.float32, copy=False)
        if np.isnan(x).any():
            raise ValueError(f"{what} contains NaN in channel {c} ({plan.channel_names[c]!r}); "
                             "fix or mask the input")
        if scheme == "ct":
            stats = plan.intensity_stats[c] if c < len(plan.intensity_stats) else {}
            missing = [k for k in ("mean", "std", "percentile_00_5", "percentile_99_5") if k not in stats]
            if missing:
                raise ValueError(f"plan: channel {c} ({plan.channel_names[c]!r}) uses 'ct' normalisation but "
                                 f"intensity_stats lacks {missing}")
            x = np.clip(x, stats["percentile_00_5"], stats["percentile_99_5"])
            out[c] = (x - stats["mean"]) / max(float(stats["std"]), 1e-8)
        elif scheme == "zscore":
            mean, std = float(x.mean(dtype=np.float64)), float(x.std(dtype=np.float64))
            out[c] = (x - mean) / max(std, 1e-8)
        elif scheme == "rgb":
            out[c] = x / 255.0
        elif scheme == "none":
            out[c] = x
        else:  # Plan.__post_init__ already rejects unknown schemes
            raise ValueError(f"unknown normalization {scheme!r}")
    return out


# ------------------------------------------------------------------------------------------------ geometry
def target_spacing_for(original_spacing: Sequence[float], plan: Plan) -> list[float] | None:
    """Target spacing for an image of ``original_spacing`` (array order), or None when the plan does not resample.

    A plan's ``target_spacing`` with one entry fewer than the image axes (2D plan on a 3D image) keeps the
    original spacing along ``plan.slice_axis`` (default 0).
    """
    if plan.target_spacing is None:
        return None
    target = [float(s) for s in plan.target_spacing]
    n = len(original_spacing)
    if len(target) == n:
        return target
    if len(target) == n - 1 and n == 3:
        axis = 0 if plan.slice_axis is None else int(plan.slice_axis)
        target.insert(axis, float(original_spacing[axis]))
        return target
    raise ValueError(f"plan.target_spacing {plan.target_spacing} does not fit an image with {n} spatial axes "
                     f"(spacing {list(original_spacing)})")


def compute_new_shape(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> list[int]:
    """nnU-Net's ``compute_new_shape``: ``round(spacing / new_spacing * shape)`` per axis (at least 1)."""
    return [max(1, round(s / n * d)) for d, s, n in zip(shape, spacing, new_spacing)]


def separate_z_axis(spacing: Sequence[float], new_spacing: Sequence[float] | None = None) -> int | None:
    """The axis nnU-Net resamples separately (order 0), or None.

    Checks the original spacing first, then the target spacing: if ``max / min > 3`` and a single axis has the
    maximum spacing, that axis is returned.
    """
    for sp in (spacing, new_spacing):
        if sp is None or len(sp) < 3:
            continue
        arr = np.asarray(sp, dtype=float)
        if arr.max() / max(arr.min(), 1e-12) > ANISOTROPY_THRESHOLD:
            axes = np.flatnonzero(np.isclose(arr, arr.max()))
            return int(axes[0]) if len(axes) == 1 else None
    return None


def _source_coords(old: int, new: int) -> np.ndarray:
    """Half-voxel-aligned source coordinate of each output voxel along one axis."""
    return (np.arange(new, dtype=np.float64) + 0.5) * (old / new) - 0.5


def _nearest_index(old: int, new: int) -> np.ndarray:
    return np.clip(np.floor(_source_coords(old, new) + 0.5).astype(np.int64), 0, old - 1)


def _resample_nearest(x: np.ndarray, new_shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resampling of ``(*S)`` to ``new_shape`` (separable index gather, exact)."""
    for axis, (old, new) in enumerate(zip(x.shape, new_shape)):
        if old != new:
            x = np.take(x, _nearest_index(old, new), axis=axis)
    return x


def _resample_spline(x: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    """Spline resampling of one ``(*S)`` float array to ``new_shape`` with half-voxel alignment."""
    if tuple(x.shape) == tuple(new_shape):
        return x.astype(np.float32, copy=False)
    scale = np.array([o / n for o, n in zip(x.shape, new_shape)])
    return ndimage.affine_transform(x.astype(np.float32, copy=False), scale, offset=0.5 * scale - 0.5,
                                    output_shape=tuple(int(s) for s in new_shape), order=order, mode="nearest",
                                    prefilter=order > 1).astype(np.float32, copy=False)


def _resample_image(x: np.ndarray, new_shape: Sequence[int], z_axis: int | None, order: int = 3) -> np.ndarray:
    """Resample ``(*S)``: spline of ``order`` everywhere, or in-plane only with nearest along ``z_axis``."""
    if z_axis is None:
        return _resample_spline(x, new_shape, order)
    in_plane = [s for a, s in enumerate(new_shape) if a != z_axis]
    moved = np.moveaxis(x, z_axis, 0)
    slices = np.stack([_resample_spline(s, in_plane, order) for s in moved], axis=0)
    slices = np.take(slices, _nearest_index(x.shape[z_axis], new_shape[z_axis]), axis=0)
    return np.ascontiguousarray(np.moveaxis(slices, 0, z_axis))


def _meta_dict(meta: ImageMeta) -> dict[str, Any]:
    d = asdict(meta)
    d["spacing"], d["origin"], d["direction"] = list(meta.spacing), list(meta.origin), list(meta.direction)
    d["extra"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in meta.extra.items()
                  if isinstance(v, (str, int, float, bool, list, tuple)) or v is None}
    return d


def _resampling(shape: Sequence[int], meta: ImageMeta, plan: Plan) -> tuple[list[int], int | None, Any]:
    """(new shape, separate-z axis, target spacing) for an image of spatial ``shape``."""
    if len(meta.spacing) != len(shape):
        raise ValueError(f"meta describes {len(meta.spacing)} spatial axes, the image has shape {tuple(shape)}")
    target = target_spacing_for(meta.spacing, plan)
    if target is None:
        return list(shape), None, None
    new_shape = compute_new_shape(shape, meta.spacing, target)
    if new_shape == list(shape):
        return new_shape, None, target
    return new_shape, separate_z_axis(meta.spacing, target), target


# ------------------------------------------------------------------------------------------------ public API
def preprocess_image(image: np.ndarray, meta: ImageMeta, plan: Plan, *,
                     name: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Normalise, then resample to the plan's target spacing (see the module docstring for the rules).

    Args:
        image: ``(C, *S)`` float32 image (``S`` = ``(z, y, x)`` or ``(y, x)``).
        meta: geometry of the image (spacing in array order).
        plan: the run's plan.
        name: what to call the image in error messages.

    Returns:
        ``(data, properties)``: ``data`` is ``(C, *S')`` float32 with ``S'`` the resampled shape (``S`` when the
        plan does not resample); ``properties`` is a JSON-able dict with ``original_shape``, ``original_spacing``,
        ``resampled_shape``, ``target_spacing`` (None without resampling), ``separate_z_axis`` and ``meta``
        (the :class:`ImageMeta` as a dict), everything :func:`revert_probabilities` needs.
    """
    data = normalize(image, plan, name=name)
    shape = list(data.shape[1:])
    new_shape, z_axis, target = _resampling(shape, meta, plan)
    if new_shape != shape:
        data = np.stack([_resample_image(c, new_shape, z_axis, order=3) for c in data], axis=0)
    properties = {
        "original_shape": [int(s) for s in shape],
        "original_spacing": [float(s) for s in meta.spacing],
        "resampled_shape": [int(s) for s in new_shape],
        "target_spacing": target,
        "separate_z_axis": z_axis,
        "meta": _meta_dict(meta),
    }
    return data, properties


def preprocess_label(label: np.ndarray, meta: ImageMeta, plan: Plan) -> np.ndarray:
    """Resample a label map to the plan's target spacing with nearest neighbour (values are kept exactly).

    Args:
        label: ``(*S)`` integer label map on the grid of ``meta``.
        meta: its geometry.
        plan: the run's plan.

    Returns:
        ``(*S')`` label map of the same dtype on the same grid as :func:`preprocess_image`'s output.
    """
    label = np.asarray(label)
    new_shape, _, _ = _resampling(label.shape, meta, plan)
    if new_shape == list(label.shape):
        return label
    return np.ascontiguousarray(_resample_nearest(label, new_shape))


def revert_probabilities(probs: torch.Tensor, properties: dict[str, Any], plan: Plan) -> torch.Tensor:
    """Bring class probabilities (or logits) from the resampled grid back to the original one.

    Args:
        probs: ``(K, *S')`` on the grid produced by :func:`preprocess_image`.
        properties: the properties returned with it.
        plan: the run's plan (kept for symmetry with :func:`preprocess_image`; the properties hold everything).

    Returns:
        ``(K, *original_shape)`` float tensor on the device of ``probs``: ``probs`` itself when no resampling
        happened, else a (bi/tri)linear interpolation (``align_corners=False``), nearest along the separate-z axis.
    """
    del plan
    target = tuple(int(s) for s in properties["original_shape"])
    if tuple(probs.shape[1:]) == target:
        return probs
    if probs.ndim - 1 != len(target):
        raise ValueError(f"probabilities {tuple(probs.shape)} do not match original shape {target}")
    x = probs.float().unsqueeze(0)
    z_axis = properties.get("separate_z_axis")
    if z_axis is None:
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(target)]
        return F.interpolate(x, size=target, mode=mode, align_corners=False)[0]
    # linear in-plane (slices along z_axis treated as a batch), then nearest along z_axis
    k = x.shape[1]
    x = x[0].movedim(z_axis + 1, 0)                    # (Z', K, a, b)
    in_plane = tuple(s for a, s in enumerate(target) if a != z_axis)
    x = F.interpolate(x, size=in_plane, mode="bilinear", align_corners=False)
    idx = torch.from_numpy(_nearest_index(x.shape[0], target[z_axis])).to(x.device)
    x = x.index_select(0, idx)                          # (Z, K, a, b)
    out = x.movedim(0, z_axis + 1)
    assert out.shape[0] == k
    return out.contiguous()
