"""Dimension-agnostic layer helpers shared by blocks and models."""

from .drop import DropPath, drop_path, stage_drop_path_rates
from .layout import copy_in_slabs_, transpose_contiguous
from .padding import crop_to, pad_to_multiple

__all__ = ["DropPath", "drop_path", "stage_drop_path_rates", "copy_in_slabs_", "crop_to", "pad_to_multiple",
           "transpose_contiguous"]
