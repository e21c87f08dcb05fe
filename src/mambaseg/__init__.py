"""mambaseg: medical image segmentation with Mamba (selective state-space) models, 2D and 3D, on any machine."""

from .models import create_model, list_models, model_info

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "model_info", "__version__"]
