"""Dimension-agnostic layer helpers shared by blocks and models."""

from .drop import DropPath, drop_path

__all__ = ["DropPath", "drop_path"]
