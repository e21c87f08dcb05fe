"""Any input size for networks that need spatial sizes divisible by their total stride: pad, run, crop back."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["pad_to_multiple", "crop_to"]


def pad_to_multiple(x: Tensor, divisor: int, mode: str = "replicate") -> tuple[Tensor, tuple[int, ...]]:
    """Pads the end of every spatial axis of ``x: (B, C, *spatial)`` up to a multiple of ``divisor``.

    Returns:
        The padded tensor (``x`` itself when nothing is needed) and the original spatial size, for :func:`crop_to`.
    """
    spatial = tuple(x.shape[2:])
    pads = [(-s) % divisor for s in spatial]
    if not any(pads):
        return x, spatial
    flat = [p for pad in reversed(pads) for p in (0, pad)]  # F.pad order: last axis first
    return F.pad(x, flat, mode=mode), spatial


def crop_to(x: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """Crops ``x: (B, C, *padded)`` back to ``(B, C, *spatial)`` (a view; ``x`` itself when sizes already match)."""
    if tuple(x.shape[2:]) == tuple(spatial):
        return x
    return x[(..., *(slice(0, s) for s in spatial))]
