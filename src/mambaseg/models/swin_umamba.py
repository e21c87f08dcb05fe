"""Swin-UMamba: a VMamba (ImageNet-pretrainable) encoder with a UNETR-style or a VSS decoder.

Paper:
    J. Liu, H. Yang, H.-Y. Zhou, Y. Xi, L. Yu, Y. Yu, Y. Liang, G. Shi, S. Zhang, H. Zheng,
    S. Wang, "Swin-UMamba: Mamba-based UNet with ImageNet-based pretraining", arXiv:2402.03302.

Official code (read, not copied): JiarunLiu/Swin-UMamba, ``swin_umamba/nnunetv2/nets/SwinUMamba.py``
(classes ``SwinUMamba``, ``VSSMEncoder``, ``VSSLayer``, ``PatchEmbed2D``, ``PatchMerging2D``; read at
50eecc8, the stored version with ``encoder5``/``decoder6`` whose counts the configuration below matches;
the older 6855410 had no ``decoder6``) and ``swin_umamba/nnunetv2/nets/SwinUMambaD.py`` (classes
``SwinUMambaD``, ``UNetResDecoder``, ``PatchExpand``, ``FinalPatchExpand_X4``; read at 2c1f72e), plus
MONAI's ``UnetrBasicBlock`` / ``UnetrUpBlock`` / ``UnetResBlock`` / ``UnetOutBlock``, which the official
code imports and which are re-written here (``_UnetResBlock``, ``_UnetrUpBlock``, ``_UnetOutBlock``).

The VMamba version is "v0" with ``out_norm`` (``SS2D(d_state=16, d_conv=3, expand=2, dt_rank=ceil(C/16))``,
``forward_core`` with the cross scan), i.e. exactly :class:`mambaseg.blocks.SS2D`; every LayerNorm is
``nn.LayerNorm`` (eps 1e-5). The encoder (``VSSMEncoder``) keeps the official layout and names:
``patch_embed`` (conv k = s = patch + LayerNorm), ``layers`` (VSS stages without down-sampling) and
``downsamples`` (PatchMerging2D after every stage but the last), and returns ``[input, stage outputs...]``
channel-first. Stochastic depth ``linspace(0, 0.2, sum(depths))``. Encoder initialisation as the official
``VSSMEncoder._init_weights`` (Linear trunc-normal std 0.02, zero bias; LayerNorm (1, 0)).

``swin_umamba`` (``SwinUMamba(in_chans=1, out_chans=4, feat_size=[48, 96, 192, 384, 768],
deep_supervision=True, hidden_size=768)``, as ``get_swin_umamba_from_plans``): 59,882,128 parameters =
stem 2,496 (Conv2d(k7, s2, p3, bias) + affine InstanceNorm) + vssm_encoder 22,136,736 (patch 2 on the
48-channel stem output, dims 96-192-384-768, depths 2-2-9-2) + encoder1..5 (``UnetrBasicBlock`` =
MONAI ``UnetResBlock``: bias-free 3x3 conv, InstanceNorm (no affine), LeakyReLU(0.01), 3x3 conv,
InstanceNorm, 1x1 bias-free conv + InstanceNorm shortcut when the width changes, add, LeakyReLU;
21,216 / 129,024 / 516,096 / 2,064,384 / 8,257,536) + decoder6..2 (``UnetrUpBlock``: bias-free
ConvTranspose2d(k = s = 2), concat with the skip, ``UnetResBlock(2C -> C)``; 19,464,192 / 5,455,872 /
1,363,968 / 340,992 / 85,248) + decoder1 (``UnetrBasicBlock(48 -> 48)``, 41,472) + out_layers
(``UnetOutBlock``: 1x1 conv with bias; 2,896). ``encoder1`` reads the *input image*, ``encoder2`` the stem
output, ``encoder3..5`` the first three VSS stage outputs; the last stage output (H/32) is the
bottleneck. Deep supervision: logits of ``[decoder1, decoder3, decoder4, decoder5]`` outputs, i.e.
4 maps at strides 1, 2, 4, 8 ([256², 128², 64², 32²] for a 256² input).

``swin_umamba_d`` (``SwinUMambaD(vss_args={'in_chans': 1, 'patch_size': 4, 'depths': [2, 2, 9, 2],
'dims': 96, 'drop_path_rate': 0.2}, decoder_args={'num_classes': 4, 'deep_supervision': True,
'features_per_stage': [96, 192, 384, 768], 'drop_path_rate': 0.2, 'd_state': 16})``, as
``get_swin_umamba_d_from_plans``): 27,490,000 parameters = vssm_encoder 22,119,840 (patch_embed 1,824 +
layers 20,564,352 + downsamples 1,553,664) + decoder 5,370,160 (stages 3,282,048: two VSS blocks per
level, then an ``nn.Identity`` for the last; expand_layers 1,697,280: PatchExpand per level then
FinalPatchExpand_X4; seg_layers 3,088; concat_back_dim 387,744: Linear(2C, C) after concatenating the
channel-last skip). Decoder drop-path ``linspace(0.2, 0, 6)``, two rates per level. As the official
builder, every conv is then re-initialised ``kaiming_normal_(a=1e-2)`` with zero bias (nnU-Net's
``InitWeights_He(1e-2)``). Deep supervision: 4 maps at strides 1, 4, 8, 16.

Deliberate differences:
    * ``in_channels`` / ``num_classes`` name the official ``in_chans`` / ``out_chans`` (and the
      ``vss_args`` / ``decoder_args`` dicts of ``SwinUMambaD`` are flattened into typed arguments). No
      channel repetition (the official code has none either); logits only (the official code returns
      logits too).
    * ``SwinUMamba``: the encoder widths follow ``feat_size[1:]`` and ``hidden_size`` must equal
      ``feat_size[-1]`` (officially ``VSSMEncoder`` always uses its default dims 96..768, so any other
      ``feat_size`` breaks the official network); ``depths``, ``patch_size``, ``d_state`` and
      ``drop_path_rate`` are exposed (official: the encoder defaults 2-2-9-2, 2, 16, 0.2; the official
      ``drop_path_rate=0`` argument of ``SwinUMamba`` is stored but never used). Only the official
      ``res_block=True`` / ``norm_name="instance"`` blocks are built.
    * ``SwinUMambaD``: ``decoder_depth`` (official fixed 2) and ``decoder_d_state`` are arguments.
    * Any input size: padded (replicate) to the next multiple of the total stride (32 by default)
      and every output cropped back (deep-supervision maps to ``ceil(S / level_stride)``); the
      official code needs multiples of 32 (PatchMerging2D prints a warning and drops a row otherwise).
    * ``scan`` (a :mod:`mambaseg.ops.scan_orders` name, default ``"cross"`` = VMamba's) is passed to
      every SS2D; the scan is mambaseg's selective scan, not necessarily ``mamba_ssm``.
    * ``deep_supervision`` is a settable property (train and eval mode alike, as the official code).
    * ``spatial_dims`` must be 2.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from mambaseg.blocks.ss2d import ScanLike
from mambaseg.layers import stage_drop_path_rates
from mambaseg.layers.padding import pad_to_multiple
from mambaseg.models._registry import register_model
from mambaseg.models.mamba_unet import (
    FinalPatchExpand,
    MambaUNet,
    PatchEmbed2D,
    PatchExpand,
    PatchMerging2D,
    VSSStage,
)
from mambaseg.models.unet import DeepSupervisionSwitch, crop_outputs, supervised_logits

__all__ = ["SwinUMamba", "SwinUMambaD", "SwinUMambaDDecoder", "VSSMEncoder"]


# ----------------------------------------------------------------------------- UNETR-style conv blocks
def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, bias: bool = False,
          transposed: bool = False) -> nn.Sequential:
    """A lone conv inside a container whose child is named ``conv`` (MONAI ``Convolution`` naming)."""
    if transposed:
        op = nn.ConvTranspose2d(in_ch, out_ch, kernel, stride=stride, bias=bias)
    else:
        op = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=(kernel - stride + 1) // 2, bias=bias)
    return nn.Sequential(OrderedDict(conv=op))


class _UnetResBlock(nn.Module):
    """MONAI ``UnetResBlock`` (instance norm, LeakyReLU 0.01, bias-free convs).

    ``lrelu(norm2(conv2(lrelu(norm1(conv1(x))))) + shortcut(x))``; the shortcut is a 1x1 conv + norm
    when the width or the stride changes, else identity.

    Shape: ``(B, C_in, H, W)`` -> ``(B, C_out, H / stride, W / stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, out_channels, kernel_size, stride)
        self.conv2 = _conv(out_channels, out_channels, kernel_size, 1)
        self.lrelu = nn.LeakyReLU(0.01)
        self.norm1 = nn.InstanceNorm2d(out_channels)
        self.norm2 = nn.InstanceNorm2d(out_channels)
        if in_channels != out_channels or stride != 1:
            self.conv3 = _conv(in_channels, out_channels, 1, stride)
            self.norm3 = nn.InstanceNorm2d(out_channels)
        else:
            self.conv3 = self.norm3 = None

    def forward(self, x: Tensor) -> Tensor:
        y = self.lrelu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        res = self.norm3(self.conv3(x)) if self.conv3 is not None else x
        return self.lrelu(y + res)


class _UnetrBasicBlock(nn.Module):
    """MONAI ``UnetrBasicBlock`` with ``res_block=True``: a :class:`_UnetResBlock` stored as ``layer``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.layer = _UnetResBlock(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class _UnetrUpBlock(nn.Module):
    """MONAI ``UnetrUpBlock`` with ``res_block=True``: bias-free ``ConvTranspose2d(k=s=up)``, concat the
    skip (after the up-sampled map), :class:`_UnetResBlock` ``(2 C_out -> C_out)``.

    Shape: ``(B, C_in, H, W)``, skip ``(B, C_out, up H, up W)`` -> ``(B, C_out, up H, up W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, upsample_kernel_size: int = 2):
        super().__init__()
        self.transp_conv = _conv(in_channels, out_channels, upsample_kernel_size, upsample_kernel_size,
                                 transposed=True)
        self.conv_block = _UnetResBlock(2 * out_channels, out_channels, kernel_size, 1)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv_block(torch.cat((self.transp_conv(x), skip), dim=1))


class _UnetOutBlock(nn.Module):
    """MONAI ``UnetOutBlock``: a 1x1 conv with bias (stored as ``conv.conv``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = _conv(in_channels, out_channels, 1, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


# ----------------------------------------------------------------------------- VMamba encoder
class VSSMEncoder(nn.Module):
    """Swin-UMamba's VMamba encoder (official ``VSSMEncoder``), without classification head.

    Args:
        in_channels: Channels of the map fed to the patch embedding.
        dims: Stage widths (each twice the previous one, as PatchMerging2D doubles).
        depths: VSS blocks per stage.
        patch_size: Patch-embedding stride.
        d_state: SSM state size.
        drop_path_rate: Maximum stochastic depth (``linspace(0, rate, sum(depths))``).
        scan: Scan order of every SS2D: a name or one ScanOrder object shared by all.

    Shape:
        ``(B, C_in, H, W)`` -> ``[x, (B, dims[0], H/p, W/p), ..., (B, dims[-1], H/(p 2^(n-1)), ...)]``
        (the input itself first, then every stage output, channel-first).
    """

    def __init__(self, in_channels: int, dims: Sequence[int] = (96, 192, 384, 768),
                 depths: Sequence[int] = (2, 2, 9, 2), patch_size: int = 4, d_state: int = 16,
                 drop_path_rate: float = 0.2, scan: ScanLike = "cross") -> None:
        super().__init__()
        dims, depths = [int(d) for d in dims], [int(d) for d in depths]
        n = len(depths)
        if n < 1 or len(dims) != n:
            raise ValueError(f"dims and depths must be non-empty and of equal length, got {dims} and {depths}")
        if any(dims[i + 1] != 2 * dims[i] for i in range(n - 1)):
            raise ValueError(f"each encoder width must double the previous one (PatchMerging2D), got {dims}")
        self.dims = dims
        self.patch_embed = PatchEmbed2D(in_channels, dims[0], patch_size, patch_norm=True)
        rates = stage_drop_path_rates(drop_path_rate, depths)
        self.layers = nn.ModuleList(
            VSSStage(dims[i], depths[i], rates[i], d_state, scan)
            for i in range(n))
        self.downsamples = nn.ModuleList(PatchMerging2D(dims[i]) for i in range(n - 1))
        self.apply(MambaUNet._init_weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = [x]
        x = self.patch_embed(x)
        for s, layer in enumerate(self.layers):
            x = layer(x)
            outs.append(x.permute(0, 3, 1, 2))
            if s < len(self.downsamples):
                x = self.downsamples[s](x)
        return outs


def _check_2d(cls: str, spatial_dims: int) -> None:
    if spatial_dims != 2:
        raise ValueError(f"{cls} is 2D only (spatial_dims=2), got spatial_dims={spatial_dims}")


def _check_input(model: nn.Module, x: Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != model.in_channels:
        raise ValueError(f"{type(model).__name__} expects (B, {model.in_channels}, H, W), got {tuple(x.shape)}")


# ----------------------------------------------------------------------------- Swin-UMamba
class SwinUMamba(nn.Module):
    """Swin-UMamba (official ``SwinUMamba``): conv stem + VMamba encoder, UNETR-style conv decoder.

    Args:
        in_channels: Input channels.
        num_classes: Output channels (logits).
        spatial_dims: Must be 2.
        feat_size: Five widths: stem / full-resolution branch, then the four encoder stages.
        hidden_size: Bottleneck width; ``None`` = ``feat_size[-1]`` (must equal it).
        depths: VSS blocks per encoder stage (four stages).
        patch_size: Patch embedding stride of the VMamba encoder (on the stride-2 stem output).
        d_state: SSM state size of every SS2D.
        drop_path_rate: Maximum stochastic depth of the encoder.
        deep_supervision: Return 4 logits (strides 1, 2, 4, 8), highest resolution first.
        scan: Scan order of every SS2D: a name (``"cross"`` = VMamba's) or one ScanOrder object shared by all.

    Shape:
        ``(B, in_channels, H, W)`` (any size) -> logits ``(B, num_classes, H, W)``, or with deep
        supervision a list whose ``i``-th entry is ``(B, num_classes, ceil(H / 2^i), ceil(W / 2^i))``.
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 2,
                 feat_size: Sequence[int] = (48, 96, 192, 384, 768), hidden_size: int | None = None,
                 depths: Sequence[int] = (2, 2, 9, 2), patch_size: int = 2, d_state: int = 16,
                 drop_path_rate: float = 0.2, deep_supervision: bool = True, scan: ScanLike = "cross") -> None:
        super().__init__()
        _check_2d(type(self).__name__, spatial_dims)
        f = [int(c) for c in feat_size]
        if len(f) != 5 or len(depths) != 4:
            raise ValueError(f"SwinUMamba needs 5 feat_size entries and 4 depths, got {f} and {tuple(depths)}")
        hidden_size = f[4] if hidden_size is None else int(hidden_size)
        if hidden_size != f[4]:
            raise ValueError(f"hidden_size ({hidden_size}) must equal feat_size[-1] ({f[4]})")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.feat_size, self.hidden_size = f, hidden_size
        self.size_divisor = 2 * patch_size * 2 ** (len(depths) - 1)
        self.deep_supervision = deep_supervision

        self.stem = nn.Sequential(nn.Conv2d(in_channels, f[0], kernel_size=7, stride=2, padding=3),
                                  nn.InstanceNorm2d(f[0], eps=1e-5, affine=True))
        self.vssm_encoder = VSSMEncoder(f[0], f[1:], depths, patch_size, d_state, drop_path_rate, scan)
        self.encoder1 = _UnetrBasicBlock(in_channels, f[0])
        self.encoder2 = _UnetrBasicBlock(f[0], f[1])
        self.encoder3 = _UnetrBasicBlock(f[1], f[2])
        self.encoder4 = _UnetrBasicBlock(f[2], f[3])
        self.encoder5 = _UnetrBasicBlock(f[3], f[4])
        self.decoder6 = _UnetrUpBlock(hidden_size, f[4])
        self.decoder5 = _UnetrUpBlock(hidden_size, f[3])
        self.decoder4 = _UnetrUpBlock(f[3], f[2])
        self.decoder3 = _UnetrUpBlock(f[2], f[1])
        self.decoder2 = _UnetrUpBlock(f[1], f[0])
        self.decoder1 = _UnetrBasicBlock(f[0], f[0])
        self.out_layers = nn.ModuleList(_UnetOutBlock(f[i], num_classes) for i in range(4))

    def level_strides(self) -> list[tuple]:
        """Output stride of every deep-supervision level, highest resolution first."""
        return [(1, 1), (2, 2), (4, 4), (8, 8)]

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """``(B, in_channels, H, W)`` -> logits (or the deep-supervision list)."""
        _check_input(self, x)
        x, spatial = pad_to_multiple(x, self.size_divisor)
        feats = self.vssm_encoder(self.stem(x))  # [stem (H/2), H/4, H/8, H/16, H/32]
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(feats[0])
        enc3 = self.encoder3(feats[1])
        enc4 = self.encoder4(feats[2])
        enc5 = self.encoder5(feats[3])
        dec4 = self.decoder6(feats[4], enc5)
        dec3 = self.decoder5(dec4, enc4)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        dec_out = self.decoder1(self.decoder2(dec1, enc1))
        if self.deep_supervision:
            out = [head(t) for head, t in zip(self.out_layers, (dec_out, dec1, dec2, dec3))]
        else:
            out = self.out_layers[0](dec_out)
        return crop_outputs(out, spatial, self.level_strides())


# ----------------------------------------------------------------------------- Swin-UMamba-D
class SwinUMambaDDecoder(nn.Module):
    """Swin-UMamba-D's VSS decoder (official ``UNetResDecoder`` of ``SwinUMambaD.py``).

    Per level, deepest first: ``expand_layers[s]`` (PatchExpand, 2x), concat the channel-last skip,
    ``concat_back_dim[s]`` (Linear(2C, C)), ``stages[s]`` (``depth`` VSS blocks); the last level is
    FinalPatchExpand_X4 (``patch_size``x) and an ``nn.Identity`` stage. ``seg_layers[s]``: 1x1 conv + bias.

    Shape: encoder outputs -> logits at stride 1 (or the list at strides 1, p, 2p, ..., highest first).
    """

    def __init__(self, num_classes: int, features_per_stage: Sequence[int], deep_supervision: bool = True,
                 drop_path_rate: float = 0.2, d_state: int = 16, depth: int = 2, patch_size: int = 4,
                 scan: ScanLike = "cross") -> None:
        super().__init__()
        feats = [int(c) for c in features_per_stage]
        n = len(feats)
        self.deep_supervision = deep_supervision
        self.num_classes = num_classes
        dpr = torch.linspace(drop_path_rate, 0, (n - 1) * depth).tolist()
        self.stages, self.expand_layers = nn.ModuleList(), nn.ModuleList()
        self.seg_layers, self.concat_back_dim = nn.ModuleList(), nn.ModuleList()
        for s in range(1, n):
            below, skip = feats[-s], feats[-(s + 1)]
            self.expand_layers.append(PatchExpand(below))
            self.stages.append(VSSStage(skip, depth, dpr[(s - 1) * depth:s * depth], d_state, scan))
            self.seg_layers.append(nn.Conv2d(skip, num_classes, 1, 1, 0, bias=True))
            self.concat_back_dim.append(nn.Linear(2 * skip, skip))
        self.expand_layers.append(FinalPatchExpand(feats[0], scale=patch_size))
        self.stages.append(nn.Identity())
        self.seg_layers.append(nn.Conv2d(feats[0], num_classes, 1, 1, 0, bias=True))

    def forward(self, skips: Sequence[Tensor]) -> Tensor | list[Tensor]:
        return supervised_logits(self._stage_outputs(skips), self.seg_layers, self.deep_supervision)

    def _stage_outputs(self, skips: Sequence[Tensor]) -> Iterator[Tensor]:
        x = skips[-1]
        last = len(self.stages) - 1
        for s in range(len(self.stages)):
            y = self.expand_layers[s](x.permute(0, 2, 3, 1))  # channel-last in and out
            if s < last:
                y = self.concat_back_dim[s](torch.cat((y, skips[-(s + 2)].permute(0, 2, 3, 1)), dim=-1))
            x = self.stages[s](y).permute(0, 3, 1, 2)
            yield x


class SwinUMambaD(DeepSupervisionSwitch):
    """Swin-UMamba-D (official ``SwinUMambaD``): VMamba encoder on the image, VSS decoder.

    Args:
        in_channels: Input channels (patch embedding).
        num_classes: Output channels (logits).
        spatial_dims: Must be 2.
        patch_size: Patch-embedding stride (and final expanding factor).
        embed_dim: First stage width; stage ``i`` has ``embed_dim * 2**i``.
        depths: VSS blocks per encoder stage.
        d_state: SSM state size of the encoder.
        drop_path_rate: Maximum stochastic depth of the encoder.
        decoder_depth: VSS blocks per decoder level (official 2).
        decoder_d_state: SSM state size of the decoder.
        decoder_drop_path_rate: Stochastic depth of the decoder (``linspace(rate, 0, ...)``).
        deep_supervision: Return ``len(depths)`` logits, highest resolution first.
        scan: Scan order of every SS2D: a name (``"cross"`` = VMamba's) or one ScanOrder object shared by all.

    Shape:
        ``(B, in_channels, H, W)`` (any size) -> logits ``(B, num_classes, H, W)``, or with deep
        supervision a list at strides ``1, p, 2p, 4p, ...``.
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 2, patch_size: int = 4,
                 embed_dim: int = 96, depths: Sequence[int] = (2, 2, 9, 2), d_state: int = 16,
                 drop_path_rate: float = 0.2, decoder_depth: int = 2, decoder_d_state: int = 16,
                 decoder_drop_path_rate: float = 0.2, deep_supervision: bool = True, scan: ScanLike = "cross") -> None:
        super().__init__()
        _check_2d(type(self).__name__, spatial_dims)
        n = len(depths)
        if n < 2:
            raise ValueError(f"SwinUMambaD needs at least 2 encoder stages, got depths={tuple(depths)}")
        self.in_channels, self.num_classes, self.patch_size = in_channels, num_classes, patch_size
        dims = [embed_dim * 2 ** i for i in range(n)]
        self.size_divisor = patch_size * 2 ** (n - 1)
        self.vssm_encoder = VSSMEncoder(in_channels, dims, depths, patch_size, d_state, drop_path_rate, scan)
        self.decoder = SwinUMambaDDecoder(num_classes, dims, deep_supervision, decoder_drop_path_rate,
                                          decoder_d_state, decoder_depth, patch_size, scan)
        self.apply(self._init_conv)  # the official builder applies nnU-Net's InitWeights_He(1e-2)

    @staticmethod
    def _init_conv(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, a=1e-2)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def level_strides(self) -> list[tuple]:
        """Output stride of every deep-supervision level, highest resolution first."""
        p = self.patch_size
        return [(1, 1)] + [(p * 2 ** i,) * 2 for i in range(len(self.vssm_encoder.layers) - 1)]

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """``(B, in_channels, H, W)`` -> logits (or the deep-supervision list)."""
        _check_input(self, x)
        x, spatial = pad_to_multiple(x, self.size_divisor)
        return crop_outputs(self.decoder(self.vssm_encoder(x)), spatial, self.level_strides())


# ----------------------------------------------------------------------------- registry
_SWIN_UMAMBA_CFG = {"feat_size": (48, 96, 192, 384, 768), "hidden_size": 768, "depths": (2, 2, 9, 2),
                    "patch_size": 2, "d_state": 16, "drop_path_rate": 0.2, "deep_supervision": True,
                    "scan": "cross"}
_SWIN_UMAMBA_TEST_CFG = {"feat_size": (4, 8, 16, 32, 64), "hidden_size": 64, "depths": (1, 1, 1, 1),
                         "patch_size": 2, "d_state": 4, "drop_path_rate": 0.1, "deep_supervision": True,
                         "scan": "cross"}
_SWIN_UMAMBA_D_CFG = {"patch_size": 4, "embed_dim": 96, "depths": (2, 2, 9, 2), "d_state": 16,
                      "drop_path_rate": 0.2, "decoder_depth": 2, "decoder_d_state": 16,
                      "decoder_drop_path_rate": 0.2, "deep_supervision": True, "scan": "cross"}
_SWIN_UMAMBA_D_TEST_CFG = {"patch_size": 4, "embed_dim": 8, "depths": (1, 1, 1, 1), "d_state": 4,
                           "drop_path_rate": 0.1, "decoder_depth": 1, "decoder_d_state": 4,
                           "decoder_drop_path_rate": 0.1, "deep_supervision": True, "scan": "cross"}


@register_model(family="swin_umamba", paper="arXiv:2402.03302", spatial_dims=(2,), default_cfg=_SWIN_UMAMBA_CFG)
def swin_umamba(**kwargs) -> SwinUMamba:
    """Swin-UMamba, official configuration (59,882,128 parameters for 1 -> 4 channels)."""
    return SwinUMamba(**{**_SWIN_UMAMBA_CFG, **kwargs})


@register_model(family="swin_umamba", paper="arXiv:2402.03302", spatial_dims=(2,), default_cfg=_SWIN_UMAMBA_D_CFG)
def swin_umamba_d(**kwargs) -> SwinUMambaD:
    """Swin-UMamba-D (VSS decoder), official configuration (27,490,000 parameters for 1 -> 4 channels)."""
    return SwinUMambaD(**{**_SWIN_UMAMBA_D_CFG, **kwargs})


@register_model(family="swin_umamba", paper="arXiv:2402.03302", spatial_dims=(2,),
                default_cfg=_SWIN_UMAMBA_TEST_CFG)
def swin_umamba_test(**kwargs) -> SwinUMamba:
    """Tiny Swin-UMamba for tests (feat_size (4, 8, 16, 32, 64), depths (1, 1, 1, 1), d_state 4)."""
    return SwinUMamba(**{**_SWIN_UMAMBA_TEST_CFG, **kwargs})


@register_model(family="swin_umamba", paper="arXiv:2402.03302", spatial_dims=(2,),
                default_cfg=_SWIN_UMAMBA_D_TEST_CFG)
def swin_umamba_d_test(**kwargs) -> SwinUMambaD:
    """Tiny Swin-UMamba-D for tests (embed_dim 8, depths (1, 1, 1, 1), one decoder block, d_state 4)."""
    return SwinUMambaD(**{**_SWIN_UMAMBA_D_TEST_CFG, **kwargs})
