"""Soft Dice, compound Dice + cross-entropy, and the deep-supervision wrapper.

One functional core (:func:`soft_dice_loss`) whose arguments reproduce the Dice losses of the
codebases this package re-implements, plus thin ``nn.Module`` wrappers:

* nnU-Net v2 (MIC-DKFZ/nnUNet, ``nnunetv2/training/loss/dice.py::MemoryEfficientSoftDiceLoss``,
  ``compound_losses.py::DC_and_CE_loss``, ``nnUNetTrainer._build_loss``): softmax, background
  excluded (``do_bg=False``), ``smooth=1e-5`` added to numerator and denominator, denominator
  ``sum(p) + sum(g)`` clipped at 1e-8, ``batch_dice`` from the plans, mean over the remaining
  (sample, class) entries; total ``1 * CE + 1 * Dice``. nnU-Net returns ``-dice`` where this
  module returns ``1 - dice``: a constant offset, identical gradients.
  Preset: :meth:`DiceCELoss.nnunet`.
* SSL4MIS / Mamba-UNet (HiLab-git/SSL4MIS ``code/utils/losses.py::DiceLoss``; Mamba-UNet
  ``train_fully_supervised_2D_VIM.py``: ``loss = 0.5 * (loss_dice + loss_ce)``): softmax, *all*
  classes including background, sums over the whole batch (a batch Dice), squared terms in the
  denominator (``sum(p^2) + sum(g^2)``), ``smooth=1e-5`` in numerator and denominator, mean over
  classes. Preset: :meth:`DiceCELoss.ssl4mis`.
* VM-UNet / UltraLight VM-UNet binary (JCruan519/VM-UNet ``utils.py::BceDiceLoss``): one output
  channel, sigmoid, ``BCE + Dice`` with weights 1 and 1, Dice per sample with ``smooth=1``
  (numerator and denominator), mean over samples. The official code applies the sigmoid inside
  the network and uses ``nn.BCELoss``; here the loss takes logits and uses
  ``binary_cross_entropy_with_logits`` (same value, numerically stable).
  Preset: :meth:`DiceCELoss.vmunet_binary`.

Deep supervision (nnU-Net ``DeepSupervisionWrapper`` and ``_build_loss``): weights ``1 / 2^i``
for output ``i`` (highest resolution first), the lowest-resolution output weighted 0, normalised
to sum 1; targets downsampled with ``F.interpolate(mode="nearest-exact")`` as
batchgeneratorsv2's ``DownsampleSegForDSTransform``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DeepSupervisionLoss",
    "DiceCELoss",
    "downsample_target",
    "nnunet_deep_supervision_weights",
    "soft_dice_loss",
]


def _prepare(logits: Tensor, target: Tensor, ignore_index: int | None
             ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Split ``target`` into a one-hot (or probability) tensor, integer labels and a valid mask.

    Returns:
        ``(onehot (B, C, *S) float, labels (B, *S) long or None, mask (B, 1, *S) float or None)``.
    """
    if logits.ndim < 3:
        raise ValueError(f"logits must be (B, C, *spatial), got shape {tuple(logits.shape)}")
    b, c = logits.shape[:2]
    spatial = tuple(logits.shape[2:])
    if target.ndim == logits.ndim and target.shape[1] == c and c > 1 and target.is_floating_point():
        if tuple(target.shape) != tuple(logits.shape):
            raise ValueError(f"one-hot target shape {tuple(target.shape)} != logits {tuple(logits.shape)}")
        if ignore_index is not None:
            raise ValueError("ignore_index needs integer labels, not a one-hot target")
        return target.to(logits.dtype), None, None
    if target.ndim == logits.ndim:
        if target.shape[1] != 1:
            raise ValueError(f"label target must be (B, *spatial) or (B, 1, *spatial), got {tuple(target.shape)}")
        target = target[:, 0]
    if tuple(target.shape) != (b, *spatial):
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    mask = None
    if ignore_index is not None:
        valid = target != ignore_index
        mask = valid.unsqueeze(1).to(logits.dtype)
        target = torch.where(valid, target, torch.zeros_like(target))
    if c == 1:  # binary: a float target may be soft (BCE and soft Dice accept it)
        return target.unsqueeze(1).to(logits.dtype), None, mask
    labels = target.long()
    onehot = torch.zeros_like(logits).scatter_(1, labels.unsqueeze(1), 1.0)
    return onehot, labels, mask


def soft_dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    include_background: bool = True,
    batch_dice: bool = False,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    squared: bool = False,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Soft Dice loss ``1 - (2 sum(p g) + smooth_nr) / (sum(p) + sum(g) + smooth_dr)`` on logits.

    Multi-class (``C > 1``): probabilities are ``softmax(logits, dim=1)``. Binary (``C == 1``):
    probabilities are ``sigmoid(logits)``, the single channel is the foreground and is always
    scored (``include_background`` is ignored).

    Args:
        logits: ``(B, C, *spatial)`` raw network outputs.
        target: integer labels ``(B, *spatial)`` or ``(B, 1, *spatial)`` (values ``0..C-1``,
            ``{0, 1}`` or soft values in ``[0, 1]`` when ``C == 1``), or a float one-hot / probability
            target ``(B, C, *spatial)`` when ``C > 1``.
        include_background: score channel 0 (nnU-Net ``do_bg``; False in nnU-Net, True in
            SSL4MIS and MONAI's default).
        batch_dice: sum the statistics over the batch as well as space (one Dice per class, nnU-Net
            ``batch_dice``; SSL4MIS's DiceLoss always does this).
        smooth_nr: added to the numerator ``2 sum(p g)``.
        smooth_dr: added to the denominator; the denominator is then clipped at 1e-8 (nnU-Net) so
            that an empty class with ``smooth_dr=0`` gives no NaN.
        squared: denominator ``sum(p^2) + sum(g^2)`` (SSL4MIS / V-Net) instead of ``sum(p) + sum(g)``.
        ignore_index: label value whose voxels are excluded (nnU-Net's ignore label: the
            statistics are multiplied by a valid mask).
        reduction: ``"mean"`` (scalar over all remaining entries), ``"sum"``, or ``"none"``:
            ``(B, C')`` per sample and class, ``(C',)`` with ``batch_dice``.

    Returns:
        The loss (scalar unless ``reduction="none"``), in the dtype of ``logits``.
    """
    onehot, _, mask = _prepare(logits, target, ignore_index)
    probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
    if not include_background and logits.shape[1] > 1:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    if mask is not None:
        probs, onehot = probs * mask, onehot * mask
    axes = list(range(2, logits.ndim))
    intersect = (probs * onehot).sum(axes)
    sum_pred = (probs * probs).sum(axes) if squared else probs.sum(axes)
    sum_gt = (onehot * onehot).sum(axes) if squared else onehot.sum(axes)
    if batch_dice:
        intersect, sum_pred, sum_gt = intersect.sum(0), sum_pred.sum(0), sum_gt.sum(0)
    dice = (2.0 * intersect + smooth_nr) / torch.clamp(sum_pred + sum_gt + smooth_dr, min=1e-8)
    loss = 1.0 - dice
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class DiceCELoss(nn.Module):
    """``ce_weight * CE + dice_weight * soft Dice`` on logits; BCE-with-logits when ``C == 1``.

    Defaults are nnU-Net v2's (1:1, background excluded from the Dice, smooth 1e-5, no batch
    Dice). See the presets :meth:`nnunet`, :meth:`ssl4mis` and :meth:`vmunet_binary`.

    Args:
        ce_weight: weight of the cross-entropy term (BCE when ``C == 1``).
        dice_weight: weight of the Dice term.
        include_background, batch_dice, smooth_nr, smooth_dr, squared: see :func:`soft_dice_loss`.
        ignore_index: label excluded from both terms (CE ``ignore_index`` and the Dice mask). As
            nnU-Net, the CE term is 0 when every voxel is ignored.
        class_weights: optional ``(C,)`` weights for the multi-class CE (``nn.CrossEntropyLoss``
            ``weight``).

    Shape:
        ``forward(logits (B, C, *S), target (B, *S) | (B, 1, *S) | one-hot (B, C, *S))`` -> scalar.
    """

    def __init__(
        self,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        *,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        squared: bool = False,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)
        self.squared = squared
        self.ignore_index = ignore_index
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weight, persistent=False)

    @classmethod
    def nnunet(cls, batch_dice: bool = False, ignore_index: int | None = None) -> DiceCELoss:
        """nnU-Net v2 ``DC_and_CE_loss``: 1 CE + 1 Dice, no background, smooth 1e-5."""
        return cls(1.0, 1.0, include_background=False, batch_dice=batch_dice, smooth_nr=1e-5,
                   smooth_dr=1e-5, ignore_index=ignore_index)

    @classmethod
    def ssl4mis(cls) -> DiceCELoss:
        """SSL4MIS / Mamba-UNet: ``0.5 CE + 0.5 DiceLoss`` (all classes, batch sums, squared, 1e-5)."""
        return cls(0.5, 0.5, include_background=True, batch_dice=True, smooth_nr=1e-5, smooth_dr=1e-5,
                   squared=True)

    @classmethod
    def vmunet_binary(cls) -> DiceCELoss:
        """VM-UNet / UltraLight VM-UNet ``BceDiceLoss(wb=1, wd=1)``: per-sample Dice, smooth 1."""
        return cls(1.0, 1.0, include_background=True, batch_dice=False, smooth_nr=1.0, smooth_dr=1.0)

    def dice(self, logits: Tensor, target: Tensor) -> Tensor:
        """The Dice term alone (unweighted), see :func:`soft_dice_loss`."""
        return soft_dice_loss(logits, target, include_background=self.include_background,
                              batch_dice=self.batch_dice, smooth_nr=self.smooth_nr, smooth_dr=self.smooth_dr,
                              squared=self.squared, ignore_index=self.ignore_index)

    def ce(self, logits: Tensor, target: Tensor) -> Tensor:
        """The cross-entropy term alone (unweighted): CE for ``C > 1``, BCE-with-logits for ``C == 1``."""
        onehot, labels, mask = _prepare(logits, target, self.ignore_index)
        if logits.shape[1] == 1:
            bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
            if mask is None:
                return bce.mean()
            return (bce * mask).sum() / torch.clamp(mask.sum(), min=1.0)
        if labels is None:  # soft / one-hot target
            return F.cross_entropy(logits, onehot, weight=self.class_weights)
        if mask is not None and not bool(mask.any()):
            return logits.sum() * 0.0
        raw = target[:, 0] if target.ndim == logits.ndim else target
        ignore = -100 if self.ignore_index is None else self.ignore_index
        return F.cross_entropy(logits, raw.long(), weight=self.class_weights, ignore_index=ignore)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Weighted sum of the two terms; a term with weight 0 is not computed."""
        loss = logits.new_zeros(())
        if self.ce_weight != 0:
            loss = loss + self.ce_weight * self.ce(logits, target)
        if self.dice_weight != 0:
            loss = loss + self.dice_weight * self.dice(logits, target)
        return loss


def nnunet_deep_supervision_weights(num_outputs: int) -> list[float]:
    """nnU-Net v2's deep-supervision weights: ``1 / 2^i``, the last set to 0, normalised to sum 1.

    Args:
        num_outputs: number of network outputs (highest resolution first).

    Returns:
        ``num_outputs`` floats; ``[1.0]`` for a single output (nnU-Net would divide by zero).
    """
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    if num_outputs == 1:
        return [1.0]
    weights = [1.0 / 2 ** i for i in range(num_outputs)]
    weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def downsample_target(target: Tensor, spatial_shape: Sequence[int]) -> Tensor:
    """Resize a label or one-hot target with nearest-exact interpolation (nnU-Net's DS rule).

    Args:
        target: ``(B, *S)``, ``(B, 1, *S)`` or ``(B, C, *S)``; any dtype (cast back after resizing).
        spatial_shape: the new ``S'``.

    Returns:
        The target with the same layout and dtype and spatial shape ``S'`` (the input itself when
        the shape is unchanged).
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    n = len(spatial_shape)
    if tuple(target.shape[-n:]) == spatial_shape and target.ndim in (n + 1, n + 2):
        return target
    if target.ndim == n + 1:
        return downsample_target(target.unsqueeze(1), spatial_shape)[:, 0]
    if target.ndim != n + 2:
        raise ValueError(f"target of shape {tuple(target.shape)} does not fit spatial shape {spatial_shape}")
    return F.interpolate(target.float(), size=spatial_shape, mode="nearest-exact").to(target.dtype)


class DeepSupervisionLoss(nn.Module):
    """Apply ``loss`` to every output of a deep-supervised network against a resized target.

    Args:
        loss: a callable ``loss(logits, target) -> scalar`` (e.g. :class:`DiceCELoss`).
        weights: one weight per output, used as given; ``None`` uses
            :func:`nnunet_deep_supervision_weights` for the number of outputs seen.

    Shape:
        ``forward(outputs, target)``: ``outputs`` is a list/tuple of logits ``(B, C, *S_i)``,
        highest resolution first (a single tensor is passed straight to ``loss``); ``target`` is
        the full-resolution target, resized to each ``S_i`` with :func:`downsample_target`.
        Zero-weighted outputs are still evaluated (as nnU-Net), so every head takes part in the
        graph. Returns a scalar.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]

    def forward(self, outputs: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        if isinstance(outputs, Tensor):
            return self.loss(outputs, target)
        outputs = list(outputs)
        weights = self.weights if self.weights is not None else nnunet_deep_supervision_weights(len(outputs))
        if len(weights) != len(outputs):
            raise ValueError(f"{len(weights)} deep-supervision weights for {len(outputs)} outputs")
        total = outputs[0].new_zeros(())
        for out, w in zip(outputs, weights):
            total = total + w * self.loss(out, downsample_target(target, out.shape[2:]))
        return total
