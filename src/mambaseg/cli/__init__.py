"""The ``mambaseg`` command line: one entry point, one sub-command per task."""

from .main import main

__all__ = ["main"]
