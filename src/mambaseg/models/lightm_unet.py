"""LightM-UNet: a light-weight Mamba-assisted U-Net (2D or 3D).

Paper:
    W. Liao, Y. Zhu, X. Wang, C. Pan, Y. Wang, L. Ma, "LightM-UNet: Mamba Assists in
    Lightweight UNet for Medical Image Segmentation", arXiv:2403.05246.

Official code (read at d2bed4a, the version the search tool held; the brief names
6b72e27 — same file layout, class names ``MambaLayer``/``ResUpBlock``; not copied):
MrBlankness/LightM-UNet, ``lightm-unet/nnunetv2/nets/LightMUNet.py`` (classes
``MambaLayer``, ``ResMambaBlock``, ``ResUpBlock``, ``LightMUNet``; helpers
``get_dwconv_layer``, ``get_mamba_layer``). It builds on MONAI 1.3 blocks
(``Convolution(conv_only=True)`` = a bare ``ConvNd`` with ``padding=(k-1)//2``;
``segresnet_block.get_conv_layer`` = bare ``ConvNd``, bias off; ``get_upsample_layer``
= ``UpSample(mode="nontrainable", interp_mode=LINEAR, scale 2, align_corners=False)``,
i.e. ``nn.Upsample`` bilinear (2D) / trilinear (3D) with no pre-conv;
``get_norm_layer(("GROUP", {"num_groups": 8}))`` = ``nn.GroupNorm(8, C)``;
``get_act_layer(("RELU", {"inplace": True}))`` = ``nn.ReLU(inplace=True)``;
``Dropout[DROPOUT, d]`` = ``nn.Dropout2d``/``nn.Dropout3d``). Here these are written
with plain torch layers, one code path for 2D and 3D selected by ``spatial_dims``.

Configuration followed (``create_model("lightm_unet", in_channels=1, num_classes=4)``):
``LightMUNet(spatial_dims=2, init_filters=32, in_channels=1, out_channels=4,
blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1])`` as built by the official nnU-Net
trainer — 5,011,749 parameters (convInit 41, down_layers 4,944,021, up_layers 24,419,
up_samples 43,008, conv_final 260); 3D, 1 -> 3 channels: 5,015,766. The paper/README
speak of ~1M parameters; the code gives ~5M (the eight 256-channel MambaLayers of the
last stage alone are 504,065 each) and we follow the code.

Architecture (settled from the code):
    * ``convInit``: depthwise-separable conv (depthwise k3 ``groups=C_in`` then
      pointwise 1x1, both without bias).
    * ``down_layers[i]``: for ``i > 0`` a ``MambaLayer(C/2 -> C)`` followed by max-pool
      (k=s=2), then ``blocks_down[i]`` ``ResMambaBlock(C)``: ``GN -> ReLU -> MambaLayer
      -> GN -> ReLU -> MambaLayer`` plus the identity.
    * ``MambaLayer(C_in -> C_out)``: tokens are the spatial positions flattened in
      row-major order (``(B, C, *S) -> (B, prod S, C)``); ``y = LN(x)``;
      ``z = Mamba(y) + skip_scale * x``; ``out = Linear(LN(z))`` with the *same*
      LayerNorm used twice; ``skip_scale`` is a learnable scalar initialised to 1.
    * ``up_samples[i]``: 1x1 conv (no bias) halving the channels, then x2
      (bi/tri)linear upsampling; the result is *added* to the encoder skip.
    * ``up_layers[i]``: ``blocks_up[i]`` ``ResUpBlock(C)``: ``GN -> ReLU ->
      dwconv(k3) + skip_scale * identity -> GN -> ReLU``.
    * ``conv_final``: ``GN -> ReLU ->`` depthwise-separable conv with kernel 1 and bias
      (depthwise 1x1 ``groups=C`` then pointwise 1x1).
    * Default torch initialisation everywhere (the official code sets none).
Module names mirror ``LightMUNet`` (``convInit``, ``down_layers``, ``up_layers``,
``up_samples``, ``conv_final``; sub-names ``norm1``/``norm2``/``conv1``/``conv2``/
``conv``/``skip_scale``/``norm``/``mamba``/``proj``) so official state dicts map closely.

Deliberate differences:
    * Any input size: the spatial dims are padded (replicate) to the next multiple of
      ``2**(len(blocks_down) - 1)`` and the logits are cropped back (the official code
      needs multiples of that stride).
    * ``d_state`` (and ``d_conv``/``expand``) are arguments; the official ``MambaLayer``
      always uses its defaults 16/4/2 (= ours by default).
    * ``len(blocks_up) == len(blocks_down) - 1`` is required (other values fail in the
      official code with a shape error); ``use_conv_final=False``, ``norm_name`` and the
      ``upsample_mode`` choices other than ``"nontrainable"``/``"deconv"`` are not offered.
    * No float16 -> float32 cast inside the Mamba layer (use autocast instead).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from mambaseg.blocks import Mamba
from mambaseg.layers.padding import crop_to, pad_to_multiple
from mambaseg.models._registry import register_model

__all__ = ["LightMUNet", "LightMambaLayer", "ResMambaBlock", "ResUpBlock", "dw_separable_conv"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONVT = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_DROP = {2: nn.Dropout2d, 3: nn.Dropout3d}


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def dw_separable_conv(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                      bias: bool = False) -> nn.Sequential:
    """Depthwise ``k`` conv (``groups=in_channels``) then pointwise 1x1 conv ("same" padding).

    Shape: ``(B, C_in, *S)`` -> ``(B, C_out, *S)``.
    """
    conv = _CONV[spatial_dims]
    return nn.Sequential(
        conv(in_channels, in_channels, kernel_size, padding=(kernel_size - 1) // 2, groups=in_channels, bias=bias),
        conv(in_channels, out_channels, 1, bias=bias),
    )


class LightMambaLayer(nn.Module):
    """Official ``MambaLayer``: Mamba over the flattened spatial tokens with a scaled skip.

    ``out = proj(LN(Mamba(LN(x)) + skip_scale * x))`` (one shared LayerNorm), tokens in
    row-major spatial order.

    Shape: ``(B, C_in, *S)`` -> ``(B, C_out, *S)``.
    """

    def __init__(self, in_channels: int, out_channels: int, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2) -> None:
        super().__init__()
        self.input_dim, self.output_dim = in_channels, out_channels
        self.norm = nn.LayerNorm(in_channels)
        self.mamba = Mamba(d_model=in_channels, d_state=d_state, d_conv=d_conv, expand=expand)
        self.proj = nn.Linear(in_channels, out_channels)
        self.skip_scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        if c != self.input_dim:
            raise ValueError(f"expected {self.input_dim} channels, got {c}")
        spatial = x.shape[2:]
        tokens = x.reshape(b, c, -1).transpose(1, 2)  # (B, L, C)
        z = self.mamba(self.norm(tokens)) + self.skip_scale * tokens
        z = self.proj(self.norm(z))  # (B, L, C_out)
        return z.transpose(1, 2).reshape(b, self.output_dim, *spatial)


def _mamba_down(spatial_dims: int, in_channels: int, out_channels: int, **mamba_kw) -> nn.Sequential:
    """``MambaLayer(C_in -> C_out)`` then max-pool k=s=2: ``(B, C_in, *S)`` -> ``(B, C_out, *S/2)``."""
    return nn.Sequential(LightMambaLayer(in_channels, out_channels, **mamba_kw), _POOL[spatial_dims](2, 2))


class ResMambaBlock(nn.Module):
    """``x + MambaLayer(ReLU(GN(MambaLayer(ReLU(GN(x))))))``. Shape: ``(B, C, *S)`` -> same."""

    def __init__(self, spatial_dims: int, channels: int, num_groups: int = 8, **mamba_kw) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, channels)
        self.norm2 = nn.GroupNorm(num_groups, channels)
        self.act = nn.ReLU(inplace=True)
        self.conv1 = LightMambaLayer(channels, channels, **mamba_kw)
        self.conv2 = LightMambaLayer(channels, channels, **mamba_kw)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(self.act(self.norm1(x)))
        y = self.conv2(self.act(self.norm2(y)))
        return y + x


class ResUpBlock(nn.Module):
    """``ReLU(GN(dwconv(ReLU(GN(x))) + skip_scale * x))``. Shape: ``(B, C, *S)`` -> same."""

    def __init__(self, spatial_dims: int, channels: int, num_groups: int = 8, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("kernel_size must be odd")
        self.norm1 = nn.GroupNorm(num_groups, channels)
        self.norm2 = nn.GroupNorm(num_groups, channels)
        self.act = nn.ReLU(inplace=True)
        self.conv = dw_separable_conv(spatial_dims, channels, channels, kernel_size)
        self.skip_scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(self.act(self.norm1(x))) + self.skip_scale * x
        return self.act(self.norm2(y))


class LightMUNet(nn.Module):
    """LightM-UNet (official ``LightMUNet``) for 2D or 3D segmentation.

    Args:
        in_channels: Input channels.
        num_classes: Output channels (logits).
        spatial_dims: 2 or 3.
        init_filters: Width of the first level; level ``i`` has ``init_filters * 2**i``.
        blocks_down: ``ResMambaBlock`` count per encoder level (also sets the depth).
        blocks_up: ``ResUpBlock`` count per decoder level (``len(blocks_down) - 1`` entries).
        d_state, d_conv, expand: Mamba-1 settings of every Mamba layer.
        num_groups: GroupNorm groups (must divide ``init_filters``).
        dropout_prob: Optional channel dropout after ``convInit`` (``None``: none).
        upsample_mode: ``"nontrainable"`` (official default: 1x1 conv + bi/trilinear x2)
            or ``"deconv"`` (1x1 conv + transposed conv k=s=2).

    Shape:
        Input ``(B, in_channels, *S)`` with ``len(S) == spatial_dims`` and any sizes,
        output logits ``(B, num_classes, *S)``.
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 2, init_filters: int = 32,
                 blocks_down: Sequence[int] = (1, 2, 2, 4), blocks_up: Sequence[int] = (1, 1, 1),
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, num_groups: int = 8,
                 dropout_prob: Optional[float] = None, upsample_mode: str = "nontrainable") -> None:
        super().__init__()
        _check_dims(spatial_dims)
        blocks_down = tuple(int(b) for b in blocks_down)
        blocks_up = tuple(int(b) for b in blocks_up)
        if len(blocks_down) < 1 or len(blocks_up) != len(blocks_down) - 1:
            raise ValueError(f"need len(blocks_up) == len(blocks_down) - 1, got {blocks_down}, {blocks_up}")
        if upsample_mode not in ("nontrainable", "deconv"):
            raise ValueError(f"upsample_mode must be 'nontrainable' or 'deconv', got {upsample_mode!r}")
        self.in_channels, self.num_classes, self.spatial_dims = in_channels, num_classes, spatial_dims
        self.blocks_down, self.blocks_up = blocks_down, blocks_up
        self.size_divisor = 2 ** (len(blocks_down) - 1)
        mkw = dict(d_state=d_state, d_conv=d_conv, expand=expand)
        f = init_filters

        self.convInit = dw_separable_conv(spatial_dims, in_channels, f, 3)
        self.dropout = _DROP[spatial_dims](dropout_prob) if dropout_prob is not None else None

        self.down_layers = nn.ModuleList()
        for i, n_blocks in enumerate(blocks_down):
            c = f * 2 ** i
            first = _mamba_down(spatial_dims, c // 2, c, **mkw) if i > 0 else nn.Identity()
            self.down_layers.append(nn.Sequential(
                first, *[ResMambaBlock(spatial_dims, c, num_groups, **mkw) for _ in range(n_blocks)]))

        self.up_layers, self.up_samples = nn.ModuleList(), nn.ModuleList()
        n_up = len(blocks_up)
        conv = _CONV[spatial_dims]
        for i in range(n_up):
            c = f * 2 ** (n_up - i)  # channels entering this decoder level
            self.up_layers.append(nn.Sequential(
                *[ResUpBlock(spatial_dims, c // 2, num_groups) for _ in range(blocks_up[i])]))
            if upsample_mode == "nontrainable":
                up = nn.Upsample(scale_factor=2, mode="bilinear" if spatial_dims == 2 else "trilinear",
                                 align_corners=False)
            else:
                up = _CONVT[spatial_dims](c // 2, c // 2, kernel_size=2, stride=2)
            self.up_samples.append(nn.Sequential(conv(c, c // 2, 1, bias=False), up))

        self.conv_final = nn.Sequential(
            nn.GroupNorm(num_groups, f),
            nn.ReLU(inplace=True),
            dw_separable_conv(spatial_dims, f, num_classes, kernel_size=1, bias=True),
        )

    def encode(self, x: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """``(B, C_in, *S)`` -> bottleneck ``(B, f*2**(n-1), *S/2**(n-1))`` and the output of
        every encoder level ``[(B, f, *S), (B, 2f, *S/2), ...]`` (last = bottleneck)."""
        x = self.convInit(x)
        if self.dropout is not None:
            x = self.dropout(x)
        feats = []
        for down in self.down_layers:
            x = down(x)
            feats.append(x)
        return x, feats

    def decode(self, x: Tensor, feats: List[Tensor]) -> Tensor:
        """Bottleneck + encoder outputs -> logits ``(B, num_classes, *S)``."""
        skips = feats[::-1]
        for i, (up, layer) in enumerate(zip(self.up_samples, self.up_layers)):
            x = layer(up(x) + skips[i + 1])
        return self.conv_final(x)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, *S)`` -> logits ``(B, num_classes, *S)`` (padded/cropped internally)."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"LightMUNet expects (B, {self.in_channels}, <{self.spatial_dims} spatial dims>), "
                             f"got {tuple(x.shape)}")
        x, spatial = pad_to_multiple(x, self.size_divisor)
        x, feats = self.encode(x)
        return crop_to(self.decode(x, feats), spatial)


_OFFICIAL_CFG = dict(spatial_dims=2, init_filters=32, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), d_state=16)
_TEST_CFG = dict(spatial_dims=2, init_filters=8, blocks_down=(1, 1, 1), blocks_up=(1, 1), d_state=4)


@register_model(family="lightm_unet", paper="arXiv:2403.05246", spatial_dims=(2, 3), default_cfg=_OFFICIAL_CFG)
def lightm_unet(**kwargs) -> LightMUNet:
    """LightM-UNet, official configuration (5,011,749 parameters for 2D 1 -> 4; pass
    ``spatial_dims=3`` for 3D)."""
    return LightMUNet(**{**_OFFICIAL_CFG, **kwargs})


@register_model(family="lightm_unet", paper="arXiv:2403.05246", spatial_dims=(2, 3), default_cfg=_TEST_CFG)
def lightm_unet_test(**kwargs) -> LightMUNet:
    """Tiny LightM-UNet for tests (init_filters 8, blocks_down (1, 1, 1), blocks_up (1, 1), d_state 4)."""
    return LightMUNet(**{**_TEST_CFG, **kwargs})
