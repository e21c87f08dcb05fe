"""Segmentation models and their registry.

Importing this package registers every model variant (its only import-time effect).
Build one by name with :func:`create_model`; see :func:`list_models` and :func:`model_info`.
"""

from . import (
    h_vmunet,  # noqa: F401
    lightm_unet,  # noqa: F401
    segmamba,  # noqa: F401
    swin_umamba,  # noqa: F401
    swin_unet,  # noqa: F401
    swin_unetr,  # noqa: F401
    ultralight_vm_unet,  # noqa: F401
    umamba,  # noqa: F401
    umamba_enc,  # noqa: F401
    unet,  # noqa: F401
    vm_unet,  # noqa: F401
)
from . import mamba_unet as _mamba_unet  # noqa: F401  (registers mamba_unet, mamba_unet_test)
from ._registry import (
    ModelInfo,
    create_model,
    create_model_for_plan,
    is_model,
    list_models,
    model_info,
    register_model,
)
from .mamba_unet import MambaUNet

__all__ = ["ModelInfo", "create_model", "create_model_for_plan", "is_model", "list_models", "model_info",
           "register_model", "MambaUNet"]
