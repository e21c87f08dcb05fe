"""U-Mamba Enc: U-Mamba's residual U-Net with Mamba layers inside the encoder.

Paper:
    J. Ma, F. Li, B. Wang, "U-Mamba: Enhancing Long-range Dependency for Biomedical Image
    Segmentation", arXiv:2401.04722.

Official code (read, not copied): bowang-lab/U-Mamba at commit 530739b,
``umamba/nnunetv2/nets/UMambaEnc_2d.py`` and ``UMambaEnc_3d.py`` (classes ``MambaLayer``
with its ``channel_token`` mode, ``ResidualMambaEncoder``, ``UNetResDecoder``,
``UMambaEnc``, and ``get_umamba_enc_{2d,3d}_from_plans``). The residual building blocks,
the decoder and the padding/cropping are reused from :mod:`mambaseg.models.umamba`
(U-Mamba Bot), which shares them with the official U-Mamba Enc files.

Architecture (module names as the official network, so parameter counts match):

    * ``encoder.stem`` / ``encoder.stages``: as U-Mamba Bot's ``UNetResEncoder`` (same
      block-halving rule: encoder stages ``ceil(n/2) .. n-1`` get one residual block,
      decoder stages ``ceil((n-1)/2 + 0.5) .. n-2`` get one).
    * ``encoder.mamba_layers[s]``: applied to the output of ``encoder.stages[s]`` (which then
      is the skip). ``nn.Identity`` where a stage has no Mamba layer.

      - 2D file: a Mamba layer after every other stage, chosen so that the last stage has
        one (``bool(s % 2) ^ bool(n % 2)``): stages 0, 2, 4, 6 of the 7-stage network.
      - 3D file: a Mamba layer after *every* stage.

    * Token mode, fixed at construction from ``input_size``: the feature-map size of stage
      ``s`` is ``input_size / prod(strides[:s+1])``. If it has at most ``F_s`` positions
      (``prod(size) <= F_s``) the layer runs in *channel-token* mode: the ``F_s`` channels
      are the tokens and the flattened spatial positions their features, so
      ``d_model = prod(size)`` (:class:`ChannelTokenMambaLayer`); otherwise the usual
      patch-token :class:`~mambaseg.blocks.MambaLayer` with ``d_model = F_s``. For the 2D
      default (256x256) the four layers have ``d_model`` 32, 128, 256 (16x16, channel
      tokens) and 16 (4x4, channel tokens).
    * ``decoder``: U-Mamba Bot's ``UNetResDecoder`` (nearest up-sampling + 1x1 conv, concat,
      residual stage, 1x1 seg conv). 2D file: the last (full-resolution) decoder stage gets
      no skip (``BasicResBlock(F_0 -> F_0)``). 3D file: it concatenates the stage-0 encoder
      output too (``BasicResBlock(2 F_0 -> F_0)``) -- :class:`UNetResDecoderAllSkips`.

Configuration followed (``get_umamba_enc_2d_from_plans`` with nnU-Net's default plans):
2D features (32, 64, 128, 256, 512, 512, 512), kernel 3, strides (1, 2, 2, ...), 2 blocks
per stage (encoder and decoder, before the halving rule), conv bias on, InstanceNorm
(affine, eps 1e-5), LeakyReLU(0.01, inplace), Mamba(d_state 16, d_conv 4, expand 2),
deep supervision on, ``input_size`` = the patch size, default (256, 256).
``create_model("umamba_enc", in_channels=1, num_classes=4)`` has 46,390,552 parameters
(encoder 17,035,648 = stem 28,384 + mamba_layers 568,384 [9,984 + 116,736 + 438,272 +
3,392] + stages 16,438,880; decoder 29,354,904 = stages 28,648,992 + upsample_layers
699,872 + seg_layers 6,040), as the official network. 3D: features
(32, 64, 128, 256, 320, 320) and, since the official patch size comes from each dataset's
nnU-Net plans, a default ``input_size`` of (128, 128, 128) (channel tokens at the last stage,
4x4x4 = 64 <= 320).

Deliberate differences:
    * Any input size for the convolutions: zero-padded to the next multiple of the total
      stride and cropped back (as U-Mamba Bot here); the official code needs divisible
      sizes. The construction-time feature-map sizes are computed from ``input_size``
      padded the same way (equal to the official floor division for divisible sizes).
    * Channel-token layers fix the number of spatial positions at their stage: an input
      whose (padded) size gives a different number raises a :class:`ValueError` naming
      the ``input_size`` the model was built for (the official code fails an ``assert``).
      As in the official code only the *number* of positions is checked.
    * ``input_size=None`` means "never use channel tokens" (patch tokens at every Mamba
      stage, any input size); used by the tiny ``umamba_enc_test`` variant so that it runs
      at arbitrary test sizes; it also has a Mamba layer only after its last stage
      (``mamba_stages=(2,)``, keeps the traced ONNX export of the scan fast).
      ``mamba_stages`` and ``skip_full_resolution`` expose the 2D/3D differences (defaults
      follow the official file for ``spatial_dims``).
    * Mamba is mambaseg's selective scan (``backend``), not ``mamba_ssm``; default PyTorch
      initialisation (the official trainer applies ``InitWeights_He(1e-2)``).
"""

from __future__ import annotations

import math
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from mambaseg.blocks import MambaLayer
from mambaseg.models._registry import register_model
from mambaseg.models.umamba import UNetResDecoder, UNetResEncoder, _res_stage
from mambaseg.models.unet import EncoderDecoderNet, IntOrSeq, _check_dims, _per_stage, default_features

__all__ = ["UMambaEnc", "ResidualMambaEncoder", "UNetResDecoderAllSkips", "ChannelTokenMambaLayer",
           "default_input_size"]

DEFAULT_INPUT_SIZE_2D: Tuple[int, ...] = (256, 256)
DEFAULT_INPUT_SIZE_3D: Tuple[int, ...] = (128, 128, 128)


def default_input_size(spatial_dims: int) -> Tuple[int, ...]:
    """Default ``input_size`` (patch size): (256, 256) in 2D, (128, 128, 128) in 3D."""
    return DEFAULT_INPUT_SIZE_3D if _check_dims(spatial_dims) == 3 else DEFAULT_INPUT_SIZE_2D


class ChannelTokenMambaLayer(MambaLayer):
    """U-Mamba Enc's channel-token ``MambaLayer``: the channels are the tokens.

    ``LayerNorm`` + :class:`~mambaseg.blocks.Mamba` over the sequence of ``C`` channels,
    each a vector of the ``dim = prod(spatial)`` feature-map values; no residual; autocast
    disabled (half precision computed in fp32), as the patch-token layer.

    Args:
        dim: Number of spatial positions of the feature maps it will see.
        d_state, d_conv, expand, backend, **mamba_kwargs: As :class:`~mambaseg.blocks.MambaLayer`.

    Shape:
        ``(B, C, *spatial)`` with ``prod(spatial) == dim`` -> same shape.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, *spatial)`` -> ``(B, C, *spatial)``; :class:`ValueError` if ``prod(spatial) != dim``."""
        if x.dim() < 3 or math.prod(x.shape[2:]) != self.dim:
            raise ValueError(f"channel-token MambaLayer(dim={self.dim}) expects (B, C, *spatial) with "
                             f"{self.dim} spatial positions, got {tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            if x.dtype in (torch.float16, torch.bfloat16):
                x = x.float()
            tokens = x.flatten(2)  # (B, C, L): C tokens of L features
            return self.mamba(self.norm(tokens)).reshape(x.shape)


def _mamba_stage_ids(mamba_stages: Union[str, Sequence[int]], n: int) -> List[int]:
    if mamba_stages == "alternate":  # UMambaEnc_2d.py: every other stage, always the last one
        return [s for s in range(n) if bool(s % 2) ^ bool(n % 2)]
    if mamba_stages == "all":  # UMambaEnc_3d.py
        return list(range(n))
    if isinstance(mamba_stages, str):
        raise ValueError(f"mamba_stages must be 'alternate', 'all' or stage indices, got {mamba_stages!r}")
    ids = sorted({int(s) for s in mamba_stages})
    if any(s < 0 or s >= n for s in ids):
        raise ValueError(f"mamba_stages must lie in [0, {n}), got {list(mamba_stages)}")
    return ids


class ResidualMambaEncoder(UNetResEncoder):
    """U-Mamba Enc's encoder: U-Mamba Bot's residual encoder plus a Mamba layer after chosen stages.

    Args:
        in_channels, features_per_stage, spatial_dims, kernel_sizes, strides,
            n_blocks_per_stage, conv_bias: As :class:`~mambaseg.models.umamba.UNetResEncoder`.
        input_size: Spatial size the network is built for (decides the token mode of each
            Mamba layer); ``None``: patch tokens everywhere.
        mamba_stages: ``"alternate"`` (2D file), ``"all"`` (3D file) or stage indices.
        d_state, d_conv, expand, backend: Of the Mamba layers.

    Shape:
        ``(B, C_in, *S)`` (``S`` divisible by the total stride) -> list of the stage outputs
        after their Mamba layers.
    """

    def __init__(self, in_channels: int, features_per_stage: Sequence[int], spatial_dims: int = 2,
                 kernel_sizes: Union[IntOrSeq, Sequence[IntOrSeq]] = 3, strides: Optional[Sequence[IntOrSeq]] = None,
                 n_blocks_per_stage: Union[int, Sequence[int]] = 2, conv_bias: bool = True,
                 input_size: Optional[Sequence[int]] = None, mamba_stages: Union[str, Sequence[int]] = "alternate",
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, backend: str = "auto") -> None:
        super().__init__(in_channels, features_per_stage, spatial_dims, kernel_sizes, strides, n_blocks_per_stage,
                         conv_bias)
        n = len(self.output_channels)
        if input_size is not None:
            input_size = tuple(int(i) for i in input_size)
            if len(input_size) != spatial_dims:
                raise ValueError(f"input_size must have {spatial_dims} entries, got {input_size}")
        self.input_size = input_size
        self.feature_map_sizes: List[Optional[Tuple[int, ...]]] = [None] * n
        if input_size is not None:
            total = [math.prod(st[d] for st in self.strides) for d in range(spatial_dims)]
            size = [math.ceil(i / t) * t for i, t in zip(input_size, total)]
            for s in range(n):
                size = [i // st for i, st in zip(size, self.strides[s])]
                self.feature_map_sizes[s] = tuple(size)
        self.mamba_stage_ids = _mamba_stage_ids(mamba_stages, n)
        self.channel_token = [False] * n
        layers: List[nn.Module] = []
        kw = dict(d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)
        for s in range(n):
            fm = self.feature_map_sizes[s]
            if s not in self.mamba_stage_ids:
                layers.append(nn.Identity())
            elif fm is not None and math.prod(fm) <= self.output_channels[s]:
                self.channel_token[s] = True
                layers.append(ChannelTokenMambaLayer(math.prod(fm), **kw))
            else:
                layers.append(MambaLayer(self.output_channels[s], **kw))
        self.mamba_layers = nn.ModuleList(layers)

    def check_input_size(self, spatial: Sequence[int]) -> None:
        """Raise :class:`ValueError` if a (padded) input of size ``spatial`` breaks a channel-token layer."""
        size = list(spatial)
        for s in range(len(self.stages)):
            size = [math.ceil(i / st) for i, st in zip(size, self.strides[s])]
            if self.channel_token[s] and math.prod(size) != math.prod(self.feature_map_sizes[s]):
                raise ValueError(
                    f"UMambaEnc was built for input_size={self.input_size}: its channel-token Mamba layer at "
                    f"stage {s} needs a {self.feature_map_sizes[s]} feature map "
                    f"({math.prod(self.feature_map_sizes[s])} positions), but an input of spatial size "
                    f"{tuple(int(i) for i in spatial)} gives {tuple(size)}. Use inputs of size {self.input_size} "
                    f"(or build the model with input_size set to your patch size, or input_size=None for "
                    f"patch tokens only).")

    def forward(self, x: Tensor) -> List[Tensor]:
        self.check_input_size(x.shape[2:])
        x = self.stem(x)
        skips = []
        for stage, mamba in zip(self.stages, self.mamba_layers):
            x = mamba(stage(x))
            skips.append(x)
        return skips


class UNetResDecoderAllSkips(UNetResDecoder):
    """``UMambaEnc_3d.py``'s decoder: as U-Mamba Bot's, but the last stage also concatenates a skip.

    The full-resolution decoder stage concatenates the stage-0 encoder output, so its
    ``BasicResBlock`` maps ``2 F_0 -> F_0``.
    """

    def __init__(self, encoder: UNetResEncoder, num_classes: int, n_conv_per_stage: Union[int, Sequence[int]] = 2,
                 deep_supervision: bool = False) -> None:
        super().__init__(encoder, num_classes, n_conv_per_stage, deep_supervision)
        n = len(encoder.output_channels)
        n_conv = _per_stage(n_conv_per_stage, n - 1, "n_conv_per_stage_decoder")
        f0 = encoder.output_channels[0]
        self.stages[-1] = _res_stage(encoder.spatial_dims, 2 * f0, f0, encoder.kernel_sizes[0], 1, n_conv[-1],
                                     encoder.conv_bias)

    def _stage_outputs(self, skips: Sequence[Tensor]) -> Iterator[Tensor]:
        x = skips[-1]
        for s in range(len(self.stages)):  # every stage concatenates a skip, the full-resolution one too
            x = self.stages[s](torch.cat((self.upsample_layers[s](x), skips[-(s + 2)]), 1))
            yield x


class UMambaEnc(EncoderDecoderNet):
    """U-Mamba Enc for 2D or 3D inputs.

    Args:
        in_channels: Input channels.
        num_classes: Output channels ``K``.
        spatial_dims: 2 or 3.
        input_size: Patch size the network is built for (decides channel- vs patch-token
            Mamba layers). ``"auto"``: :func:`default_input_size`; ``None``: patch tokens
            only (then any input size works).
        features_per_stage: Stage widths; ``None``: nnU-Net's default for ``spatial_dims``.
        strides: Per-stage strides; ``None``: ``(1, 2, 2, ...)``.
        kernel_size: Conv kernel (int or one per stage).
        n_conv_per_stage: Encoder residual blocks per stage before the official halving rule.
        n_conv_per_stage_decoder: Decoder blocks per stage before the official halving rule.
        conv_bias: Bias of the ``BasicBlockD`` convs.
        deep_supervision: Return all decoder levels' logits (train and eval mode).
        mamba_stages: ``"alternate"``, ``"all"`` or stage indices; ``None``: ``"alternate"``
            in 2D, ``"all"`` in 3D (as the official files).
        skip_full_resolution: Whether the last decoder stage concatenates the stage-0 output;
            ``None``: ``False`` in 2D, ``True`` in 3D (as the official files).
        d_state, d_conv, expand: Of the Mamba layers.
        backend: Selective-scan backend.

    Shape:
        ``(B, C_in, *S)`` -> ``(B, K, *S)``; with deep supervision a list whose ``i``-th entry
        is ``(B, K, *ceil(S / 2**i))`` (default strides), ``n_stages - 1`` entries. With
        channel-token layers ``S`` (padded to the total stride) must give the feature maps of
        ``input_size`` (:class:`ValueError` otherwise).
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 2,
                 input_size: Union[str, Sequence[int], None] = "auto",
                 features_per_stage: Optional[Sequence[int]] = None, strides: Optional[Sequence[IntOrSeq]] = None,
                 kernel_size: Union[IntOrSeq, Sequence[IntOrSeq]] = 3,
                 n_conv_per_stage: Union[int, Sequence[int]] = 2,
                 n_conv_per_stage_decoder: Union[int, Sequence[int]] = 2,
                 conv_bias: bool = True, deep_supervision: bool = True,
                 mamba_stages: Union[str, Sequence[int], None] = None,
                 skip_full_resolution: Optional[bool] = None,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, backend: str = "auto") -> None:
        super().__init__()
        self.spatial_dims = _check_dims(spatial_dims)
        if isinstance(input_size, str):
            if input_size != "auto":
                raise ValueError(f"input_size must be 'auto', None or {spatial_dims} ints, got {input_size!r}")
            input_size = default_input_size(spatial_dims)
        features = tuple(features_per_stage) if features_per_stage is not None else default_features(spatial_dims)
        n = len(features)
        n_blocks = _per_stage(n_conv_per_stage, n, "n_conv_per_stage")
        n_dec = _per_stage(n_conv_per_stage_decoder, n - 1, "n_conv_per_stage_decoder")
        for s in range(math.ceil(n / 2), n):  # official: deeper half of the encoder gets 1 block
            n_blocks[s] = 1
        for s in range(math.ceil((n - 1) / 2 + 0.5), n - 1):  # and so do the matching decoder stages
            n_dec[s] = 1
        if mamba_stages is None:
            mamba_stages = "all" if spatial_dims == 3 else "alternate"
        if skip_full_resolution is None:
            skip_full_resolution = spatial_dims == 3
        self.in_channels, self.num_classes = in_channels, num_classes
        self.encoder = ResidualMambaEncoder(in_channels, features, spatial_dims, kernel_size, strides, n_blocks,
                                            conv_bias, input_size, mamba_stages, d_state, d_conv, expand, backend)
        decoder_cls = UNetResDecoderAllSkips if skip_full_resolution else UNetResDecoder
        self.decoder = decoder_cls(self.encoder, num_classes, n_dec, deep_supervision)

    @property
    def input_size(self) -> Optional[Tuple[int, ...]]:
        """The spatial size the network was built for (``None``: patch tokens only)."""
        return self.encoder.input_size


_UMAMBA_ENC_CFG: dict = dict(input_size="auto", kernel_size=3, n_conv_per_stage=2, n_conv_per_stage_decoder=2,
                             conv_bias=True, deep_supervision=True, d_state=16, d_conv=4, expand=2)
_UMAMBA_ENC_TEST_CFG: dict = dict(input_size=None, features_per_stage=(4, 8, 16), kernel_size=3, n_conv_per_stage=2,
                                  n_conv_per_stage_decoder=2, conv_bias=True, deep_supervision=True,
                                  mamba_stages=(2,), d_state=4, d_conv=4, expand=2)


@register_model(family="umamba_enc", paper="arXiv:2401.04722", spatial_dims=(2, 3), default_cfg=_UMAMBA_ENC_CFG)
def umamba_enc(**kwargs) -> UMambaEnc:
    """U-Mamba Enc, official nnU-Net-default configuration (46,390,552 parameters for 2D, 1 -> 4, 256x256)."""
    return UMambaEnc(**{**_UMAMBA_ENC_CFG, **kwargs})


@register_model(family="umamba_enc", paper="arXiv:2401.04722", spatial_dims=(2, 3),
                default_cfg=_UMAMBA_ENC_TEST_CFG)
def umamba_enc_test(**kwargs) -> UMambaEnc:
    """Tiny U-Mamba Enc for tests (features (4, 8, 16), d_state 4, ``input_size=None``: patch tokens only).

    Only the last stage has a Mamba layer (``mamba_stages=(2,)``): a layer over every
    full-resolution position makes the traced ONNX export of the pure-PyTorch scan take
    minutes; ``UMambaEnc(..., mamba_stages=None)`` gives the official 2D/3D pattern. Pass
    ``input_size`` (e.g. ``(16, 16)``: 4x4 = 16 positions at the last stage) to get a
    channel-token layer.
    """
    return UMambaEnc(**{**_UMAMBA_ENC_TEST_CFG, **kwargs})
