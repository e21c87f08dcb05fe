"""SwinUNETR baseline: MONAI's ``SwinUNETR`` behind ``create_model``, for any input size.

Paper:
    A. Hatamizadeh, V. Nath, Y. Tang, D. Yang, H. R. Roth, D. Xu, "Swin UNETR: Swin Transformers for Semantic
    Segmentation of Brain Tumors in MRI Images", arXiv:2201.01266 (BrainLes 2021).

Implementation: ``monai.networks.nets.SwinUNETR`` itself (MONAI is a dependency; imported when the model is
built), stored as ``net`` — nothing is re-implemented. ``swin_unetr`` uses the configuration of MONAI's
BTCV / BraTS research contributions: ``feature_size=48``, ``depths=(2, 2, 2, 2)``, ``num_heads=(3, 6, 12, 24)``,
window 7, patch 2, instance norm, no dropout. (The constructor's own default is ``feature_size=24``;
48 is the published setting.)

Deliberate differences from calling MONAI directly:
    * ``in_channels`` / ``num_classes`` name MONAI's ``in_channels`` / ``out_channels``.
    * Any input size: MONAI needs every spatial size divisible by ``2**5 = 32`` (patch 2 and four patch
      mergings) and raises otherwise, and a 32-voxel axis fails too (the 1-voxel bottleneck reaches
      InstanceNorm, which needs more than one element); here the input is padded at the end of each axis
      (zeros by default, ``pad_mode``) to the next multiple of 32, at least 64, and the logits are cropped
      back. Multiples of 32 from 64 up run unpadded.
    * MONAI's SwinUNETR needs ``einops`` (an optional MONAI dependency); building the model without it raises
      an ImportError that says so.
    * MONAI < 1.5 requires the deprecated ``img_size`` argument (used there only for the same divisibility
      check); it is filled with ``(96,) * spatial_dims`` when the installed signature asks for it.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Sequence

from torch import Tensor, nn

from mambaseg.layers.padding import crop_to, pad_to_multiple
from mambaseg.models._registry import register_model

__all__ = ["SwinUNETR"]


class SwinUNETR(nn.Module):
    """MONAI ``SwinUNETR`` with padding to the size rule and cropping back.

    Args:
        in_channels: Input channels.
        num_classes: Output channels (logits).
        spatial_dims: 2 or 3.
        feature_size: Embedding width (a multiple of 12).
        depths: Swin blocks per stage (four stages).
        num_heads: Attention heads per stage.
        window_size: Attention window edge.
        drop_rate, attn_drop_rate, dropout_path_rate: MONAI's dropout settings.
        use_checkpoint: Gradient checkpointing in the Swin stages.
        use_v2: MONAI's SwinUNETR-V2 (a residual conv block before every Swin stage).
        pad_mode: ``F.pad`` mode for sizes that are not multiples of 32 (``"constant"`` = zeros).

    Shape:
        ``(B, in_channels, *spatial)`` (any size) -> logits ``(B, num_classes, *spatial)``.
    """

    size_divisor = 32  # patch 2 ** 5

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 3, feature_size: int = 48,
                 depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int = 7, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 dropout_path_rate: float = 0.0, use_checkpoint: bool = False, use_v2: bool = False,
                 pad_mode: str = "constant") -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"SwinUNETR supports spatial_dims 2 or 3, got spatial_dims={spatial_dims}")
        if feature_size % 12:
            raise ValueError(f"SwinUNETR: feature_size must be a multiple of 12 (MONAI's rule), got {feature_size}")
        if importlib.util.find_spec("einops") is None:
            raise ImportError("SwinUNETR: MONAI's SwinUNETR needs the einops package (pip install einops)")
        from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

        kwargs = {"in_channels": in_channels, "out_channels": num_classes, "depths": tuple(depths),
                  "num_heads": tuple(num_heads), "feature_size": feature_size, "norm_name": "instance",
                  "drop_rate": drop_rate, "attn_drop_rate": attn_drop_rate, "dropout_path_rate": dropout_path_rate,
                  "normalize": True, "use_checkpoint": use_checkpoint, "spatial_dims": spatial_dims,
                  "use_v2": use_v2}
        params = inspect.signature(MonaiSwinUNETR.__init__).parameters
        if "window_size" in params:
            kwargs["window_size"] = window_size
        elif window_size != 7:
            raise ValueError(f"SwinUNETR: this MONAI version fixes window_size=7, got {window_size}")
        if "img_size" in params:  # MONAI < 1.5
            kwargs["img_size"] = (96,) * spatial_dims
        self.in_channels, self.num_classes, self.spatial_dims = in_channels, num_classes, spatial_dims
        self.pad_mode = pad_mode
        self.net = MonaiSwinUNETR(**kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, *spatial)`` -> logits ``(B, num_classes, *spatial)``."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"SwinUNETR expects (B, {self.in_channels}, *spatial) with {self.spatial_dims} spatial "
                             f"dims, got {tuple(x.shape)}")
        spatial = tuple(x.shape[2:])
        x, _ = pad_to_multiple(x, self.padded_size(spatial), mode=self.pad_mode)  # divisor = target size
        return crop_to(self.net(x), spatial)

    def padded_size(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """Size an input is padded to: the next multiple of 32, at least 64 per axis."""
        d = self.size_divisor
        return tuple(max(2 * d, -(-int(s) // d) * d) for s in spatial)


_SWIN_UNETR_CFG = {"feature_size": 48, "depths": (2, 2, 2, 2), "num_heads": (3, 6, 12, 24), "window_size": 7}
_SWIN_UNETR_TEST_CFG = {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 2), "window_size": 4}


@register_model(family="swin_unetr", paper="arXiv:2201.01266", spatial_dims=(2, 3), default_cfg=_SWIN_UNETR_CFG)
def swin_unetr(**kwargs) -> SwinUNETR:
    """MONAI SwinUNETR, feature_size 48 (the BTCV / BraTS setting); 3D by default, ``spatial_dims=2`` too."""
    return SwinUNETR(**{**_SWIN_UNETR_CFG, **kwargs})


@register_model(family="swin_unetr", paper="arXiv:2201.01266", spatial_dims=(2, 3), default_cfg=_SWIN_UNETR_TEST_CFG)
def swin_unetr_test(**kwargs) -> SwinUNETR:
    """Tiny SwinUNETR for tests (feature_size 12, one block per stage, heads (1, 1, 2, 2), window 4)."""
    return SwinUNETR(**{**_SWIN_UNETR_TEST_CFG, **kwargs})
