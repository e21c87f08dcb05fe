"""Sliding-window inference with nnU-Net's Gaussian blending, and mirroring test-time augmentation.

Follows nnU-Net v2 (MIC-DKFZ/nnUNet ``nnunetv2/inference/sliding_window_prediction.py``
``compute_gaussian`` / ``compute_steps_for_sliding_window``, and ``predict_from_raw_data.py``
``nnUNetPredictor._internal_maybe_mirror_and_predict``; padding as acvl_utils ``pad_nd_image``):

* Importance map: a delta at ``patch // 2`` smoothed by a Gaussian of sigma ``patch * sigma_scale``
  (scipy ``gaussian_filter``, ``mode="constant"``, truncated at 4 sigma), divided by its maximum;
  zeros are replaced by the smallest non-zero value. Computed here in closed form (separable), equal
  to the scipy construction.
* Tiles: target step ``patch * (1 - overlap)`` (nnU-Net's ``tile_step_size = 1 - overlap``);
  ``ceil((size - patch) / step) + 1`` tiles per axis, evenly spaced (rounded) so that the first
  starts at 0 and the last ends at the image edge.
* Images smaller than the patch along an axis are zero-padded (centred, the odd voxel after) and the
  result is cropped back.
* Blending: ``sum(w * logits) / sum(w)`` in float32.
* Mirroring: every non-empty subset of the mirror axes, flip, predict, flip back; mean over
  ``2^len(axes)`` predictions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "compute_gaussian",
    "compute_steps_for_sliding_window",
    "predict_with_tta",
    "sliding_window_inference",
]

PredictFn = Callable[[Tensor], Tensor | Sequence[Tensor]]


def _first(out: Tensor | Sequence[Tensor]) -> Tensor:
    """Highest-resolution logits of a (possibly deep-supervised) model output."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (list, tuple)) and len(out) > 0 and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"predict_fn must return a Tensor or a non-empty list of Tensors, got {type(out).__name__}")


def compute_gaussian(patch_size: Sequence[int], sigma_scale: float = 1.0 / 8,
                     dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> Tensor:
    """nnU-Net's Gaussian importance map for one tile.

    Args:
        patch_size: tile size ``P`` (2 or 3 entries, any number works).
        sigma_scale: sigma per axis is ``P_i * sigma_scale``.
        dtype, device: of the result.

    Returns:
        ``(*P)`` map with maximum 1 and no zeros.
    """
    vals: Tensor | None = None
    for p in patch_size:
        p = int(p)
        sigma = p * sigma_scale
        radius = int(4.0 * sigma + 0.5)  # scipy.ndimage truncate=4.0
        x = torch.arange(p, dtype=torch.float64) - (p // 2)
        g = torch.exp(-0.5 * (x / sigma) ** 2)
        g = torch.where(x.abs() <= radius, g, torch.zeros_like(g))
        vals = g if vals is None else vals.unsqueeze(-1) * g
    if vals is None:
        raise ValueError("patch_size must not be empty")
    vals = (vals / vals.max()).to(dtype=dtype, device=device)
    nonzero = vals[vals != 0]
    return torch.where(vals == 0, nonzero.min(), vals)


def compute_steps_for_sliding_window(image_size: Sequence[int], patch_size: Sequence[int],
                                     tile_step_size: float) -> list[list[int]]:
    """Tile start coordinates per axis (nnU-Net's ``compute_steps_for_sliding_window``).

    Args:
        image_size: spatial size, at least ``patch_size`` on every axis.
        patch_size: tile size.
        tile_step_size: step as a fraction of the patch, in ``(0, 1]`` (``1 - overlap``).

    Returns:
        One sorted list of start indices per axis; the first is 0, the last ``size - patch``.
    """
    if not 0 < tile_step_size <= 1:
        raise ValueError(f"tile_step_size must be in (0, 1], got {tile_step_size}")
    steps = []
    for size, patch in zip(image_size, patch_size):
        if size < patch:
            raise ValueError(f"image size {tuple(image_size)} must be >= patch size {tuple(patch_size)}")
        num = math.ceil((size - patch) / (patch * tile_step_size)) + 1
        if num > 1:
            actual = (size - patch) / (num - 1)
            steps.append([round(actual * i) for i in range(num)])  # np.round: half to even
        else:
            steps.append([0])
    return steps


def _tiles(steps: list[list[int]], patch: Sequence[int]) -> Iterator[tuple[slice, ...]]:
    for starts in itertools.product(*steps):
        yield tuple(slice(s, s + p) for s, p in zip(starts, patch))


@torch.no_grad()
def sliding_window_inference(
    predict_fn: PredictFn,
    image: Tensor,
    patch_size: int | Sequence[int],
    overlap: float = 0.5,
    gaussian: bool = True,
    sigma_scale: float = 1.0 / 8,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 1,
    progress: bool = False,
) -> Tensor:
    """Predict a whole image tile by tile and blend the tiles (nnU-Net v2's sliding window).

    Args:
        predict_fn: maps ``(N, C, *P)`` to logits ``(N, K, *P)`` or a list of logits (the first, the
            highest resolution, is used); e.g. a model in eval mode, or
            ``lambda x: predict_with_tta(model, x, (0, 1))`` for nnU-Net's per-tile mirroring.
        image: ``(B, C, *S)`` with ``len(S) == len(patch_size)`` (2D or 3D).
        patch_size: tile size ``P`` (an int is used for every axis).
        overlap: fraction of the tile shared by neighbours, in ``[0, 1)``; nnU-Net's default
            ``tile_step_size = 0.5`` is ``overlap = 0.5``.
        gaussian: weight each tile by :func:`compute_gaussian` (else uniform weights).
        sigma_scale: Gaussian sigma as a fraction of the patch (nnU-Net: 1/8).
        num_classes: expected ``K``; checked when given (inferred from the first tile otherwise).
        device: where tiles are predicted and blended, and where the result lives (default: the
            device of ``image``).
        batch_size: tiles per ``predict_fn`` call (each call gets ``batch_size * B`` samples).
        progress: show a tqdm progress bar (needs ``tqdm``).

    Returns:
        Blended logits ``(B, K, *S)`` in float32 on ``device``. Runs under ``torch.no_grad()``.
    """
    spatial = tuple(image.shape[2:])
    n = len(spatial)
    patch = (int(patch_size),) * n if isinstance(patch_size, int) else tuple(int(p) for p in patch_size)
    if image.ndim < 3 or len(patch) != n:
        raise ValueError(f"image {tuple(image.shape)} must be (B, C, *spatial) with {len(patch)} spatial axes "
                         f"to match patch_size {patch}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = image.device if device is None else torch.device(device)
    b = image.shape[0]

    # Pad to at least the patch, centred with the odd voxel after (acvl_utils.pad_nd_image).
    padded = tuple(max(s, p) for s, p in zip(spatial, patch))
    pad_lo = [(ps - s) // 2 for ps, s in zip(padded, spatial)]
    if padded != spatial:
        pad_arg: list[int] = []
        for lo, ps, s in reversed(list(zip(pad_lo, padded, spatial))):
            pad_arg += [lo, ps - s - lo]
        image = F.pad(image, pad_arg, mode="constant", value=0.0)
    crop = (slice(None), slice(None)) + tuple(slice(lo, lo + s) for lo, s in zip(pad_lo, spatial))

    weight = (compute_gaussian(patch, sigma_scale, torch.float32, device) if gaussian
              else torch.ones(patch, dtype=torch.float32, device=device))
    tiles = list(_tiles(compute_steps_for_sliding_window(padded, patch, 1.0 - overlap), patch))
    bar = None
    if progress:
        try:
            from tqdm import tqdm
        except ImportError as e:  # pragma: no cover - tqdm is optional
            raise ImportError("progress=True needs tqdm: pip install tqdm") from e
        bar = tqdm(total=len(tiles), desc="sliding window")

    logits: Tensor | None = None
    norm = torch.zeros((1, 1) + padded, dtype=torch.float32, device=device)
    for start in range(0, len(tiles), batch_size):
        group = tiles[start:start + batch_size]
        x = torch.cat([image[(slice(None), slice(None)) + sl] for sl in group], dim=0).to(device)
        out = _first(predict_fn(x))
        if out.ndim != image.ndim or out.shape[0] != x.shape[0] or tuple(out.shape[2:]) != patch:
            raise ValueError(f"predict_fn returned shape {tuple(out.shape)} for a tile of shape {tuple(x.shape)}; "
                             f"expected ({x.shape[0]}, K, *{patch})")
        if logits is None:
            k = out.shape[1]
            if num_classes is not None and k != num_classes:
                raise ValueError(f"predict_fn returned {k} channels, num_classes={num_classes}")
            logits = torch.zeros((b, k) + padded, dtype=torch.float32, device=device)
        out = out.to(device=device, dtype=torch.float32) * weight
        for i, sl in enumerate(group):
            idx = (slice(None), slice(None)) + sl
            logits[idx] += out[i * b:(i + 1) * b]
            norm[idx] += weight
        if bar is not None:
            bar.update(len(group))
    if bar is not None:
        bar.close()
    assert logits is not None
    return (logits / norm)[crop]


@torch.no_grad()
def predict_with_tta(predict_fn: PredictFn, image: Tensor, mirror_axes: Sequence[int] | None = None) -> Tensor:
    """Average predictions over all mirrorings of ``mirror_axes`` (nnU-Net's test-time mirroring).

    Args:
        predict_fn: maps ``(B, C, *S)`` to logits ``(B, K, *S)`` or a list of them (first used).
        image: ``(B, C, *S)``.
        mirror_axes: *spatial* axes (0-based, nnU-Net convention: 0 is the first spatial axis);
            ``None`` or empty: a single plain prediction.

    Returns:
        Mean logits over the ``2^len(mirror_axes)`` predictions, ``(B, K, *S)`` in float32.
    """
    pred = _first(predict_fn(image)).float()
    if not mirror_axes:
        return pred
    n = image.ndim - 2
    axes = sorted({int(a) for a in mirror_axes})
    if axes[0] < 0 or axes[-1] >= n:
        raise ValueError(f"mirror_axes {tuple(mirror_axes)} must be spatial axes in [0, {n})")
    dims = [a + 2 for a in axes]
    combos = [c for r in range(1, len(dims) + 1) for c in itertools.combinations(dims, r)]
    for flip in combos:
        pred = pred + torch.flip(_first(predict_fn(torch.flip(image, flip))).float(), flip)
    return pred / (len(combos) + 1)
