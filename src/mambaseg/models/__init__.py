"""Segmentation models and their registry.

Importing this package registers every model variant (its only import-time effect).
Build one by name with :func:`create_model`; see :func:`list_models` and :func:`model_info`.
"""

from ._registry import ModelInfo, create_model, is_model, list_models, model_info, register_model
from . import mamba_unet as _mamba_unet  # noqa: F401  (registers mamba_unet, mamba_unet_test)
from . import unet  # noqa: F401
from . import umamba  # noqa: F401
from . import umamba_enc  # noqa: F401
from . import vm_unet  # noqa: F401
from . import lightm_unet  # noqa: F401
from . import ultralight_vm_unet  # noqa: F401
from . import h_vmunet  # noqa: F401
from . import swin_unet  # noqa: F401
from . import swin_umamba  # noqa: F401
from .mamba_unet import MambaUNet

__all__ = ["ModelInfo", "create_model", "is_model", "list_models", "model_info", "register_model", "MambaUNet"]
