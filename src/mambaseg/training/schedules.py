"""Learning-rate schedules stepped once per iteration, resumable through ``state_dict``.

* Poly: ``lr = lr0 * (1 - t / T) ** 0.9`` as nnU-Net v2 (MIC-DKFZ/nnUNet
  ``nnunetv2/training/lr_scheduler/polylr.py::PolyLRScheduler``, stepped with the epoch index) and
  SSL4MIS / Mamba-UNet (``lr_ = base_lr * (1.0 - iter_num / max_iterations) ** 0.9`` set after
  every iteration). Here ``t`` is the number of ``scheduler.step()`` calls, so the optimizer step
  ``t`` (0-based) runs at ``lr(t)``. Mamba-UNet sets ``lr(iter_num)`` *before* incrementing
  ``iter_num``, so its step ``t >= 1`` runs at ``lr(t - 1)``: a one-iteration lag, negligible.
* Cosine with optional linear warm-up: ``lr0 * (s + (1 - s) * t / W)`` for ``t < W``, then
  ``min_lr + (lr0 - min_lr) * (1 + cos(pi * (t - W) / (T - W))) / 2``. With ``W = 0`` and
  ``min_lr = 0`` this is ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=T)``; with ``s = 0``
  it is VM-UNet's ``WP_CosineLR`` (``utils.py::get_scheduler``).

Both are closed-form in ``t`` (``last_epoch``), so ``load_state_dict`` restores them exactly and
steps past ``T`` stay at the final value (0 for poly, ``min_lr`` for cosine).
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["PolyLR", "WarmupCosineLR", "poly_lr", "warmup_cosine_lr"]


def poly_lr(step: int, base_lr: float, max_steps: int, exponent: float = 0.9) -> float:
    """``base_lr * (1 - min(step, max_steps) / max_steps) ** exponent``."""
    if max_steps <= 0:
        raise ValueError(f"max_steps must be > 0, got {max_steps}")
    t = min(max(step, 0), max_steps)
    return base_lr * (1.0 - t / max_steps) ** exponent


def warmup_cosine_lr(step: int, base_lr: float, max_steps: int, warmup_steps: int = 0,
                     warmup_start_factor: float = 0.0, min_lr: float = 0.0) -> float:
    """Linear warm-up from ``warmup_start_factor * base_lr`` over ``warmup_steps``, then cosine to ``min_lr``."""
    if max_steps <= 0 or not 0 <= warmup_steps < max_steps:
        raise ValueError(f"need max_steps > 0 and 0 <= warmup_steps < max_steps, got {max_steps}, {warmup_steps}")
    t = max(step, 0)
    if t < warmup_steps:
        return base_lr * (warmup_start_factor + (1.0 - warmup_start_factor) * t / warmup_steps)
    progress = min((t - warmup_steps) / (max_steps - warmup_steps), 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class PolyLR(LRScheduler):
    """Polynomial decay (nnU-Net / SSL4MIS), one ``step()`` per iteration.

    Args:
        optimizer: wrapped optimizer; each param group's initial ``lr`` is its ``lr0``.
        max_steps: ``T``, the total number of iterations.
        exponent: 0.9 in nnU-Net and SSL4MIS.
        last_epoch: index of the last step (``-1`` to start); prefer ``load_state_dict`` to resume.
    """

    def __init__(self, optimizer: Optimizer, max_steps: int, exponent: float = 0.9, last_epoch: int = -1) -> None:
        if max_steps <= 0:
            raise ValueError(f"max_steps must be > 0, got {max_steps}")
        self.max_steps = int(max_steps)
        self.exponent = float(exponent)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Learning rates at step ``last_epoch`` (closed form)."""
        return [poly_lr(self.last_epoch, float(b), self.max_steps, self.exponent) for b in self.base_lrs]

    _get_closed_form_lr = get_lr


class WarmupCosineLR(LRScheduler):
    """Cosine annealing with an optional linear warm-up, one ``step()`` per iteration.

    Args:
        optimizer: wrapped optimizer; each param group's initial ``lr`` is its peak ``lr0``.
        max_steps: ``T``, total iterations including warm-up.
        warmup_steps: ``W`` (0 for none).
        warmup_start_factor: ``s``, the first step's lr as a fraction of ``lr0``.
        min_lr: final learning rate.
        last_epoch: index of the last step (``-1`` to start).
    """

    def __init__(self, optimizer: Optimizer, max_steps: int, warmup_steps: int = 0,
                 warmup_start_factor: float = 0.0, min_lr: float = 0.0, last_epoch: int = -1) -> None:
        if max_steps <= 0 or not 0 <= warmup_steps < max_steps:
            raise ValueError(f"need max_steps > 0 and 0 <= warmup_steps < max_steps, got {max_steps}, {warmup_steps}")
        self.max_steps = int(max_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start_factor = float(warmup_start_factor)
        self.min_lr = float(min_lr)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Learning rates at step ``last_epoch`` (closed form)."""
        return [warmup_cosine_lr(self.last_epoch, float(b), self.max_steps, self.warmup_steps,
                                 self.warmup_start_factor, self.min_lr) for b in self.base_lrs]

    _get_closed_form_lr = get_lr
