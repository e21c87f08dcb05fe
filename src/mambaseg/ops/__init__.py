"""Pure tensor operators: the selective scan and the 2D/3D scan orders."""

from ._chunked import clear_workspace
from .selective_scan import list_backends, register_backend, selective_scan, use_backend

__all__ = ["selective_scan", "list_backends", "register_backend", "use_backend", "clear_workspace"]
