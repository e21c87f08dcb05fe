"""mambaseg: medical image segmentation with Mamba (selective state-space) models, 2D and 3D, on any machine."""

__version__ = "0.1.0"
