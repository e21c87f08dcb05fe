"""Any input size for networks that need spatial sizes divisible by their total stride: pad, run, crop back."""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch.nn.functional as F
from torch import Tensor

__all__ = ["pad_to_multiple", "crop_to", "crop_outputs"]


def pad_to_multiple(x: Tensor, divisor: Union[int, Sequence[int]],
                    mode: str = "replicate") -> tuple[Tensor, tuple[int, ...]]:
    """Pads the end of every spatial axis of ``x: (B, C, *spatial)`` up to a multiple of ``divisor``.

    Args:
        x: ``(B, C, *spatial)``.
        divisor: One divisor for every axis, or one per spatial axis.
        mode: ``F.pad`` mode: ``"replicate"`` (the Vision-Mamba models) or ``"constant"`` (zeros; nnU-Net nets).

    Returns:
        The padded tensor (``x`` itself when nothing is needed) and the original spatial size, for :func:`crop_to`.
    """
    spatial = tuple(x.shape[2:])
    divisors = [divisor] * len(spatial) if isinstance(divisor, int) else list(divisor)
    pads = [(-s) % d for s, d in zip(spatial, divisors)]
    if not any(pads):
        return x, spatial
    flat = [p for pad in reversed(pads) for p in (0, pad)]  # F.pad order: last axis first
    return F.pad(x, flat, mode=mode), spatial


def crop_to(x: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """Crops ``x: (B, C, *padded)`` back to ``(B, C, *spatial)`` (a view; ``x`` itself when sizes already match)."""
    if tuple(x.shape[2:]) == tuple(spatial):
        return x
    return x[(..., *(slice(0, s) for s in spatial))]


def crop_outputs(out: Union[Tensor, list[Tensor]], spatial: Sequence[int],
                 level_strides: Sequence[Sequence[int]]) -> Union[Tensor, list[Tensor]]:
    """Crops logits, or a deep-supervision list (highest resolution first), back to an unpadded input size.

    Output ``i`` was computed at stride ``level_strides[i]`` and is cropped to ``ceil(spatial / stride)``.
    """
    def crop(t: Tensor, stride: Sequence[int]) -> Tensor:
        return crop_to(t, tuple(math.ceil(s / st) for s, st in zip(spatial, stride)))

    if isinstance(out, Tensor):
        return crop(out, level_strides[0])
    return [crop(t, level_strides[i]) for i, t in enumerate(out)]
