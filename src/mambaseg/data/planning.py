"""Dataset fingerprint and the rules that turn it into a :class:`~mambaseg.data.plan.Plan`.

In the spirit of nnU-Net v2's ``DatasetFingerprintExtractor`` and ``ExperimentPlanner`` (MIC-DKFZ/nnUNet
``nnunetv2/experiment_planning``), with simpler, documented rules (recorded in ``plan.extra["rules"]``):

* **Fingerprint** (:func:`fingerprint`): per case the spatial shape and spacing (array order); per channel the
  mean, std and 0.5 / 99.5 percentiles of a bounded, seeded random sample of foreground voxels (label > 0), at
  most ``voxels_per_case`` per case (nnU-Net samples 10,000 per case).
* **Dimensionality**: the model's (:func:`mambaseg.model_info` ``spatial_dims``). A model that supports both
  runs 3D on volumes and 2D on images and on "volumes" of one slice (e.g. ACDC slices stored as ``(1, H, W)``).
  A 2D model on 3D data slices axis 0 (``slice_axis=0``) and its patch covers the in-plane axes.
* **Normalisation** per channel, as nnU-Net: a channel named ``CT`` -> ``"ct"`` (global foreground percentile
  clip + z-score); channels ``R``/``G``/``B`` or a 3-channel ``.png``/``.jpg``/``.bmp`` image -> ``"rgb"``
  (divide by 255); channels named ``noNorm`` / ``zscore`` / ``rgb_to_0_1`` select that scheme by name, as
  nnU-Net v2 does (``noNorm`` -> ``"none"``, for data normalised upstream); anything else -> ``"zscore"`` (per image).
* **Target spacing**: the per-axis median spacing (nnU-Net's default for isotropic-ish data; its extra rule for
  anisotropic data, the 10th percentile along the low-resolution axis, is not applied). For a 2D model on 3D
  data only the in-plane axes are listed (slices keep their spacing). ``None`` for natural images (PNG/JPG/...)
  and whenever every case already has the median spacing and shape-relevant resampling would be a no-op.
  A ``target_spacing`` given to :func:`make_plan` replaces this rule (natural images included: their spacing is 1,
  so ``[4, 4]`` shrinks them 4x per axis); patch and batch size are then derived from the shapes at that spacing.
* **Patch size**: start from the median (resampled) shape of the axes the model sees, rounded up to a multiple
  of the divisor (32 in 2D; in 3D 32 per axis whose median is >= 64, else 16), capped at 512 per axis in 2D.
  In 3D the patch is then shrunk until it fits a voxel budget of ``VOXELS_3D_PER_GB * memory_budget_gb``
  (262,144 voxels per GB: 128^3 at 8 GB, nnU-Net's reference 3D full-resolution patch for its 8 GB target with
  batch 2), each step removing one divisor from the axis with the largest physical extent (mm) - nnU-Net also
  shrinks the axis that is largest relative to the median shape, keeping the patch aspect ratio near the data.
* **Batch size**: 3D -> 2 (nnU-Net's minimum and usual value). 2D -> ``floor(PIXELS_2D_PER_GB *
  memory_budget_gb / prod(patch))`` (393,216 pixels per GB: 49 patches of 256^2, or 12 of 512^2, at 8 GB, close to
  nnU-Net's 2D plans), capped so one batch holds at most 5 % of all training pixels (nnU-Net's cap), at least 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .nnunet_raw import RawDataset
from .plan import NORMALIZATION_SCHEMES, Plan

__all__ = ["PIXELS_2D_PER_GB", "VOXELS_3D_PER_GB", "fingerprint", "make_plan", "normalization_for"]

#: 2D batch budget: pixels (batch x patch) per GB of accelerator memory.
PIXELS_2D_PER_GB = 393_216
#: 3D patch budget: voxels of one patch per GB (batch size 2).
VOXELS_3D_PER_GB = 262_144
#: Largest 2D patch side.
MAX_PATCH_2D = 512
#: Default memory budget (nnU-Net plans for 8 GB of GPU memory).
DEFAULT_MEMORY_GB = 8.0
_NATURAL_ENDINGS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def fingerprint(raw: RawDataset, cases: Sequence[str], *, voxels_per_case: int = 10_000,
                seed: int = 1234) -> dict[str, Any]:
    """Shapes, spacings and foreground intensity statistics of ``cases``.

    Args:
        raw: the dataset.
        cases: training case ids to describe (the validation cases should be left out, as nnU-Net does not).
        voxels_per_case: most foreground voxels sampled per case and channel.
        seed: seed of the voxel sampling (``numpy.random.default_rng``).

    Returns:
        ``{"cases": {case: {"shape": [...], "spacing": [...]}}, "num_channels": C, "spatial_ndim": n,
        "intensity": [{"mean", "std", "percentile_00_5", "percentile_99_5", "min", "max", "n_samples"}, ...]}``;
        shapes and spacings in array order (spatial axes only). Channels without foreground get NaN stats.
    """
    if not cases:
        raise ValueError("fingerprint needs at least one case")
    rng = np.random.default_rng(seed)
    per_case: dict[str, dict[str, list]] = {}
    samples: list[list[np.ndarray]] = []
    for case in cases:
        image, label, meta = raw.load_case(case)
        if not samples:
            samples = [[] for _ in range(image.shape[0])]
        per_case[case] = {"shape": [int(s) for s in image.shape[1:]], "spacing": [float(s) for s in meta.spacing]}
        if label is None:
            continue
        fg = np.flatnonzero(label.reshape(-1) > 0)
        if fg.size == 0:
            continue
        pick = fg if fg.size <= voxels_per_case else rng.choice(fg, voxels_per_case, replace=False)
        flat = image.reshape(image.shape[0], -1)
        for c in range(image.shape[0]):
            samples[c].append(flat[c, pick].astype(np.float64))
    intensity = []
    for chan in samples:
        v = np.concatenate(chan) if chan else np.zeros(0)
        if v.size == 0:
            intensity.append({k: math.nan for k in ("mean", "std", "percentile_00_5", "percentile_99_5",
                                                    "min", "max")} | {"n_samples": 0})
            continue
        intensity.append({"mean": float(v.mean()), "std": float(v.std()),
                          "percentile_00_5": float(np.percentile(v, 0.5)),
                          "percentile_99_5": float(np.percentile(v, 99.5)),
                          "min": float(v.min()), "max": float(v.max()), "n_samples": int(v.size)})
    first = next(iter(per_case.values()))
    return {"cases": per_case, "num_channels": len(samples), "spatial_ndim": len(first["shape"]),
            "intensity": intensity}


#: nnU-Net v2 channel names that select a normalisation scheme by name (case-insensitive), as nnU-Net does.
_NNUNET_CHANNEL_SCHEMES = {"ct": "ct", "nonorm": "none", "zscore": "zscore", "rgb_to_0_1": "rgb"}


def normalization_for(channel_names: Sequence[str], file_ending: str) -> list[str]:
    """nnU-Net's choice of normalisation per channel (see the module docstring)."""
    names = [str(n).strip() for n in channel_names]
    rgb = [n.upper() for n in names] == ["R", "G", "B"] or (
        len(names) == 3 and file_ending.lower() in _NATURAL_ENDINGS)
    out = []
    for n in names:
        if n.casefold() in _NNUNET_CHANNEL_SCHEMES:
            out.append(_NNUNET_CHANNEL_SCHEMES[n.casefold()])
        elif rgb or n.lower() in ("r", "g", "b", "red", "green", "blue"):
            out.append("rgb")
        else:
            out.append("zscore")
    return out


def _round_up(x: float, k: int) -> int:
    return int(max(k, math.ceil(x / k) * k))


def _choose_dims(model_dims: Sequence[int], shapes: np.ndarray, requested: int | None) -> tuple[int, int | None]:
    """(spatial_dims, slice_axis) for a model supporting ``model_dims`` on data of ``shapes`` (N, n)."""
    n = shapes.shape[1]
    data_dims = 2 if n == 2 or (n == 3 and np.all(shapes[:, 0] == 1)) else 3
    if requested is not None:
        if requested not in model_dims:
            raise ValueError(f"the model supports spatial_dims {tuple(model_dims)}, {requested} was requested")
        dims = requested
    else:
        dims = data_dims if data_dims in model_dims else min(model_dims)
    if dims == 3 and n == 2:
        raise ValueError(f"a 3D model cannot train on 2D images (data has spatial shape {tuple(shapes[0])}); "
                         f"choose a 2D model or spatial_dims=2")
    return dims, (0 if dims == 2 and n == 3 else None)


def make_plan(raw: RawDataset, model_name: str, *, cases: Sequence[str], patch_size: Sequence[int] | None = None,
              batch_size: int | None = None, memory_budget_gb: float | None = None,
              normalization: Sequence[str] | None = None, spatial_dims: int | None = None,
              fingerprint_data: dict[str, Any] | None = None,
              target_spacing: Sequence[float] | None = None) -> Plan:
    """Plan a run of ``model_name`` on ``raw`` (rules in the module docstring, recorded in ``plan.extra``).

    Args:
        raw: the dataset.
        model_name: registered model name (decides the dimensionality).
        cases: training cases the plan is derived from.
        patch_size: override (``spatial_dims`` entries).
        batch_size: override.
        memory_budget_gb: accelerator memory to plan for (default 8 GB).
        normalization: override, one scheme per channel.
        spatial_dims: force 2 or 3 for a model supporting both.
        fingerprint_data: a precomputed :func:`fingerprint` of ``cases``.
        target_spacing: override of the target spacing (array order; one entry per axis the model sees, i.e. the
            in-plane axes for a 2D model on 3D data); recorded in ``extra["rules"]["target_spacing"]``.

    Returns:
        The plan (``extra`` holds ``rules``, ``median_shape``, ``median_spacing``, ``num_training_cases``,
        ``memory_budget_gb`` and ``intensity`` stats of every channel).
    """
    from mambaseg.models import (
        model_info,  # models layer sits beside data; imported lazily
    )

    info = model_info(model_name)
    fp = fingerprint_data if fingerprint_data is not None else fingerprint(raw, cases)
    shapes = np.array([c["shape"] for c in fp["cases"].values()], dtype=float)
    spacings = np.array([c["spacing"] for c in fp["cases"].values()], dtype=float)
    dims, slice_axis = _choose_dims(info.spatial_dims, shapes, spatial_dims)
    natural = raw.file_ending.lower() in _NATURAL_ENDINGS
    median_spacing = np.median(spacings, axis=0)
    axes = list(range(shapes.shape[1]))[1:] if slice_axis is not None else list(range(shapes.shape[1]))
    rules: dict[str, str] = {}
    if target_spacing is not None:
        target = np.asarray([float(t) for t in target_spacing], dtype=float)
        if len(target) != len(axes) or not np.all(target > 0):
            raise ValueError(f"target_spacing {list(target_spacing)} must give {len(axes)} positive spacings (array "
                             f"order) for a {dims}D model on data with {shapes.shape[1]} spatial axes")
        resampled = shapes.copy()
        resampled[:, axes] = np.maximum(1, np.round(spacings[:, axes] / target * shapes[:, axes]))
        target_spacing = [float(t) for t in target]
        rules["target_spacing"] = f"given: {target_spacing} (overrides the median-spacing rule)"
    elif natural:
        target_spacing = None
        resampled = shapes
        rules["target_spacing"] = "None: natural 2D images are not resampled"
    else:
        target = median_spacing[axes]
        resampled = shapes.copy()
        resampled[:, axes] = np.round(spacings[:, axes] / target * shapes[:, axes])
        target_spacing = [float(s) for s in target]
        if np.allclose(spacings[:, axes], target):
            target_spacing = None
            rules["target_spacing"] = "None: every case already has the median spacing"
        else:
            rules["target_spacing"] = "median spacing per axis" + (
                " (in-plane axes; slices keep their spacing)" if slice_axis is not None else "")
    median_shape = np.median(resampled, axis=0)
    seen = median_shape[axes]
    budget = float(memory_budget_gb if memory_budget_gb is not None else DEFAULT_MEMORY_GB)
    if patch_size is None:
        if dims == 2:
            div = [32] * 2
            patch = [min(MAX_PATCH_2D, _round_up(s, 32)) for s in seen]
            rules["patch_size"] = f"median in-plane shape rounded up to a multiple of 32, capped at {MAX_PATCH_2D}"
        else:
            div = [32 if s >= 64 else 16 for s in seen]
            patch = [_round_up(s, d) for s, d in zip(seen, div)]
            limit = VOXELS_3D_PER_GB * budget
            mm = median_spacing[axes]
            while np.prod(patch) > limit and any(p > d for p, d in zip(patch, div)):
                extent = [p * s if p > d else -1 for p, s, d in zip(patch, mm, div)]
                i = int(np.argmax(extent))
                patch[i] -= div[i]
            rules["patch_size"] = (f"median shape rounded up to multiples of {div}, shrunk along the largest "
                                   f"physical extent until <= {int(limit)} voxels "
                                   f"({VOXELS_3D_PER_GB}/GB x {budget} GB)")
    else:
        patch = [int(p) for p in patch_size]
        rules["patch_size"] = "given"
        if len(patch) != dims:
            raise ValueError(f"patch_size {patch} must have {dims} entries for a {dims}D model")
    if batch_size is None:
        if dims == 3:
            batch = 2
            rules["batch_size"] = "2 (3D)"
        else:
            total_pixels = float(np.sum(np.prod(resampled, axis=1)))
            by_budget = int(PIXELS_2D_PER_GB * budget // int(np.prod(patch)))
            by_data = int(0.05 * total_pixels // int(np.prod(patch)))
            batch = max(2, min(by_budget, by_data))
            rules["batch_size"] = (f"max(2, min({PIXELS_2D_PER_GB}/GB x {budget} GB / patch pixels = {by_budget}, "
                                   f"5% of training pixels / patch pixels = {by_data}))")
    else:
        batch = int(batch_size)
        rules["batch_size"] = "given"
    channel_names = [raw.channel_names[k] for k in sorted(raw.channel_names, key=int)]
    norm = list(normalization) if normalization is not None else normalization_for(channel_names, raw.file_ending)
    bad = [s for s in norm if s not in NORMALIZATION_SCHEMES]
    if bad or len(norm) != len(channel_names):
        raise ValueError(f"normalization {norm} must give one of {NORMALIZATION_SCHEMES} per channel {channel_names}")
    rules["normalization"] = ("given" if normalization is not None
                              else "CT -> ct, noNorm -> none, R/G/B -> rgb, else zscore")
    stats = [dict(fp["intensity"][c]) if s == "ct" else {} for c, s in enumerate(norm)]
    labels = {k: v for k, v in raw.labels.items()}
    num_classes = max(int(v) for v in raw.all_labels if v != raw.ignore_label) + 1
    extra = {"rules": rules, "median_shape": [float(s) for s in median_shape],
             "median_spacing": [float(s) for s in median_spacing], "num_training_cases": len(fp["cases"]),
             "memory_budget_gb": budget, "intensity": fp["intensity"], "model": model_name,
             "dataset": str(raw.path), "ignore_label": raw.ignore_label}
    return Plan(spatial_dims=dims, channel_names=channel_names, normalization=norm, labels=labels,
                num_classes=num_classes, patch_size=patch, batch_size=batch, intensity_stats=stats,
                target_spacing=target_spacing, slice_axis=slice_axis, extra=extra)
