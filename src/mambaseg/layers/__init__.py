"""Dimension-agnostic layer helpers shared by blocks and models."""

from .drop import DropPath, drop_path
from .padding import crop_to, pad_to_multiple

__all__ = ["DropPath", "drop_path", "crop_to", "pad_to_multiple"]
