"""Stochastic depth (drop path), as timm defines it: whole residual branches dropped per sample."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["DropPath", "drop_path", "stage_drop_path_rates"]


def stage_drop_path_rates(rate: float, depths: Sequence[int], descending: bool = False) -> list[list[float]]:
    """The Swin/VMamba stochastic-depth schedule: ``linspace(0, rate, sum(depths))`` cut into one list per stage.

    Args:
        rate: the largest drop probability (the last block's).
        depths: blocks per stage.
        descending: reverse the whole schedule before cutting it (decoders that start deep: VM-UNet).

    Returns:
        ``len(depths)`` lists, stage ``i`` holding ``depths[i]`` rates. Computed on the CPU, so that a model can be
        built under another default device (meta).
    """
    depths = [int(d) for d in depths]
    rates = torch.linspace(0, rate, sum(depths), device="cpu").tolist()
    if descending:
        rates = rates[::-1]
    return [rates[sum(depths[:i]):sum(depths[:i + 1])] for i in range(len(depths))]


def drop_path(x: Tensor, p: float = 0.0, training: bool = False) -> Tensor:
    """Stochastic depth: zero whole samples with probability ``p``, rescale the rest by ``1/(1-p)``.

    Args:
        x: ``(B, ...)``.
        p: Drop probability.
        training: Identity when False or ``p == 0``.

    Returns:
        Tensor shaped like ``x``.
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep) if keep > 0.0 else x * mask


class DropPath(nn.Module):
    """Module wrapper of :func:`drop_path` (per-sample stochastic depth)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
