"""U-Mamba Bot: a residual nnU-Net-style U-Net with one Mamba layer at the bottleneck.

Paper:
    J. Ma, F. Li, B. Wang, "U-Mamba: Enhancing Long-range Dependency for Biomedical Image
    Segmentation", arXiv:2401.04722.

Official code (read, not copied): bowang-lab/U-Mamba (28459e3; read at 530739b, where the
files are the same network), ``umamba/nnunetv2/nets/UMambaBot_2d.py`` and
``UMambaBot_3d.py`` (classes ``UMambaBot``, ``UNetResEncoder``, ``UNetResDecoder``,
``BasicResBlock``, ``UpsampleLayer``, ``MambaLayer``) plus ``BasicBlockD`` from
MIC-DKFZ/dynamic-network-architectures ``building_blocks/residual.py``. ``MambaLayer`` is
:class:`mambaseg.blocks.MambaLayer`.

The network is *not* the plain-conv ``unet`` plus a Mamba layer: U-Mamba Bot uses
residual blocks and a different up-sampling, mirrored here so that the parameter counts
and module names (``encoder.stem``, ``encoder.stages``, ``mamba_layer``,
``decoder.upsample_layers``, ``decoder.stages``, ``decoder.seg_layers``) match:

    * ``encoder.stem``: a ``BasicResBlock`` (conv-norm-act, conv-norm, 1x1-conv shortcut,
      add, act; its convs always have a bias) from ``in_channels`` to ``F_0``, then
      ``n_blocks[0] - 1`` ``BasicBlockD`` (conv-norm-act, conv-norm, identity shortcut,
      add, act; bias = ``conv_bias``).
    * ``encoder.stages[s]``: ``BasicResBlock(F_{s-1} -> F_s, stride_s, 1x1 shortcut)`` then
      ``n_blocks[s] - 1`` ``BasicBlockD``. The stem output is not a skip.
    * ``mamba_layer``: ``MambaLayer(F_last)`` replaces the bottleneck features
      (``skips[-1] = mamba_layer(skips[-1])``, no residual).
    * ``decoder.upsample_layers``: nearest-neighbour interpolation by the stride, then a
      1x1 conv (bias) to the skip width (no transposed conv).
    * ``decoder.stages[s]``: ``BasicResBlock(2 F -> F)`` after concatenating the skip, then
      ``n_conv_dec[s] - 1`` ``BasicBlockD``. The *last* decoder stage gets no skip (the
      official forward never concatenates the first stage's output), so its
      ``BasicResBlock`` maps ``F_0 -> F_0``.
    * Block counts as the official constructor: encoder blocks = ``n_conv_per_stage`` but 1
      for stages ``ceil(n/2) .. n-1``; decoder blocks = ``n_conv_per_stage_decoder`` but 1
      for decoder stages ``ceil((n-1)/2 + 0.5) .. n-2``.

Configuration followed: nnU-Net's default plans as used by U-Mamba: 2D features
(32, 64, 128, 256, 512, 512, 512), 3D (32, 64, 128, 256, 320, 320), kernel 3, strides
(1, 2, 2, ...), ``n_conv_per_stage`` 2 (encoder and decoder), conv bias on, InstanceNorm
(affine, eps 1e-5), LeakyReLU(0.01, inplace), MambaLayer(d_state 16, d_conv 4, expand 2),
deep supervision on. ``create_model("umamba_bot", in_channels=1, num_classes=4)`` has
47,517,912 parameters (encoder 16,467,264 = stem 28,384 + stages 16,438,880; mamba_layer
1,695,744; decoder 29,354,904 = stages 28,648,992 + upsample_layers 699,872 + seg_layers
6,040), as the official network; with deep supervision it returns 6 logits, highest
resolution first ([256², 128², ..., 8²] for a 256² input), in train and eval mode.

Deliberate differences:
    * Any input size: zero-padded to the next multiple of the total stride and cropped back
      (deep-supervision outputs to ``ceil(S / level_stride)``); the official code needs
      divisible sizes (nnU-Net's patch sizes are).
    * The Mamba scan is mambaseg's selective scan (pure PyTorch or the CUDA kernel through
      ``backend``), not ``mamba_ssm`` necessarily.
    * Default PyTorch initialisation (the official trainer applies ``InitWeights_He(1e-2)``).
"""

from __future__ import annotations

import math
from typing import Iterator, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mambaseg.blocks import MambaLayer
from mambaseg.models._registry import register_model
from mambaseg.models.unet import (
    ConvNormAct,
    EncoderDecoderNet,
    IntOrSeq,
    _check_dims,
    _per_axis,
    _per_stage,
    conv_op_for,
    default_features,
    norm_op_for,
    set_encoder_geometry,
    supervised_logits,
)

__all__ = ["UMambaBot", "UNetResEncoder", "UNetResDecoder", "BasicResBlock", "BasicBlockD", "UpsampleLayer"]


class BasicResBlock(nn.Module):
    """U-Mamba's ``BasicResBlock``: ``act(norm(conv(act(norm(conv(x))))) + shortcut(x))``.

    Convs always have a bias; the shortcut is a 1x1 conv (with the stride) when
    ``use_1x1conv`` (as everywhere in U-Mamba Bot), else identity.

    Shape: ``(B, C_in, *S)`` -> ``(B, C_out, *S / stride)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: IntOrSeq = 3,
                 stride: IntOrSeq = 1, use_1x1conv: bool = True) -> None:
        super().__init__()
        conv, k = conv_op_for(spatial_dims), _per_axis(kernel_size, spatial_dims)
        st, pad = _per_axis(stride, spatial_dims), tuple(i // 2 for i in k)
        norm = lambda c: norm_op_for(spatial_dims)(c, eps=1e-5, affine=True)  # noqa: E731
        self.conv1 = conv(in_channels, out_channels, k, stride=st, padding=pad)
        self.norm1 = norm(out_channels)
        self.act1 = nn.LeakyReLU(0.01, inplace=True)
        self.conv2 = conv(out_channels, out_channels, k, padding=pad)
        self.norm2 = norm(out_channels)
        self.act2 = nn.LeakyReLU(0.01, inplace=True)
        self.conv3 = conv(in_channels, out_channels, 1, stride=st) if use_1x1conv else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.act1(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act2(y + (self.conv3(x) if self.conv3 is not None else x))


class BasicBlockD(nn.Module):
    """DNA's ``BasicBlockD`` with equal widths and stride 1: ``act(convnorm(convnormact(x)) + x)``.

    Shape: ``(B, C, *S)`` -> ``(B, C, *S)``.
    """

    def __init__(self, spatial_dims: int, channels: int, kernel_size: IntOrSeq = 3, conv_bias: bool = True) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(spatial_dims, channels, channels, kernel_size, 1, conv_bias, act=True)
        self.conv2 = ConvNormAct(spatial_dims, channels, channels, kernel_size, 1, conv_bias, act=False)
        self.nonlin2 = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlin2(self.conv2(self.conv1(x)) + x)


def _res_stage(dims: int, c_in: int, c_out: int, kernel, stride, n_blocks: int, conv_bias: bool) -> nn.Sequential:
    return nn.Sequential(BasicResBlock(dims, c_in, c_out, kernel, stride, use_1x1conv=True),
                         *[BasicBlockD(dims, c_out, kernel, conv_bias) for _ in range(n_blocks - 1)])


class UpsampleLayer(nn.Module):
    """Nearest-neighbour up-sampling by ``scale`` then a 1x1 conv (bias).

    Shape: ``(B, C_in, *S)`` -> ``(B, C_out, *S * scale)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: Sequence[int]) -> None:
        super().__init__()
        self.conv = conv_op_for(spatial_dims)(in_channels, out_channels, kernel_size=1)
        self.scale = tuple(int(s) for s in scale)

    def forward(self, x: Tensor) -> Tensor:
        size = [s * f for s, f in zip(x.shape[2:], self.scale)]
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class UNetResEncoder(nn.Module):
    """U-Mamba's residual encoder: ``stem`` then one residual stage per resolution.

    Args:
        in_channels: Input channels.
        features_per_stage: Stage widths.
        spatial_dims: 2 or 3.
        kernel_sizes: Kernel per stage (or one for all).
        strides: Stride per stage; ``None``: ``(1, 2, 2, ...)``.
        n_blocks_per_stage: Residual blocks per stage (as given; the halving rule is applied
            by :class:`UMambaBot`).
        conv_bias: Bias of the ``BasicBlockD`` convs.

    Shape:
        ``(B, C_in, *S)`` -> list of the stage outputs ``(B, F_s, *S / prod(strides[:s+1]))``.
    """

    def __init__(self, in_channels: int, features_per_stage: Sequence[int], spatial_dims: int = 2,
                 kernel_sizes: Union[IntOrSeq, Sequence[IntOrSeq]] = 3, strides: Optional[Sequence[IntOrSeq]] = None,
                 n_blocks_per_stage: Union[int, Sequence[int]] = 2, conv_bias: bool = True) -> None:
        super().__init__()
        n = set_encoder_geometry(self, features_per_stage, spatial_dims, kernel_sizes, strides)
        n_blocks = _per_stage(n_blocks_per_stage, n, "n_blocks_per_stage")
        self.conv_bias = conv_bias
        f0 = self.output_channels[0]
        self.stem = _res_stage(spatial_dims, in_channels, f0, self.kernel_sizes[0], 1, n_blocks[0], conv_bias)
        stages, c = [], f0
        for s in range(n):
            stages.append(_res_stage(spatial_dims, c, self.output_channels[s], self.kernel_sizes[s], self.strides[s],
                                     n_blocks[s], conv_bias))
            c = self.output_channels[s]
        self.stages = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> List[Tensor]:
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetResDecoder(nn.Module):
    """U-Mamba's residual decoder (nearest up-sampling + 1x1 conv, concat, residual stage, 1x1 seg conv).

    The last (highest-resolution) stage receives no skip, as in the official forward.

    Shape:
        ``skips`` -> ``(B, K, *S_0)``, or with deep supervision a list of ``n_stages - 1``
        logits, highest resolution first.
    """

    def __init__(self, encoder: UNetResEncoder, num_classes: int, n_conv_per_stage: Union[int, Sequence[int]] = 2,
                 deep_supervision: bool = False) -> None:
        super().__init__()
        chans, strides, kernels = encoder.output_channels, encoder.strides, encoder.kernel_sizes
        dims, n = encoder.spatial_dims, len(encoder.output_channels)
        n_conv = _per_stage(n_conv_per_stage, n - 1, "n_conv_per_stage_decoder")
        self.deep_supervision = deep_supervision
        self.num_classes = num_classes
        conv = conv_op_for(dims)
        self.stages, self.upsample_layers, self.seg_layers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for s in range(1, n):
            below, skip = chans[-s], chans[-(s + 1)]
            self.upsample_layers.append(UpsampleLayer(dims, below, skip, strides[-s]))
            c_in = 2 * skip if s < n - 1 else skip
            self.stages.append(_res_stage(dims, c_in, skip, kernels[-(s + 1)], 1, n_conv[s - 1], encoder.conv_bias))
            self.seg_layers.append(conv(skip, num_classes, 1, 1, 0, bias=True))

    def forward(self, skips: Sequence[Tensor]) -> Union[Tensor, List[Tensor]]:
        return supervised_logits(self._stage_outputs(skips), self.seg_layers, self.deep_supervision)

    def _stage_outputs(self, skips: Sequence[Tensor]) -> Iterator[Tensor]:
        x = skips[-1]
        last = len(self.stages) - 1
        for s in range(len(self.stages)):
            x = self.upsample_layers[s](x)
            if s < last:
                x = torch.cat((x, skips[-(s + 2)]), 1)
            x = self.stages[s](x)
            yield x


class UMambaBot(EncoderDecoderNet):
    """U-Mamba Bot for 2D or 3D inputs.

    Args:
        in_channels: Input channels.
        num_classes: Output channels ``K``.
        spatial_dims: 2 or 3.
        features_per_stage: Stage widths; ``None``: nnU-Net's default for ``spatial_dims``.
        strides: Per-stage strides; ``None``: ``(1, 2, 2, ...)``.
        kernel_size: Conv kernel (int or one per stage).
        n_conv_per_stage: Encoder residual blocks per stage before the official halving rule.
        n_conv_per_stage_decoder: Decoder blocks per stage before the official halving rule.
        conv_bias: Bias of the ``BasicBlockD`` convs.
        deep_supervision: Return all decoder levels' logits (train and eval mode).
        d_state, d_conv, expand: Of the bottleneck :class:`~mambaseg.blocks.MambaLayer`.
        backend: Selective-scan backend of the Mamba layer.

    Shape:
        ``(B, C_in, *S)`` (any size) -> ``(B, K, *S)``; with deep supervision a list whose
        ``i``-th entry is ``(B, K, *ceil(S / 2**i))`` (default strides), ``n_stages - 1`` entries.
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 2,
                 features_per_stage: Optional[Sequence[int]] = None, strides: Optional[Sequence[IntOrSeq]] = None,
                 kernel_size: Union[IntOrSeq, Sequence[IntOrSeq]] = 3,
                 n_conv_per_stage: Union[int, Sequence[int]] = 2,
                 n_conv_per_stage_decoder: Union[int, Sequence[int]] = 2,
                 conv_bias: bool = True, deep_supervision: bool = True,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, backend: str = "auto") -> None:
        super().__init__()
        self.spatial_dims = _check_dims(spatial_dims)
        features = tuple(features_per_stage) if features_per_stage is not None else default_features(spatial_dims)
        n = len(features)
        n_blocks = _per_stage(n_conv_per_stage, n, "n_conv_per_stage")
        n_dec = _per_stage(n_conv_per_stage_decoder, n - 1, "n_conv_per_stage_decoder")
        for s in range(math.ceil(n / 2), n):  # official: deeper half of the encoder gets 1 block
            n_blocks[s] = 1
        for s in range(math.ceil((n - 1) / 2 + 0.5), n - 1):  # and so do the matching decoder stages
            n_dec[s] = 1
        self.in_channels, self.num_classes = in_channels, num_classes
        self.encoder = UNetResEncoder(in_channels, features, spatial_dims, kernel_size, strides, n_blocks, conv_bias)
        self.mamba_layer = MambaLayer(features[-1], d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)
        self.decoder = UNetResDecoder(self.encoder, num_classes, n_dec, deep_supervision)

    def skips(self, x: Tensor) -> List[Tensor]:
        """Encoder features, the deepest one through the bottleneck Mamba layer."""
        skips = self.encoder(x)
        skips[-1] = self.mamba_layer(skips[-1])
        return skips


_UMAMBA_CFG: dict = dict(kernel_size=3, n_conv_per_stage=2, n_conv_per_stage_decoder=2, conv_bias=True,
                         deep_supervision=True, d_state=16, d_conv=4, expand=2)
_UMAMBA_TEST_CFG: dict = dict(features_per_stage=(4, 8, 16), kernel_size=3, n_conv_per_stage=2,
                              n_conv_per_stage_decoder=2, conv_bias=True, deep_supervision=True,
                              d_state=4, d_conv=4, expand=2)


@register_model(family="umamba", paper="arXiv:2401.04722", spatial_dims=(2, 3), default_cfg=_UMAMBA_CFG)
def umamba_bot(**kwargs) -> UMambaBot:
    """U-Mamba Bot, official nnU-Net-default configuration (47,517,912 parameters for 2D, 1 -> 4)."""
    return UMambaBot(**{**_UMAMBA_CFG, **kwargs})


@register_model(family="umamba", paper="arXiv:2401.04722", spatial_dims=(2, 3), default_cfg=_UMAMBA_TEST_CFG)
def umamba_bot_test(**kwargs) -> UMambaBot:
    """Tiny U-Mamba Bot for tests (features (4, 8, 16), d_state 4)."""
    return UMambaBot(**{**_UMAMBA_TEST_CFG, **kwargs})
