"""Neural-network blocks built on :func:`mambaseg.ops.selective_scan`.

* :class:`Mamba`, :class:`MambaLayer`: Mamba-1 block (Gu & Dao 2023) and the
  U-Mamba feature-map layer (Ma et al. 2024).
* :class:`SS2D`, :class:`VSSBlock`: VMamba 2D selective scan and block
  (Liu et al. 2024), as used by Mamba-UNet and VM-UNet.
"""

from .mamba import Mamba, MambaLayer
from .ss2d import SS2D, VSSBlock

__all__ = ["Mamba", "MambaLayer", "SS2D", "VSSBlock"]
