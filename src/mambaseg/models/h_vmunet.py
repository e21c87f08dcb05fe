"""H-vmunet: a U-Net with high-order 2D selective-scan (H-SS2D) blocks.

Paper:
    R. Wu, Y. Liu, P. Liang, Q. Chang, "H-vmunet: High-order Vision Mamba UNet for
    Medical Image Segmentation", arXiv:2403.13642.

Official code (read at 5c8dc57 as stored by the search tool; the brief names f255cb4,
not copied): wurenkai/H-vmunet, ``models/H_vmunet.py`` (classes ``H_SS2D``, ``Block``,
``Local_SS2D``, ``LayerNorm``, ``Channel_Att_Bridge``, ``Spatial_Att_Bridge``,
``SC_Att_Bridge``, ``H_vmunet``). Its ``models/vmamba.py`` ``SS2D`` is not stored; it is
:class:`mambaseg.blocks.SS2D` (equal parameter counts). The attention bridge and the
encoder/decoder data flow are those of :mod:`mambaseg.models.ultralight_vm_unet`
(identical code in both official repositories).

Configuration followed (``create_model("h_vmunet", in_channels=3, num_classes=1)`` =
``H_vmunet(num_classes=1, input_channels=3, c_list=[8,16,32,64,128,256], split_att='fc',
bridge=True, drop_path_rate=0.4)``, 8,972,623 parameters): ``encoder1``/``encoder2``
3x3 convolutions; ``encoder3..6`` = ``depths[i]`` H-VSS blocks of width c1..c4 with
H-SS2D orders 2, 3, 4, 5 followed by a 3x3 convolution to the next width;
``decoder1..4`` = H-VSS blocks of width c5, c4, c3, c2 (orders 5, 4, 3, 2) followed by
a 3x3 convolution to the previous width; ``decoder5`` a 3x3 convolution; GroupNorms
``ebn1..5``/``dbn1..5``, ``scab`` and ``final`` and the forward pass as in UltraLight
VM-UNet (five 2x max poolings, bilinear align_corners 2x upsamplings, additive skips).
Module counts: encoder1 224, encoder2 1,168, encoder3 54,040, encoder4 158,168,
encoder5 528,088, encoder6 1,564,696, scab 61,854, decoder1 4,641,840, decoder2 1,427,056,
decoder3 405,200, decoder4 128,128, decoder5 1,160, ebn1..5 16/32/64/128/256,
dbn1..5 256/128/64/32/16, final 9.

H-VSS block (official ``Block``): ``x + drop_path(gamma1 * H_SS2D(LN_cf(x)))``, then a
ConvNeXt-style MLP ``x + drop_path(gamma2 * Linear(4C, C)(GELU(Linear(C, 4C)(LN(x)))))``
(LayerNorms eps 1e-6, layer scales initialised to 1e-6). H-SS2D of order ``n`` (official
``H_SS2D``, gnconv-style): widths ``d_k = C / 2^(n-1-k)``, ``k = 0..n-1``; ``proj_in``
(1x1, C -> 2C) split into ``p`` (``d_0``) and ``q`` (``sum d_k``); ``q`` goes through
``dwconv`` = ``Local_SS2D`` (channels-first LN, half the channels a 3x3 depthwise conv,
the other half an SS2D, channels interleaved, LN) and is scaled by ``s = 1/3`` and split
into ``q_0..q_{n-1}``; ``x = ss2d_in(p * q_0)``, then ``x = ss2d_k(pws[k-1](x) * q_k)``
for ``k = 1..n-1`` (SS2D with d_state 16 at every order), ``proj_out`` (1x1, C -> C).
``Local_SS2D`` also owns ``complex_weight`` (``(sum d_k / 2, h, w, 2)``; h, w = 14, 8
for orders 2 and 3, 24, 13 for order 4, 12, 7 for order 5), a leftover of a global
filter that the official forward never uses: it is kept (so parameter counts and state
dict keys match) and receives no gradient.

Stochastic depth: ``linspace(0, drop_path_rate, sum(depths))``; encoder stage ``i``
uses the rates of its blocks, decoder stages reuse those of the mirrored encoder stage,
except ``decoder1`` whose blocks all use the first rate of encoder stage 4 (official
``dp_rates[6]``). Initialisation as ``H_vmunet._init_weights`` (that of UltraLight
VM-UNet) applied to every submodule, SS2D included. Parameter names equal the official
ones (SS2D internals aside, see :mod:`mambaseg.blocks.ss2d`).

Deliberate differences:
    * Logits only: the official ``forward`` applies a sigmoid; this model always
      returns raw logits.
    * Any input size: H and W are padded (replicate) to the next multiple of 32 and the
      logits are cropped back; the official code needs multiples of 32.
    * ``d_state`` (official: fixed 16) and ``scan`` (default ``"cross"`` = VMamba's) are
      passed to every SS2D; ``depths`` offsets the drop-path rates by the cumulative
      depths (the official indices 0, 2, 4, 6 assume depths of 2). No prints, no
      ``DWCONV_IMPL`` switch, no ``pretrained``/``use_checkpoint`` arguments, and the
      H-SS2D orders/scales are fixed (2, 3, 4, 5; 1/3).
    * ``spatial_dims`` must be 2 (the model is 2D only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.init import trunc_normal_

from mambaseg.blocks import SS2D
from mambaseg.blocks.ss2d import ScanLike
from mambaseg.layers import DropPath, stage_drop_path_rates
from mambaseg.models._registry import register_model
from mambaseg.models.ultralight_vm_unet import (
    SCAttBridge,
    _add_norms_and_head,
    _ultralight_unet_forward,
)

__all__ = ["HSS2D", "HVMUNet", "HVSSBlock", "LayerNormChannelsFirst", "LocalSS2D"]

# (h, w) of the unused ``complex_weight`` of Local_SS2D per H-SS2D order (official partials).
_COMPLEX_HW = {2: (14, 8), 3: (14, 8), 4: (24, 13), 5: (12, 7)}


class LayerNormChannelsFirst(nn.Module):
    """LayerNorm over dim 1 of ``(B, C, H, W)`` (official ``LayerNorm(..., 'channels_first')``):
    biased variance, ``eps`` inside the square root.

    Shape: ``(B, C, H, W)`` -> same.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def _ss2d_cf(ss2d: nn.Module, x: Tensor) -> Tensor:
    """Apply a channel-last SS2D to ``(B, C, H, W)``."""
    return ss2d(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class LocalSS2D(nn.Module):
    """Local-global mixer used as the H-SS2D ``dwconv`` (official ``Local_SS2D``).

    Channels-first LN, split in halves: 3x3 depthwise conv (no bias) on the first, SS2D on
    the second; the results are interleaved channel by channel (``[a_0, b_0, a_1, b_1, ...]``)
    and normalised again. ``complex_weight`` is unused (kept for parameter parity).

    Args:
        dim: Channels (even).
        h, w: Shape of the unused ``complex_weight``.
        d_state, scan: SS2D settings.

    Shape: ``(B, dim, H, W)`` -> same.
    """

    def __init__(self, dim: int, h: int = 14, w: int = 8, d_state: int = 16, scan: ScanLike = "cross") -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"LocalSS2D dim ({dim}) must be even")
        half = dim // 2
        self.dw = nn.Conv2d(half, half, kernel_size=3, padding=1, bias=False, groups=half)
        self.complex_weight = nn.Parameter(torch.empty(half, h, w, 2))
        trunc_normal_(self.complex_weight, std=0.02)
        self.pre_norm = LayerNormChannelsFirst(dim, eps=1e-6)
        self.post_norm = LayerNormChannelsFirst(dim, eps=1e-6)
        self.SS2D = SS2D(d_model=half, d_state=d_state, dropout=0.0, scan=scan)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pre_norm(x)
        x1, x2 = torch.chunk(x, 2, dim=1)
        x1 = self.dw(x1)
        x2 = _ss2d_cf(self.SS2D, x2)
        b, c, h, w = x2.shape
        x = torch.stack([x1, x2], dim=2).reshape(b, 2 * c, h, w)  # interleave channels
        return self.post_norm(x)


class HSS2D(nn.Module):
    """High-order 2D selective scan (official ``H_SS2D``), see the module docstring.

    Args:
        dim: Channels ``C`` (a multiple of ``2**order`` so that the Local-SS2D halves are whole).
        order: Interaction order ``n`` (>= 2).
        s: Scale of the ``dwconv`` output.
        h, w: Shape of the unused ``complex_weight`` of ``dwconv``.
        d_state, scan: SS2D settings.

    Shape: ``(B, C, H, W)`` -> same.
    """

    def __init__(self, dim: int, order: int = 5, s: float = 1.0 / 3, h: int = 14, w: int = 8,
                 d_state: int = 16, scan: ScanLike = "cross") -> None:
        super().__init__()
        if order < 2 or order > 5:
            raise ValueError(f"HSS2D order must be in 2..5, got {order}")
        if dim % 2 ** order:
            raise ValueError(f"HSS2D dim ({dim}) must be a multiple of 2**order ({2 ** order})")
        self.order = order
        self.dims = [dim // 2 ** i for i in range(order)][::-1]  # d_0 < ... < d_{n-1} = C
        self.scale = s
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        self.dwconv = LocalSS2D(sum(self.dims), h=h, w=w, d_state=d_state, scan=scan)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.pws = nn.ModuleList(nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(order - 1))
        for k in range(1, order):
            setattr(self, f"ss2d_{k}", SS2D(d_model=self.dims[k], d_state=d_state, dropout=0.0, scan=scan))
        self.ss2d_in = SS2D(d_model=self.dims[0], d_state=d_state, dropout=0.0, scan=scan)

    def forward(self, x: Tensor) -> Tensor:
        pwa, abc = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        dw_list = torch.split(self.dwconv(abc) * self.scale, self.dims, dim=1)
        x = _ss2d_cf(self.ss2d_in, pwa * dw_list[0])
        for k in range(1, self.order):
            x = _ss2d_cf(getattr(self, f"ss2d_{k}"), self.pws[k - 1](x) * dw_list[k])
        return self.proj_out(x)


class HVSSBlock(nn.Module):
    """H-VSS block (official ``Block``): H-SS2D token mixer and a 4x MLP, each with layer
    scale, stochastic depth and a residual connection.

    Args:
        dim: Channels ``C``.
        order: H-SS2D order.
        drop_path: Stochastic-depth rate (shared by both branches).
        layer_scale_init_value: Initial ``gamma1``/``gamma2`` (``<= 0``: no layer scale).
        d_state, scan: SS2D settings.

    Shape: ``(B, C, H, W)`` -> same.
    """

    def __init__(self, dim: int, order: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6,
                 d_state: int = 16, scan: ScanLike = "cross") -> None:
        super().__init__()
        h, w = _COMPLEX_HW[order]
        self.norm1 = LayerNormChannelsFirst(dim, eps=1e-6)
        self.H_SS2D = HSS2D(dim, order=order, s=1.0 / 3, h=h, w=w, d_state=d_state, scan=scan)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        if layer_scale_init_value > 0:
            self.gamma1 = nn.Parameter(layer_scale_init_value * torch.ones(dim))
            self.gamma2 = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        else:
            self.gamma1 = self.gamma2 = None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.H_SS2D(self.norm1(x))
        if self.gamma1 is not None:
            y = self.gamma1.view(-1, 1, 1) * y
        x = x + self.drop_path(y)
        y = self.pwconv2(self.act(self.pwconv1(self.norm2(x.permute(0, 2, 3, 1)))))  # (B, H, W, C)
        if self.gamma2 is not None:
            y = self.gamma2 * y
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class HVMUNet(nn.Module):
    """H-vmunet (official ``H_vmunet``) for 2D segmentation.

    Args:
        in_channels: Input channels.
        num_classes: Output channels (logits; no sigmoid).
        spatial_dims: Must be 2.
        c_list: Six widths c0..c5 (multiples of 4 for ``GroupNorm(4)``; c1, c2, c3, c4, c5
            multiples of 4, 8, 16, 32, 32 for the H-SS2D orders 2, 3, 4, 5, 5).
        depths: H-VSS blocks of the four block stages (encoder3..6; decoders mirrored).
        drop_path_rate: Maximum stochastic-depth rate.
        layer_scale_init_value: Initial layer scales.
        split_att: ``'fc'`` or ``'conv'`` channel-attention heads.
        bridge: Use the spatial-channel attention bridge on the skips.
        d_state, scan: Settings of every SS2D.

    Shape:
        Input ``(B, in_channels, H, W)`` of any size, output logits ``(B, num_classes, H, W)``.
    """

    #: Parameters that exist only for parameter and checkpoint parity with the official code and receive no
    #: gradient by design (checked by the model contract test).
    unused_parameter_suffixes = ("complex_weight",)

    size_divisor = 32
    orders = (2, 3, 4, 5)

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 2,
                 c_list: Sequence[int] = (8, 16, 32, 64, 128, 256), depths: Sequence[int] = (2, 2, 2, 2),
                 drop_path_rate: float = 0.0, layer_scale_init_value: float = 1e-6, split_att: str = "fc",
                 bridge: bool = True, d_state: int = 16, scan: ScanLike = "cross") -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"HVMUNet is 2D only (spatial_dims=2), got spatial_dims={spatial_dims}")
        c = [int(v) for v in c_list]
        depths = [int(d) for d in depths]
        if len(c) != 6 or len(depths) != 4 or min(depths) < 1:
            raise ValueError(f"c_list needs 6 widths and depths 4 positive entries, got {c_list}, {depths}")
        need = {1: 4, 2: 8, 3: 16, 4: 32, 5: 32}
        if any(v % 4 for v in c) or any(c[i] % m for i, m in need.items()):
            raise ValueError(f"c_list {c_list}: widths must be multiples of 4 and c1..c5 of 4, 8, 16, 32, 32")
        self.in_channels, self.num_classes, self.bridge = in_channels, num_classes, bridge
        rates = stage_drop_path_rates(drop_path_rate, depths)

        def stage(dim: int, out: int, i: int, rates: Sequence[float]) -> nn.Sequential:
            blocks = [HVSSBlock(dim, self.orders[i], drop_path=rates[j], layer_scale_init_value=layer_scale_init_value,
                                d_state=d_state, scan=scan) for j in range(depths[i])]
            return nn.Sequential(*blocks, nn.Conv2d(dim, out, 3, stride=1, padding=1))

        self.encoder1 = nn.Sequential(nn.Conv2d(in_channels, c[0], 3, stride=1, padding=1))
        self.encoder2 = nn.Sequential(nn.Conv2d(c[0], c[1], 3, stride=1, padding=1))
        for i in range(4):  # encoder3..6: c_{i+1} -> c_{i+2}
            setattr(self, f"encoder{i + 3}",
                    stage(c[i + 1], c[i + 2], i, rates[i]))
        if bridge:
            self.scab = SCAttBridge(c, split_att)
        # decoder1..4: c_{5-k} -> c_{4-k}, orders 5, 4, 3, 2; decoder1 uses the first rate of stage 3 for all blocks
        self.decoder1 = stage(c[5], c[4], 3, [rates[3][0]] * depths[3])
        for k in range(1, 4):
            i = 3 - k
            setattr(self, f"decoder{k + 1}", stage(c[5 - k], c[4 - k], i, rates[i]))
        self.decoder5 = nn.Sequential(nn.Conv2d(c[1], c[0], 3, stride=1, padding=1))
        _add_norms_and_head(self, c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> logits ``(B, num_classes, H, W)``."""
        return _ultralight_unet_forward(self, x)


_ISIC_CFG = dict(c_list=(8, 16, 32, 64, 128, 256), depths=(2, 2, 2, 2), drop_path_rate=0.4,
                 layer_scale_init_value=1e-6, split_att="fc", bridge=True, d_state=16, scan="cross")
_TEST_CFG = dict(c_list=(4, 8, 8, 16, 32, 32), depths=(1, 1, 1, 1), drop_path_rate=0.1,
                 layer_scale_init_value=1e-6, split_att="fc", bridge=True, d_state=4, scan="cross")


@register_model(family="h_vmunet", paper="arXiv:2403.13642", spatial_dims=(2,), default_cfg=_ISIC_CFG)
def h_vmunet(**kwargs) -> HVMUNet:
    """H-vmunet, official configuration (8,972,623 parameters for 3 -> 1 channels)."""
    return HVMUNet(**{**_ISIC_CFG, **kwargs})


@register_model(family="h_vmunet", paper="arXiv:2403.13642", spatial_dims=(2,), default_cfg=_TEST_CFG)
def h_vmunet_test(**kwargs) -> HVMUNet:
    """Tiny H-vmunet for tests (c_list (4, 8, 8, 16, 32, 32), depths (1, 1, 1, 1), d_state 4)."""
    return HVMUNet(**{**_TEST_CFG, **kwargs})
