"""VM-UNet: a pure visual-Mamba (VSS) U-Net with additive skip connections.

Paper:
    J. Ruan, S. Xiang, "VM-UNet: Vision Mamba UNet for Medical Image Segmentation",
    arXiv:2402.02491.

Official code (read at 032efd7, not copied): JCruan519/VM-UNet,
``models/vmunet/vmunet.py`` (class ``VMUNet``, the wrapper) and
``models/vmunet/vmamba.py`` (classes ``VSSM``, ``PatchEmbed2D``, ``PatchMerging2D``,
``PatchExpand2D``, ``Final_PatchExpand2D``, ``VSSLayer``, ``VSSLayer_up``;
``SS2D``/``VSSBlock`` are :mod:`mambaseg.blocks.ss2d`). The patch embedding, patch
merging, 2x patch expanding and encoder stages are those of
:mod:`mambaseg.models.mamba_unet` (identical layouts).

Configuration followed (``create_model("vm_unet", in_channels=3, num_classes=1)``,
the official ISIC setting ``VMUNet(num_classes=1, input_channels=3, depths=[2,2,2,2],
depths_decoder=[2,2,2,1], drop_path_rate=0.2)``, 27,427,561 parameters; 27,427,761
for 9 classes): patch 4, encoder dims 96-192-384-768, decoder dims 768-384-192-96,
d_state 16, LayerNorm (eps 1e-5) everywhere, dropout 0. Module names mirror ``VSSM``:
``patch_embed`` (4,896), ``layers`` (encoder VSS stages, PatchMerging2D after the
first three; 13,747,584), ``layers_up`` (decoder stages: ``upsample`` = 2x patch
expanding *before* the VSS blocks, none in ``layers_up.0``; 13,638,144),
``final_up`` (``Final_PatchExpand2D(96, 4)``: ``Linear(C, 4C, bias=False)``,
rearrange to 4x resolution with C/4 channels, ``LayerNorm(C/4)``; 36,912) and
``final_conv`` (``Conv2d(C/4, num_classes, 1)`` with bias; 25). There is no
bottleneck norm and no decoder norm. Skips are the encoder stage *inputs*, fused by
addition: decoder stage ``j > 0`` takes ``x + skips[-j]`` (so the bottleneck
output, after ``layers_up.0``, is added to the input of the last encoder stage).
Stochastic depth: ``linspace(0, drop_path_rate, sum(depths))`` over the encoder
and ``linspace(0, drop_path_rate, sum(depths_decoder))`` reversed over the decoder.
Initialisation as ``VSSM._init_weights`` (every ``nn.Linear`` trunc-normal(std 0.02)
with zero bias, every LayerNorm (1, 0)). Parameter names equal those of ``VSSM``, so
an official ``VMUNet`` state dict loads after removing its ``vmunet.`` prefix.

Deliberate differences:
    * No channel repetition: the official ``VMUNet.forward`` repeats a 1-channel
      input to 3 channels; here ``in_channels`` is a constructor argument used
      directly by the patch embedding.
    * Logits only: the official ``VMUNet.forward`` applies a sigmoid when
      ``num_classes == 1``; this model always returns raw logits (apply the
      sigmoid in the loss / at inference).
    * ``embed_dim`` sets the widths (``embed_dim * 2**i``, decoder reversed); the
      official ``VSSM`` uses its ``dims`` default (96, ...), i.e. the same numbers.
    * Any input size: H and W are padded (replicate) to the next multiple of
      ``patch_size * 2**(len(depths) - 1)`` (32 by default) and the logits are
      cropped back; the official code needs multiples of 32.
    * ``scan`` (a :mod:`mambaseg.ops.scan_orders` name, default ``"cross"`` =
      VMamba's order) is passed to every SS2D.
    * ``spatial_dims`` must be 2 (the model is 2D only).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

from torch import Tensor, nn

from mambaseg.blocks import VSSBlock
from mambaseg.blocks.ss2d import ScanLike
from mambaseg.layers import stage_drop_path_rates
from mambaseg.layers.padding import crop_to, pad_to_multiple
from mambaseg.models._registry import register_model
from mambaseg.models.mamba_unet import MambaUNet, PatchEmbed2D, PatchExpand, VSSStage, _pixel_unshuffle_last

__all__ = ["VMUNet", "VSSStageUp", "FinalPatchExpand2D"]


class VSSStageUp(nn.Module):
    """Decoder stage (official ``VSSLayer_up``): optional 2x expanding, then ``depth`` VSS blocks.

    The expanding (``upsample``) is the official ``PatchExpand2D(dim)``, i.e.
    ``PatchExpand(2 * dim)`` of Mamba-UNet: ``(B, H, W, 2C)`` -> ``(B, 2H, 2W, C)``.

    Shape: ``(B, H, W, C)`` -> ``(B, H, W, C)`` without upsampling, or
    ``(B, H, W, 2C)`` -> ``(B, 2H, 2W, C)`` with it.
    """

    def __init__(self, dim: int, depth: int, drop_path: Sequence[float], d_state: int, scan: ScanLike,
                 upsample: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            VSSBlock(hidden_dim=dim, drop_path=drop_path[i], norm_layer=nn.LayerNorm, d_state=d_state, scan=scan)
            for i in range(depth))
        self.upsample = PatchExpand(2 * dim) if upsample else None

    def forward(self, x: Tensor) -> Tensor:
        if self.upsample is not None:
            x = self.upsample(x)
        for blk in self.blocks:
            x = blk(x)
        return x


class FinalPatchExpand2D(nn.Module):
    """Final ``scale``x expanding (official ``Final_PatchExpand2D``): ``Linear(C, sC, bias=False)``,
    rearrange ``b h w (p1 p2 c) -> b (h p1) (w p2) c`` with ``c = C / s``, ``LayerNorm(C / s)``.

    Unlike Mamba-UNet's ``FinalPatchExpand`` the channel count drops by ``scale``.

    Shape: ``(B, H, W, C)`` -> ``(B, sH, sW, C/s)``.
    """

    def __init__(self, dim: int, scale: int = 4) -> None:
        super().__init__()
        if dim % scale:
            raise ValueError(f"dim ({dim}) must be divisible by scale ({scale})")
        self.scale = scale
        self.expand = nn.Linear(dim, scale * dim, bias=False)
        self.norm = nn.LayerNorm(dim // scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(_pixel_unshuffle_last(self.expand(x), self.scale))


class VMUNet(nn.Module):
    """VM-UNet (official ``VSSM`` of VM-UNet) for 2D segmentation.

    Args:
        in_channels: Input channels (used directly by the patch embedding).
        num_classes: Output channels (logits; no sigmoid/softmax).
        spatial_dims: Must be 2.
        depths: VSS blocks per encoder stage.
        depths_decoder: VSS blocks per decoder stage (deepest first), same length as ``depths``.
        embed_dim: Width of the first stage; encoder stage ``i`` has ``embed_dim * 2**i``.
        d_state: SSM state size of every SS2D.
        drop_path_rate: Maximum stochastic-depth rate (linear schedules).
        scan: Scan order of every SS2D: a name (``"cross"`` = VMamba's) or one ScanOrder object shared by all.
        patch_size: Patch-embedding stride (and final expanding factor).

    Shape:
        Input ``(B, in_channels, H, W)`` of any size, output logits ``(B, num_classes, H, W)``.
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 2,
                 depths: Sequence[int] = (2, 2, 2, 2), depths_decoder: Sequence[int] = (2, 2, 2, 1),
                 embed_dim: int = 96, d_state: int = 16, drop_path_rate: float = 0.2, scan: ScanLike = "cross",
                 patch_size: int = 4) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"VMUNet is 2D only (spatial_dims=2), got spatial_dims={spatial_dims}")
        depths = tuple(int(d) for d in depths)
        depths_decoder = tuple(int(d) for d in depths_decoder)
        n = len(depths)
        if n < 1 or len(depths_decoder) != n:
            raise ValueError(f"depths and depths_decoder must be non-empty and of equal length, "
                             f"got {depths} and {depths_decoder}")
        if embed_dim % patch_size:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by patch_size ({patch_size})")
        self.in_channels, self.num_classes, self.patch_size = in_channels, num_classes, patch_size
        dims = [embed_dim * 2 ** i for i in range(n)]
        dims_decoder = dims[::-1]
        self.size_divisor = patch_size * 2 ** (n - 1)

        self.patch_embed = PatchEmbed2D(in_channels, embed_dim, patch_size, patch_norm=True)
        rates = stage_drop_path_rates(drop_path_rate, depths)
        rates_dec = stage_drop_path_rates(drop_path_rate, depths_decoder, descending=True)

        self.layers = nn.ModuleList(
            VSSStage(dims[i], depths[i], rates[i], d_state, scan,
                     downsample=i < n - 1)
            for i in range(n))
        self.layers_up = nn.ModuleList(
            VSSStageUp(dims_decoder[j], depths_decoder[j], rates_dec[j], d_state, scan, upsample=j != 0)
            for j in range(n))
        self.final_up = FinalPatchExpand2D(dims_decoder[-1], scale=patch_size)
        self.final_conv = nn.Conv2d(dims_decoder[-1] // patch_size, num_classes, kernel_size=1)
        self.apply(MambaUNet._init_weights)

    def forward_features(self, x: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """Encoder: ``(B, C_in, H, W)`` -> bottleneck ``(B, H/32, W/32, 8E)`` and the
        per-stage inputs ``[(B, H/4, W/4, E), ..., (B, H/32, W/32, 8E)]`` (skips)."""
        x = self.patch_embed(x)
        skips = []
        for layer in self.layers:
            skips.append(x)
            x = layer(x)
        return x, skips

    def forward_features_up(self, x: Tensor, skips: List[Tensor]) -> Tensor:
        """Decoder with additive skips: bottleneck -> ``(B, H/4, W/4, E)``."""
        for j, layer_up in enumerate(self.layers_up):
            x = layer_up(x if j == 0 else x + skips[-j])
        return x

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> logits ``(B, num_classes, H, W)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"VMUNet expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        x, spatial = pad_to_multiple(x, self.size_divisor)
        x, skips = self.forward_features(x)
        x = self.final_up(self.forward_features_up(x, skips))  # (B, Hp, Wp, E/4)
        x = self.final_conv(x.permute(0, 3, 1, 2).contiguous())
        return crop_to(x, spatial)


_ISIC_CFG = dict(depths=(2, 2, 2, 2), depths_decoder=(2, 2, 2, 1), embed_dim=96, d_state=16,
                 drop_path_rate=0.2, scan="cross")
_TEST_CFG = dict(depths=(1, 1, 1, 1), depths_decoder=(1, 1, 1, 1), embed_dim=8, d_state=4,
                 drop_path_rate=0.1, scan="cross")


@register_model(family="vm_unet", paper="arXiv:2402.02491", spatial_dims=(2,), default_cfg=_ISIC_CFG)
def vm_unet(**kwargs) -> VMUNet:
    """VM-UNet, official ISIC configuration (27,427,561 parameters for 3 -> 1 channels)."""
    return VMUNet(**{**_ISIC_CFG, **kwargs})


@register_model(family="vm_unet", paper="arXiv:2402.02491", spatial_dims=(2,), default_cfg=_TEST_CFG)
def vm_unet_test(**kwargs) -> VMUNet:
    """Tiny VM-UNet for tests (embed_dim 8, depths (1, 1, 1, 1) encoder and decoder, d_state 4)."""
    return VMUNet(**{**_TEST_CFG, **kwargs})
