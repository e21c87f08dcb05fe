"""Training recipes per model family: dicts of :class:`~mambaseg.training.trainer.TrainConfig` defaults.

A preset fills only the fields a config leaves unset (``None``); explicit YAML / CLI / Python values win, and the
resolved config is what a run saves. Sources (``shared/reference/papers.md``):

* ``nnunet`` (U-Net baseline, U-Mamba Bot/Enc, default for unknown families): nnU-Net v2 ``nnUNetTrainer``:
  SGD lr 0.01, Nesterov momentum 0.99, weight decay 3e-5, poly 0.9, Dice + CE, deep supervision, gradient norm
  clipped at 12, 1000 epochs of 250 iterations. U-Mamba (arXiv:2401.04722) trains inside nnU-Net unchanged.
* ``mamba_unet`` (Mamba-UNet, arXiv:2402.05079, and the Swin-UNet baseline trained by the same SSL4MIS script):
  SGD lr 0.01, momentum 0.9, weight decay 1e-4, poly 0.9, ``0.5 CE + 0.5 Dice`` (SSL4MIS), 224x224, batch 24,
  10,000 iterations. (The paper initialises from ImageNet VMamba-T weights; no pretrained weights are loaded here.)
* ``vm_unet`` (VM-UNet arXiv:2402.02491; UltraLight VM-UNet arXiv:2403.20035; H-vmunet arXiv:2403.13642): AdamW
  lr 1e-3, weight decay 1e-2, cosine to 1e-5, BCE + Dice (``DiceCELoss.vmunet_binary``: smooth 1, per sample; with
  two output classes it is softmax CE + Dice), 256x256. VM-UNet's ``CosineAnnealingLR(T_max=50)`` restarts every
  50 epochs; here one cosine spans the run. Epochs are passes over the training set (``iterations_per_epoch``
  unset = ``ceil(cases / batch)``): VM-UNet 300 epochs, batch 32; UltraLight / H-vmunet 250 epochs, batch 8.
* ``swin_umamba`` (Swin-UMamba arXiv:2402.03302, trained inside nnU-Net): nnU-Net pipeline with AdamW lr 1e-4,
  weight decay 0.05, cosine, deep supervision. The paper's 10-epoch encoder freeze only matters with ImageNet
  weights, which are not loaded here.
* ``lightm_unet`` (LightM-UNet arXiv:2403.05246): nnU-Net pipeline with Adam lr 1e-4, poly, no deep supervision.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BASE_DEFAULTS", "FAMILY_PRESET", "PRESETS", "preset_for"]

_NNUNET: dict[str, Any] = {
    "optimizer": "sgd", "lr": 0.01, "momentum": 0.99, "nesterov": True, "weight_decay": 3e-5,
    "schedule": "poly", "warmup_iterations": 0, "loss": "dice_ce", "deep_supervision": "auto", "grad_clip": 12.0,
    "epochs": 1000, "iterations_per_epoch": 250, "val_every": 250,
}

PRESETS: dict[str, dict[str, Any]] = {
    "nnunet": dict(_NNUNET),
    "mamba_unet": {
        "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4,
        "schedule": "poly", "warmup_iterations": 0, "loss": "ssl4mis", "deep_supervision": False, "grad_clip": 0.0,
        "patch_size": [224, 224], "batch_size": 24, "iterations": 10_000, "val_every": 200,
    },
    "vm_unet": {
        "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-2, "schedule": "cosine", "min_lr": 1e-5,
        "warmup_iterations": 0, "loss": "bce_dice", "deep_supervision": False, "grad_clip": 0.0,
        "patch_size": [256, 256], "batch_size": 32, "epochs": 300, "iterations_per_epoch": 0,
    },
    "ultralight_vm_unet": {
        "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-2, "schedule": "cosine", "min_lr": 1e-5,
        "warmup_iterations": 0, "loss": "bce_dice", "deep_supervision": False, "grad_clip": 0.0,
        "patch_size": [256, 256], "batch_size": 8, "epochs": 250, "iterations_per_epoch": 0,
    },
    "swin_umamba": {**_NNUNET, "optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.05, "schedule": "cosine",
                    "min_lr": 0.0},
    "lightm_unet": {**_NNUNET, "optimizer": "adam", "lr": 1e-4, "weight_decay": 3e-5, "deep_supervision": False},
}

#: model family -> preset name
FAMILY_PRESET: dict[str, str] = {
    "unet": "nnunet", "umamba": "nnunet", "umamba_enc": "nnunet",
    "mamba_unet": "mamba_unet", "swin_unet": "mamba_unet",
    "vm_unet": "vm_unet", "ultralight_vm_unet": "ultralight_vm_unet", "h_vmunet": "ultralight_vm_unet",
    "swin_umamba": "swin_umamba", "lightm_unet": "lightm_unet",
}

#: Values used for fields that neither the config nor the preset sets.
BASE_DEFAULTS: dict[str, Any] = {
    "optimizer": "sgd", "lr": 0.01, "momentum": 0.99, "nesterov": True, "weight_decay": 3e-5,
    "schedule": "poly", "warmup_iterations": 0, "min_lr": 0.0, "loss": "dice_ce", "deep_supervision": "auto",
    "grad_clip": 0.0, "iterations_per_epoch": 250, "val_every": 250,
}


def preset_for(model_family: str, preset: str = "auto") -> tuple[str, dict[str, Any]]:
    """``(preset name, defaults)`` for a model family.

    Args:
        model_family: :func:`mambaseg.model_info` ``family``.
        preset: ``"auto"`` (by family; nnU-Net for unknown families), ``"none"`` (base defaults only) or a key of
            :data:`PRESETS`.
    """
    if preset == "none":
        return "none", {}
    name = FAMILY_PRESET.get(model_family, "nnunet") if preset == "auto" else preset
    if name not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose 'auto', 'none' or one of {sorted(PRESETS)}")
    return name, dict(PRESETS[name])
