"""Stochastic depth (drop path), as timm defines it: whole residual branches dropped per sample."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["DropPath", "drop_path"]


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
