"""Segmentation losses: soft Dice, compound Dice + CE (nnU-Net, SSL4MIS, VM-UNet presets), deep supervision."""

from mambaseg.losses.dice import (
    DeepSupervisionLoss,
    DiceCELoss,
    downsample_target,
    nnunet_deep_supervision_weights,
    soft_dice_loss,
)

__all__ = [
    "DeepSupervisionLoss",
    "DiceCELoss",
    "downsample_target",
    "nnunet_deep_supervision_weights",
    "soft_dice_loss",
]
