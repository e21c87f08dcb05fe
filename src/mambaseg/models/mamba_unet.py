"""Mamba-UNet: a pure visual-Mamba (VSS) U-Net with a Swin-UNet-style decoder.

Paper:
    Z. Wang, J.-Q. Zheng, Y. Zhang, G. Cui, L. Li, "Mamba-UNet: UNet-Like Pure
    Visual Mamba for Medical Image Segmentation", arXiv:2402.05079.

Official code (read at 2eeec29, not copied; parameter counts pinned against dfe92ba): ziyangwang007/Mamba-UNet,
``code/networks/vision_mamba.py`` (class ``MambaUnet``, the wrapper used for ACDC)
and ``code/networks/mamba_sys.py`` (classes ``VSSM``, ``PatchEmbed2D``,
``PatchMerging2D``, ``PatchExpand``, ``FinalPatchExpand_X4``, ``VSSLayer``,
``VSSLayer_up``; ``SS2D``/``VSSBlock`` are :mod:`mambaseg.blocks.ss2d`).

Configuration followed (``create_model("mamba_unet", in_channels=3, num_classes=4)``,
the official ACDC setting, 19,121,664 parameters): patch 4, dims 96-192-384-768,
depths (2, 2, 2, 2) in the encoder and the decoder, d_state 16, drop_path_rate 0.2,
patch norm on, LayerNorm (eps 1e-5) everywhere, dropout 0. Module names mirror
``VSSM``: ``patch_embed``, ``layers`` (VSS stages, PatchMerging2D after the first
three), ``layers_up`` (``layers_up.0`` is a PatchExpand alone; then VSS stages
followed by a PatchExpand except the last), ``concat_back_dim`` (Identity, then
``Linear(2C, C)`` after concatenating the skip), ``norm`` (bottleneck),
``norm_up``, ``up`` (FinalPatchExpand_X4), ``output`` (1x1 conv, no bias). Stochastic
depth: ``linspace(0, drop_path_rate, sum(depths))`` over the encoder; each decoder
stage reuses the rates of the encoder stage at its resolution (as the official code).
Initialisation as ``VSSM._init_weights``: every ``nn.Linear`` trunc-normal(std 0.02)
with zero bias, every LayerNorm (1, 0); SS2D's own parameters keep their init.
Parameter names of ``VSSM`` are kept, so an official ``VSSM`` state dict (the
``mamba_unet.`` prefix of ``MambaUnet`` removed) loads unchanged.

Deliberate differences:
    * No channel repetition: the official ``MambaUnet.forward`` repeats a 1-channel
      input to 3 channels; here ``in_channels`` is a constructor argument and the
      patch embedding takes it directly (a 1-channel model has 3,072 fewer
      ``patch_embed.proj`` weights than the official 3-channel one).
    * ``embed_dim`` sets the stage widths (``embed_dim * 2**i``); the official
      ``VSSM`` silently ignores its ``embed_dim`` argument and always uses its
      ``dims`` default (96, 192, 384, 768), i.e. the same numbers for the ACDC setup.
    * Any input size: H and W are padded (replicate) to the next multiple of
      ``patch_size * 2**(len(depths) - 1)`` (32 by default) and the logits are cropped
      back; the official code needs multiples of 32.
    * ``scan`` (a :mod:`mambaseg.ops.scan_orders` name, default ``"cross"`` =
      VMamba's order) is passed to every SS2D; ``mlp_ratio``/``drop_rate`` of the
      official signature are unused there and are not arguments here.
    * ``spatial_dims`` must be 2 (the model is 2D only).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from mambaseg.blocks import VSSBlock
from mambaseg.blocks.ss2d import ScanLike
from mambaseg.layers import stage_drop_path_rates
from mambaseg.layers.padding import crop_to, pad_to_multiple
from mambaseg.models._registry import register_model

__all__ = ["MambaUNet", "PatchEmbed2D", "PatchMerging2D", "PatchExpand", "FinalPatchExpand", "ResolutionStage",
           "SwinUNetShape", "VSSStage"]


class PatchEmbed2D(nn.Module):
    """Non-overlapping patch embedding: ``Conv2d(k=s=patch_size)`` then LayerNorm.

    Shape: ``(B, C_in, H, W)`` -> ``(B, H/p, W/p, embed_dim)`` (channel-last).
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int = 4, patch_norm: bool = True) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x).permute(0, 2, 3, 1)
        return self.norm(x) if self.norm is not None else x


class PatchMerging2D(nn.Module):
    """2x2 patch merging: concat the 4 neighbours, ``LayerNorm(4C)``, ``Linear(4C, 2C, bias=False)``.

    Shape: ``(B, H, W, C)`` -> ``(B, H/2, W/2, 2C)`` (H, W even).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        # Neighbour order (0,0), (1,0), (0,1), (1,1) as the official code (matters for weights).
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


def _pixel_unshuffle_last(x: Tensor, scale: int) -> Tensor:
    """``(B, H, W, s*s*c)`` -> ``(B, s*H, s*W, c)``: einops ``b h w (p1 p2 c) -> b (h p1) (w p2) c``."""
    b, h, w, ch = x.shape
    c = ch // (scale * scale)
    x = x.reshape(b, h, w, scale, scale, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * scale, w * scale, c)


class PatchExpand(nn.Module):
    """2x patch expanding: ``Linear(C, 2C, bias=False)``, rearrange, ``LayerNorm(C/2)``.

    Shape: ``(B, H, W, C)`` -> ``(B, 2H, 2W, C/2)``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.expand = nn.Linear(dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(dim // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(_pixel_unshuffle_last(self.expand(x), 2))


class FinalPatchExpand(nn.Module):
    """Final ``scale``x expanding (official ``FinalPatchExpand_X4``): ``Linear(C, s^2 C, bias=False)``,
    rearrange, ``LayerNorm(C)``.

    Shape: ``(B, H, W, C)`` -> ``(B, sH, sW, C)``.
    """

    def __init__(self, dim: int, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(dim, scale * scale * dim, bias=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(_pixel_unshuffle_last(self.expand(x), self.scale))


class ResolutionStage(nn.Module):
    """Blocks at one resolution, then an optional resampler: the stage of Swin-UNet (official ``BasicLayer`` /
    ``BasicLayer_up``) and of the visual-Mamba U-Nets built on it (``VSSLayer`` / ``VSSLayer_up``).

    The resampler is stored as ``downsample`` (PatchMerging2D, encoder) or ``upsample`` (PatchExpand, decoder), as
    in the official code, so that official state dicts load unchanged.

    Shape: ``(B, H, W, C)`` -> ``(B, H, W, C)`` or the resampler's output shape.
    """

    def __init__(self, blocks: Iterable[nn.Module], dim: int, downsample: bool = False,
                 upsample: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        if downsample:
            self.downsample = PatchMerging2D(dim)
        if upsample:
            self.upsample = PatchExpand(dim)

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x)
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        return x


class VSSStage(ResolutionStage):
    """``depth`` VSS blocks, then an optional resampler (official ``VSSLayer``/``VSSLayer_up``).

    Shape: ``(B, H, W, C)`` -> ``(B, H, W, C)`` or the resampler's output shape.
    """

    def __init__(self, dim: int, depth: int, drop_path: Sequence[float], d_state: int, scan: ScanLike,
                 downsample: bool = False, upsample: bool = False) -> None:
        super().__init__((VSSBlock(hidden_dim=dim, drop_path=drop_path[i], norm_layer=nn.LayerNorm, d_state=d_state,
                                   scan=scan) for i in range(depth)), dim, downsample, upsample)


class SwinUNetShape(nn.Module):
    """The U-shape of Swin-UNet (official ``SwinTransformerSys``), shared by Mamba-UNet (``VSSM``): patch embedding,
    encoder stages with patch merging, a bottleneck norm, decoder stages with patch expanding and linear skip
    fusion, the final x``patch_size`` expansion and a 1x1 head. Subclasses choose the stages.

    Module names follow the official code: ``patch_embed``, ``layers``, ``layers_up`` (``layers_up.0`` is a
    PatchExpand alone), ``concat_back_dim`` (Identity, then ``Linear(2C, C)``), ``norm``, ``norm_up``, ``up``,
    ``output``.

    Shape:
        Input ``(B, in_channels, H, W)`` of any size, output logits ``(B, num_classes, H, W)``.
    """

    @staticmethod
    def _stage_depths(name: str, spatial_dims: int, depths: Sequence[int]) -> tuple[int, ...]:
        """Checks the 2D-only rule and that there is at least one stage; returns ``depths`` as ints."""
        if spatial_dims != 2:
            raise ValueError(f"{name} is 2D only (spatial_dims=2), got spatial_dims={spatial_dims}")
        depths = tuple(int(d) for d in depths)
        if not depths:
            raise ValueError("depths must have at least one stage")
        return depths

    def _build(self, in_channels: int, num_classes: int, patch_size: int, embed_dim: int, n_stages: int,
               patch_norm: bool, stage: Callable[[int, bool], nn.Module]) -> None:
        """Creates the modules in the official order. ``stage(i, decoder)`` returns the encoder stage ``i`` (it
        must merge patches unless ``i`` is the last) or the decoder stage at encoder resolution ``i`` (it must
        expand patches unless ``i`` is 0)."""
        n = n_stages
        self.in_channels, self.num_classes, self.patch_size = in_channels, num_classes, patch_size
        self.size_divisor = patch_size * 2 ** (n - 1)
        dims = [embed_dim * 2 ** i for i in range(n)]
        self.patch_embed = PatchEmbed2D(in_channels, embed_dim, patch_size, patch_norm)
        self.layers = nn.ModuleList(stage(i, False) for i in range(n))
        self.layers_up = nn.ModuleList()
        self.concat_back_dim = nn.ModuleList()
        for j in range(n):
            i = n - 1 - j  # encoder stage at this resolution
            if j == 0:
                self.layers_up.append(PatchExpand(dims[i]) if n > 1 else nn.Identity())
                self.concat_back_dim.append(nn.Identity())
            else:
                self.layers_up.append(stage(i, True))
                self.concat_back_dim.append(nn.Linear(2 * dims[i], dims[i]))
        self.norm = nn.LayerNorm(dims[-1])
        self.norm_up = nn.LayerNorm(embed_dim)
        self.up = FinalPatchExpand(embed_dim, scale=patch_size)
        self.output = nn.Conv2d(embed_dim, num_classes, kernel_size=1, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """As the official ``_init_weights``: Linear trunc-normal(0.02) with zero bias, LayerNorm (1, 0)."""
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor):
        """Encoder: ``(B, C_in, H, W)`` -> bottleneck ``(B, H/32, W/32, 8E)`` and the
        per-stage inputs ``[(B, H/4, W/4, E), (B, H/8, W/8, 2E), ...]`` (skips)."""
        x = self.patch_embed(x)
        skips = []
        for layer in self.layers:
            skips.append(x)
            x = layer(x)
        return self.norm(x), skips

    def forward_up_features(self, x: Tensor, skips) -> Tensor:
        """Decoder: bottleneck -> ``(B, H/4, W/4, E)``."""
        n = len(self.layers_up)
        for j, layer_up in enumerate(self.layers_up):
            if j > 0:
                x = self.concat_back_dim[j](torch.cat([x, skips[n - 1 - j]], dim=-1))
            x = layer_up(x)
        return self.norm_up(x)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> logits ``(B, num_classes, H, W)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        x, spatial = pad_to_multiple(x, self.size_divisor)
        x, skips = self.forward_features(x)
        x = self.up(self.forward_up_features(x, skips))  # (B, Hp, Wp, E)
        x = self.output(x.permute(0, 3, 1, 2).contiguous())
        return crop_to(x, spatial)


class MambaUNet(SwinUNetShape):
    """Mamba-UNet (official ``VSSM`` of Mamba-UNet) for 2D segmentation.

    Args:
        in_channels: Input channels (used directly by the patch embedding).
        num_classes: Output channels (logits).
        spatial_dims: Must be 2.
        patch_size: Patch-embedding stride (and final expanding factor).
        embed_dim: Width of the first stage; stage ``i`` has ``embed_dim * 2**i``.
        depths: VSS blocks per stage (encoder; the decoder mirrors it).
        d_state: SSM state size of every SS2D.
        drop_path_rate: Maximum stochastic-depth rate (linear schedule).
        scan: Scan order of every SS2D: a name (``"cross"`` = VMamba's) or one ScanOrder object shared by all.
        patch_norm: LayerNorm after the patch embedding.

    Shape:
        Input ``(B, in_channels, H, W)`` of any size, output logits ``(B, num_classes, H, W)``.
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 2, patch_size: int = 4,
                 embed_dim: int = 96, depths: Sequence[int] = (2, 2, 2, 2), d_state: int = 16,
                 drop_path_rate: float = 0.2, scan: ScanLike = "cross", patch_norm: bool = True) -> None:
        super().__init__()
        depths = self._stage_depths("MambaUNet", spatial_dims, depths)
        n = len(depths)
        dims = [embed_dim * 2 ** i for i in range(n)]
        rates = stage_drop_path_rates(drop_path_rate, depths)

        def stage(i: int, decoder: bool) -> VSSStage:  # a decoder stage reuses its resolution's encoder rates
            return VSSStage(dims[i], depths[i], rates[i], d_state, scan, downsample=not decoder and i < n - 1,
                            upsample=decoder and i > 0)

        self._build(in_channels, num_classes, patch_size, embed_dim, n, patch_norm, stage)


_ACDC_CFG = dict(patch_size=4, embed_dim=96, depths=(2, 2, 2, 2), d_state=16, drop_path_rate=0.2, scan="cross")
_TEST_CFG = dict(patch_size=4, embed_dim=8, depths=(1, 1, 1, 1), d_state=4, drop_path_rate=0.1, scan="cross")


@register_model(family="mamba_unet", paper="arXiv:2402.05079", spatial_dims=(2,), default_cfg=_ACDC_CFG)
def mamba_unet(**kwargs) -> MambaUNet:
    """Mamba-UNet, official ACDC configuration (19,121,664 parameters for 3 -> 4 channels)."""
    return MambaUNet(**{**_ACDC_CFG, **kwargs})


@register_model(family="mamba_unet", paper="arXiv:2402.05079", spatial_dims=(2,), default_cfg=_TEST_CFG)
def mamba_unet_test(**kwargs) -> MambaUNet:
    """Tiny Mamba-UNet for tests (embed_dim 8, depths (1, 1, 1, 1), d_state 4)."""
    return MambaUNet(**{**_TEST_CFG, **kwargs})
