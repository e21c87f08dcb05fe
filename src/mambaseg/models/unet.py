"""nnU-Net-style plain convolutional U-Net (the ``unet`` baseline), 2D and 3D.

Paper:
    F. Isensee, P. F. Jaeger, S. A. A. Kohl, J. Petersen, K. H. Maier-Hein, "nnU-Net: a
    self-configuring method for deep learning-based biomedical image segmentation",
    Nature Methods 18, 203-211 (2021).

Official code (read, not copied): MIC-DKFZ/dynamic-network-architectures,
``dynamic_network_architectures/architectures/unet.py`` (class ``PlainConvUNet``),
``building_blocks/plain_conv_encoder.py`` (``PlainConvEncoder``),
``building_blocks/unet_decoder.py`` (``UNetDecoder``) and
``building_blocks/simple_conv_blocks.py`` (``ConvDropoutNormReLU``, ``StackedConvBlocks``).

Configuration followed (nnU-Net v2 defaults as produced by its planner): conv -> InstanceNorm
(affine, eps 1e-5) -> LeakyReLU(0.01, inplace); kernel 3; two convs per stage in encoder
and decoder, the first conv of an encoder stage carries the stride (1 for the first
stage, 2 afterwards, no pooling); conv bias on; up-sampling by a transposed conv with
kernel = stride (bias = ``conv_bias``) to the skip's width, concatenation with the skip,
then the decoder convs; one 1x1 segmentation conv (with bias) per decoder stage.
Features (32, 64, 128, 256, 512, 512, 512) in 2D and (32, 64, 128, 256, 320, 320) in 3D.
Module names mirror DNA (``encoder.stages``, ``decoder.transpconvs``, ``decoder.stages``,
``decoder.seg_layers``). ``unet(in_channels=1, num_classes=4, deep_supervision=True)``
has 33,474,840 parameters (see the tests).

Deep supervision (as DNA, not as the brief's "only in training" alternative): when
``deep_supervision=True`` the forward returns the list of logits of every decoder stage,
highest resolution first, in training *and* eval mode (nnU-Net switches the flag off
itself for inference); otherwise only the full-resolution logits.

Deliberate differences:
    * Any input size: the input is zero-padded (at the end of every spatial axis) to the
      next multiple of the total stride and all outputs are cropped back (deep-supervision
      outputs to ``ceil(size / stride_of_that_level)``); DNA requires divisible sizes.
    * No dropout option and no ``nonlin_first`` variant (nnU-Net uses neither by default);
      weights keep PyTorch's default initialisation (nnU-Net applies ``InitWeights_He(1e-2)``
      in its trainer, not in the architecture).
    * Isotropic strides/kernels given as ints per stage (anisotropic per-axis tuples are
      accepted as well).
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import Tensor, nn

from mambaseg.layers.padding import crop_outputs, pad_to_multiple
from mambaseg.models._registry import register_model

__all__ = ["UNet", "EncoderDecoderNet", "DeepSupervisionSwitch", "PlainConvEncoder", "UNetDecoder", "ConvNormAct",
           "StackedConvBlocks", "conv_op_for", "norm_op_for", "transp_conv_op_for", "default_features"]

IntOrSeq = Union[int, Sequence[int]]

DEFAULT_FEATURES_2D: Tuple[int, ...] = (32, 64, 128, 256, 512, 512, 512)
DEFAULT_FEATURES_3D: Tuple[int, ...] = (32, 64, 128, 256, 320, 320)


def conv_op_for(spatial_dims: int) -> Type[nn.Module]:
    """``nn.Conv2d`` / ``nn.Conv3d`` (also ``nn.Conv1d``) for ``spatial_dims``."""
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[_check_dims(spatial_dims)]


def norm_op_for(spatial_dims: int) -> Type[nn.Module]:
    """The matching ``InstanceNorm{1,2,3}d``."""
    return {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[_check_dims(spatial_dims)]


def transp_conv_op_for(spatial_dims: int) -> Type[nn.Module]:
    """The matching ``ConvTranspose{1,2,3}d``."""
    return {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[_check_dims(spatial_dims)]


def default_features(spatial_dims: int) -> Tuple[int, ...]:
    """nnU-Net's default stage widths: 7 stages capped at 512 in 2D, 6 capped at 320 in 3D."""
    return DEFAULT_FEATURES_3D if _check_dims(spatial_dims) == 3 else DEFAULT_FEATURES_2D


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def _per_axis(v: IntOrSeq, spatial_dims: int) -> Tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * spatial_dims
    v = tuple(int(i) for i in v)
    if len(v) != spatial_dims:
        raise ValueError(f"expected an int or {spatial_dims} values, got {v}")
    return v


def _per_stage(v, n: int, name: str) -> list:
    if isinstance(v, int):
        return [v] * n
    v = list(v)
    if len(v) != n:
        raise ValueError(f"{name} must have {n} entries, got {len(v)}")
    return v



def supervised_logits(stage_outputs: Iterator[Tensor], seg_layers: nn.ModuleList,
                      deep_supervision: bool) -> Union[Tensor, List[Tensor]]:
    """nnU-Net's decoder heads over the decoder stages' outputs (coarsest stage first).

    With ``deep_supervision`` every stage ``s`` goes through ``seg_layers[s]`` and the logits come back highest
    resolution first; without it only the last (full-resolution) stage is scored, by ``seg_layers[-1]``.
    """
    outs, x = [], None
    for s, x in enumerate(stage_outputs):
        if deep_supervision:
            outs.append(seg_layers[s](x))
    return outs[::-1] if deep_supervision else seg_layers[-1](x)

class ConvNormAct(nn.Module):
    """``conv -> InstanceNorm(affine, eps 1e-5) -> LeakyReLU(0.01)`` (``act=False``: no nonlinearity).

    Shape: ``(B, C_in, *S)`` -> ``(B, C_out, *S / stride)`` (padding ``kernel // 2``).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: IntOrSeq = 3,
                 stride: IntOrSeq = 1, conv_bias: bool = True, act: bool = True) -> None:
        super().__init__()
        k = _per_axis(kernel_size, spatial_dims)
        self.conv = conv_op_for(spatial_dims)(in_channels, out_channels, k, _per_axis(stride, spatial_dims),
                                              padding=tuple(i // 2 for i in k), bias=conv_bias)
        self.norm = norm_op_for(spatial_dims)(out_channels, eps=1e-5, affine=True)
        self.nonlin = nn.LeakyReLU(0.01, inplace=True) if act else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.conv(x))
        return self.nonlin(x) if self.nonlin is not None else x


class StackedConvBlocks(nn.Module):
    """``n_convs`` x :class:`ConvNormAct`; only the first carries ``stride`` and changes the width.

    Shape: ``(B, C_in, *S)`` -> ``(B, C_out, *S / stride)``.
    """

    def __init__(self, spatial_dims: int, n_convs: int, in_channels: int, out_channels: int,
                 kernel_size: IntOrSeq = 3, stride: IntOrSeq = 1, conv_bias: bool = True) -> None:
        super().__init__()
        if n_convs < 1:
            raise ValueError(f"n_convs must be >= 1, got {n_convs}")
        self.convs = nn.Sequential(
            ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride, conv_bias),
            *[ConvNormAct(spatial_dims, out_channels, out_channels, kernel_size, 1, conv_bias)
              for _ in range(n_convs - 1)])

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(x)


def set_encoder_geometry(encoder: nn.Module, features_per_stage: Sequence[int], spatial_dims: int,
                         kernel_sizes: Union[IntOrSeq, Sequence[IntOrSeq]],
                         strides: Optional[Sequence[IntOrSeq]]) -> int:
    """Sets an nnU-Net-style encoder's ``spatial_dims``, ``output_channels`` and per-stage, per-axis
    ``kernel_sizes`` and ``strides`` (default ``(1, 2, 2, ...)``), the attributes its decoder reads; returns the
    number of stages."""
    n = len(features_per_stage)
    encoder.spatial_dims = _check_dims(spatial_dims)
    if strides is None:
        strides = [1] + [2] * (n - 1)
    encoder.output_channels = [int(f) for f in features_per_stage]
    encoder.kernel_sizes = [_per_axis(k, spatial_dims) for k in _per_stage(kernel_sizes, n, "kernel_sizes")]
    encoder.strides = [_per_axis(s, spatial_dims) for s in _per_stage(strides, n, "strides")]
    return n


class PlainConvEncoder(nn.Module):
    """nnU-Net's plain conv encoder: one :class:`StackedConvBlocks` per stage (strided first conv).

    Args:
        in_channels: Input channels.
        features_per_stage: Width of each stage (its length is the number of stages).
        spatial_dims: 2 or 3 (1 works too).
        kernel_sizes: One kernel size per stage (or one for all).
        strides: One stride per stage (or per-axis tuples); default ``(1, 2, 2, ...)``.
        n_conv_per_stage: Convs per stage (int or per stage).
        conv_bias: Bias of the convs.
        return_skips: Return every stage's output (else only the last).

    Shape:
        ``(B, C_in, *S)`` -> list of ``(B, F_s, *S / prod(strides[:s+1]))``, one per stage
        (``S`` divisible by the total stride).
    """

    def __init__(self, in_channels: int, features_per_stage: Sequence[int], spatial_dims: int = 2,
                 kernel_sizes: Union[IntOrSeq, Sequence[IntOrSeq]] = 3,
                 strides: Optional[Sequence[IntOrSeq]] = None, n_conv_per_stage: Union[int, Sequence[int]] = 2,
                 conv_bias: bool = True, return_skips: bool = True) -> None:
        super().__init__()
        n = set_encoder_geometry(self, features_per_stage, spatial_dims, kernel_sizes, strides)
        n_conv = _per_stage(n_conv_per_stage, n, "n_conv_per_stage")
        self.conv_bias = conv_bias
        self.return_skips = return_skips
        stages, c = [], in_channels
        for s in range(n):
            stages.append(StackedConvBlocks(spatial_dims, n_conv[s], c, self.output_channels[s],
                                            self.kernel_sizes[s], self.strides[s], conv_bias))
            c = self.output_channels[s]
        self.stages = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> Union[Tensor, List[Tensor]]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips if self.return_skips else skips[-1]


class UNetDecoder(nn.Module):
    """nnU-Net's U-Net decoder: transposed conv -> concat skip -> conv stack -> 1x1 seg conv.

    Built from an encoder exposing ``output_channels``, ``strides``, ``kernel_sizes``,
    ``spatial_dims`` and ``conv_bias`` (the encoder is *not* stored as a submodule).

    Args:
        encoder: The encoder (for its widths, strides and kernels).
        num_classes: Output channels ``K`` of every seg conv.
        n_conv_per_stage: Convs per decoder stage (int or ``n_stages - 1`` values, lowest
            resolution first).
        deep_supervision: Return all decoder levels' logits.

    Shape:
        ``skips`` (list of the encoder stages' outputs) -> ``(B, K, *S_0)`` where ``S_0`` is the
        first stage's size; with deep supervision a list of ``n_stages - 1`` logits, highest
        resolution first.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, n_conv_per_stage: Union[int, Sequence[int]] = 2,
                 deep_supervision: bool = False) -> None:
        super().__init__()
        chans, strides, kernels = encoder.output_channels, encoder.strides, encoder.kernel_sizes
        dims, bias = encoder.spatial_dims, encoder.conv_bias
        n = len(chans)
        if n < 2:
            raise ValueError("the encoder needs at least 2 stages")
        n_conv = _per_stage(n_conv_per_stage, n - 1, "n_conv_per_stage_decoder")
        self.deep_supervision = deep_supervision
        self.num_classes = num_classes
        transp = transp_conv_op_for(dims)
        conv = conv_op_for(dims)
        self.transpconvs = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.seg_layers = nn.ModuleList()
        for s in range(1, n):
            below, skip, st = chans[-s], chans[-(s + 1)], strides[-s]
            self.transpconvs.append(transp(below, skip, st, st, bias=bias))
            self.stages.append(StackedConvBlocks(dims, n_conv[s - 1], 2 * skip, skip, kernels[-(s + 1)], 1, bias))
            self.seg_layers.append(conv(skip, num_classes, 1, 1, 0, bias=True))

    def forward(self, skips: Sequence[Tensor]) -> Union[Tensor, List[Tensor]]:
        return supervised_logits(self._stage_outputs(skips), self.seg_layers, self.deep_supervision)

    def _stage_outputs(self, skips: Sequence[Tensor]) -> Iterator[Tensor]:
        x = skips[-1]
        for s in range(len(self.stages)):
            x = self.stages[s](torch.cat((self.transpconvs[s](x), skips[-(s + 2)]), 1))
            yield x


class DeepSupervisionSwitch(nn.Module):
    """A ``deep_supervision`` attribute that lives on ``self.decoder`` (as the decoder decides what it returns)."""

    @property
    def deep_supervision(self) -> bool:
        return self.decoder.deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, value: bool) -> None:
        self.decoder.deep_supervision = bool(value)


class EncoderDecoderNet(DeepSupervisionSwitch):
    """What the nnU-Net-style networks share (U-Net, U-Mamba Bot, U-Mamba Enc): output levels at the encoder's
    cumulative strides, and a forward that pads to the total stride and crops every output back.

    Subclasses set ``self.spatial_dims``, ``self.encoder`` (with ``strides``, returning the skips) and
    ``self.decoder``; :meth:`skips` may transform the encoder's output (U-Mamba Bot's bottleneck Mamba).
    """

    def level_strides(self) -> List[Tuple[int, ...]]:
        """Cumulative stride of every encoder stage (= of every output level, highest resolution first)."""
        out, cum = [], [1] * self.spatial_dims
        for st in self.encoder.strides:
            cum = [c * s for c, s in zip(cum, st)]
            out.append(tuple(cum))
        return out

    def skips(self, x: Tensor) -> List[Tensor]:
        """Encoder features of every stage, highest resolution first: ``(B, C_s, *S / stride_s)``."""
        return self.encoder(x)

    def forward(self, x: Tensor) -> Union[Tensor, List[Tensor]]:
        """``(B, C_in, *S)`` -> logits ``(B, K, *S)`` (or the deep-supervision list)."""
        lv = self.level_strides()
        x, spatial = pad_to_multiple(x, lv[-1], mode="constant")
        return crop_outputs(self.decoder(self.skips(x)), spatial, lv)


class UNet(EncoderDecoderNet):
    """nnU-Net v2 ``PlainConvUNet`` for 2D or 3D inputs.

    Args:
        in_channels: Input channels.
        num_classes: Output channels ``K``.
        spatial_dims: 2 or 3.
        features_per_stage: Stage widths; ``None``: nnU-Net's default for ``spatial_dims``.
        strides: Per-stage strides; ``None``: ``(1, 2, 2, ...)``.
        kernel_size: Conv kernel (int, or one per stage).
        n_conv_per_stage: Encoder convs per stage.
        n_conv_per_stage_decoder: Decoder convs per stage.
        conv_bias: Bias of the 3x3 convs and transposed convs.
        deep_supervision: Return the list of all decoder levels' logits (highest resolution
            first) in train and eval mode, as DNA.

    Shape:
        ``(B, C_in, *S)`` (any size) -> ``(B, K, *S)``; with deep supervision a list whose
        ``i``-th entry is ``(B, K, *ceil(S / 2**i))`` (for the default strides).
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 2,
                 features_per_stage: Optional[Sequence[int]] = None,
                 strides: Optional[Sequence[IntOrSeq]] = None,
                 kernel_size: Union[IntOrSeq, Sequence[IntOrSeq]] = 3,
                 n_conv_per_stage: Union[int, Sequence[int]] = 2,
                 n_conv_per_stage_decoder: Union[int, Sequence[int]] = 2,
                 conv_bias: bool = True, deep_supervision: bool = False) -> None:
        super().__init__()
        self.spatial_dims = _check_dims(spatial_dims)
        features = tuple(features_per_stage) if features_per_stage is not None else default_features(spatial_dims)
        self.in_channels, self.num_classes = in_channels, num_classes
        self.encoder = PlainConvEncoder(in_channels, features, spatial_dims, kernel_size, strides,
                                        n_conv_per_stage, conv_bias, return_skips=True)
        self.decoder = UNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision)


_UNET_CFG: dict = dict(kernel_size=3, n_conv_per_stage=2, n_conv_per_stage_decoder=2, conv_bias=True,
                       deep_supervision=False)
_UNET_TEST_CFG: dict = dict(features_per_stage=(4, 8, 16), kernel_size=3, n_conv_per_stage=1,
                            n_conv_per_stage_decoder=1, conv_bias=True, deep_supervision=False)


@register_model(family="unet", paper="doi:10.1038/s41592-020-01008-z", spatial_dims=(2, 3), default_cfg=_UNET_CFG)
def unet(**kwargs) -> UNet:
    """nnU-Net ``PlainConvUNet`` with the default features for ``spatial_dims`` (2D: 7 stages up to 512)."""
    return UNet(**{**_UNET_CFG, **kwargs})


@register_model(family="unet", paper="doi:10.1038/s41592-020-01008-z", spatial_dims=(2, 3),
                default_cfg=_UNET_TEST_CFG)
def unet_test(**kwargs) -> UNet:
    """Tiny U-Net for tests (features (4, 8, 16), one conv per stage)."""
    return UNet(**{**_UNET_TEST_CFG, **kwargs})
