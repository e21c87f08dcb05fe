"""Dimension-agnostic layer helpers shared by blocks and models."""

from .drop import DropPath, drop_path, stage_drop_path_rates
from .padding import crop_to, pad_to_multiple

__all__ = ["DropPath", "drop_path", "stage_drop_path_rates", "crop_to", "pad_to_multiple"]
