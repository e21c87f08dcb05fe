"""UltraLight VM-UNet: a 50K-parameter U-Net with parallel vision-Mamba (PVM) layers.

Paper:
    R. Wu, Y. Liu, P. Liang, Q. Chang, "UltraLight VM-UNet: Parallel Vision Mamba
    Significantly Reduces Parameters for Skin Lesion Segmentation", arXiv:2403.20035.

Official code (read at 05e1000 as stored by the search tool; the brief names d7648e4,
not copied): wurenkai/UltraLight-VM-UNet, ``models/UltraLight_VM_UNet.py`` (classes
``PVMLayer``, ``Channel_Att_Bridge``, ``Spatial_Att_Bridge``, ``SC_Att_Bridge``,
``UltraLight_VM_UNet``). ``Mamba`` is :class:`mambaseg.blocks.Mamba` (the mamba_ssm
Mamba-1 block, equal parameter layout).

Configuration followed (``create_model("ultralight_vm_unet", in_channels=3, num_classes=1)``
= ``UltraLight_VM_UNet(num_classes=1, input_channels=3, c_list=[8,16,24,32,48,64],
split_att='fc', bridge=True)``, 49,457 parameters): widths ``c_list`` c0..c5;
``encoder1..3`` are 3x3 convolutions (c_in->c0->c1->c2), ``encoder4..6`` PVM layers
(c2->c3->c4->c5); each of ``encoder1..5`` is followed by ``GroupNorm(4)`` (``ebn1..5``),
2x2 max pooling and GELU, giving the skips t1..t5 at strides 2..32; ``encoder6`` runs
at stride 32 (GELU, no norm, no pooling). ``scab`` (spatial then channel attention
bridge, ``split_att='fc'``) refines t1..t5. Decoder: ``decoder1..3`` PVM layers
(c5->c4->c3->c2), ``decoder4..5`` 3x3 convolutions (c2->c1->c0), each followed by
``GroupNorm(4)`` (``dbn1..5``), a 2x bilinear (align_corners) upsampling (not after
``decoder1``), GELU and the addition of the skip; ``final`` (1x1 conv) then a 2x
bilinear upsampling to full resolution. Module counts: encoder1 224, encoder2 1,168,
encoder3 3,480, encoder4 1,749, encoder5 2,945, encoder6 5,465, scab 16,614,
decoder1 6,609, decoder2 3,897, decoder3 2,153, decoder4 3,472, decoder5 1,160,
ebn1..5 16/32/48/64/96, dbn1..5 96/64/48/32/16, final 9.

PVM layer (official ``PVMLayer``): tokens ``(B, L, C)``, ``LayerNorm(C)``, split into
4 channel groups, the *same* ``Mamba(C/4)`` (shared parameters) applied to each group
plus ``skip_scale * group`` (one learnable scalar), concatenation, the *same*
``LayerNorm`` again, ``Linear(C, C_out)``. A float16 input is cast to float32 first
(and the output stays float32), as in the official code.

Initialisation as ``UltraLight_VM_UNet._init_weights`` applied to every submodule
(Mamba included): ``nn.Linear`` trunc-normal(std 0.02) with zero bias (this also
re-initialises Mamba's ``in_proj``/``x_proj``/``dt_proj``/``out_proj``, zeroing the
``dt_proj`` bias, as the official ``self.apply`` does), ``nn.Conv1d`` weight
normal(0, sqrt(2 / (k * out))), ``nn.Conv2d`` weight normal(0, sqrt(2 / fan_out))
with zero bias. Parameter names equal the official ones, so an official state dict loads.

Deliberate differences:
    * Logits only: the official ``forward`` applies a sigmoid (for any class count);
      this model always returns raw logits.
    * Any input size: H and W are padded (replicate) to the next multiple of 32 (the
      total stride: five 2x poolings) and the logits are cropped back; the official
      code needs multiples of 32.
    * ``d_state``, ``d_conv``, ``expand`` of the PVM Mamba are constructor arguments
      (official: fixed 16, 4, 2); no print at construction.
    * ``spatial_dims`` must be 2 (the model is 2D only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.init import trunc_normal_

from mambaseg.blocks import Mamba
from mambaseg.layers.padding import crop_to, pad_to_multiple
from mambaseg.models._registry import register_model

__all__ = [
    "ChannelAttBridge",
    "PVMLayer",
    "SCAttBridge",
    "SpatialAttBridge",
    "UltraLightVMUNet",
    "ultralight_init_weights",
]


class PVMLayer(nn.Module):
    """Parallel vision-Mamba layer (official ``PVMLayer``).

    ``LayerNorm(C)`` over the flattened tokens, split into 4 channel groups of ``C/4``,
    one shared ``Mamba(C/4)`` per group with a learnable scalar residual
    (``mamba(g) + skip_scale * g``), concatenation, the same ``LayerNorm`` again and
    ``Linear(C, C_out)``.

    Args:
        input_dim: Input channels ``C`` (a multiple of 4).
        output_dim: Output channels ``C_out``.
        d_state, d_conv, expand: Passed to the shared :class:`Mamba`.

    Shape:
        ``(B, C, *spatial)`` -> ``(B, C_out, *spatial)`` (float16 inputs give float32 outputs).
    """

    def __init__(self, input_dim: int, output_dim: int, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2) -> None:
        super().__init__()
        if input_dim % 4:
            raise ValueError(f"PVMLayer input_dim ({input_dim}) must be a multiple of 4")
        self.input_dim, self.output_dim = input_dim, output_dim
        self.norm = nn.LayerNorm(input_dim)
        self.mamba = Mamba(d_model=input_dim // 4, d_state=d_state, d_conv=d_conv, expand=expand)
        self.proj = nn.Linear(input_dim, output_dim)
        self.skip_scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 3 or x.shape[1] != self.input_dim:
            raise ValueError(f"PVMLayer(input_dim={self.input_dim}) expects (B, {self.input_dim}, *spatial), "
                             f"got {tuple(x.shape)}")
        if x.dtype == torch.float16:
            x = x.float()
        b, c = x.shape[:2]
        spatial = x.shape[2:]
        tokens = self.norm(x.reshape(b, c, -1).transpose(1, 2))  # (B, L, C)
        groups = [self.mamba(g) + self.skip_scale * g for g in torch.chunk(tokens, 4, dim=2)]
        out = self.proj(self.norm(torch.cat(groups, dim=2)))  # (B, L, C_out)
        return out.transpose(1, 2).reshape(b, self.output_dim, *spatial)


class ChannelAttBridge(nn.Module):
    """Channel attention bridge (official ``Channel_Att_Bridge``).

    Global-average-pools the five skips, concatenates them (``S = c0 + ... + c4``
    channels), mixes them with a 3-tap ``Conv1d(1, 1)`` over the channel axis, then one
    ``Linear(S, c_i)`` (``split_att='fc'``) or ``Conv1d(S, c_i, 1)`` per skip and a sigmoid.

    Shape: five ``(B, c_i, H_i, W_i)`` -> five attention maps of the same shapes.
    """

    def __init__(self, c_list: Sequence[int], split_att: str = "fc") -> None:
        super().__init__()
        if split_att not in ("fc", "conv"):
            raise ValueError(f"split_att must be 'fc' or 'conv', got {split_att!r}")
        s = sum(c_list[:5])
        self.split_att = split_att
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.get_all_att = nn.Conv1d(1, 1, kernel_size=3, padding=1, bias=False)
        for i in range(5):
            setattr(self, f"att{i + 1}",
                    nn.Linear(s, c_list[i]) if split_att == "fc" else nn.Conv1d(s, c_list[i], 1))
        self.sigmoid = nn.Sigmoid()

    def forward(self, *ts: Tensor) -> tuple[Tensor, ...]:
        att = torch.cat([self.avgpool(t) for t in ts], dim=1)  # (B, S, 1, 1)
        att = self.get_all_att(att.squeeze(-1).transpose(-1, -2))  # (B, 1, S)
        if self.split_att != "fc":
            att = att.transpose(-1, -2)  # (B, S, 1)
        outs = []
        for i, t in enumerate(ts):
            a = self.sigmoid(getattr(self, f"att{i + 1}")(att))  # fc: (B, 1, c_i); conv: (B, c_i, 1)
            if self.split_att == "fc":
                a = a.transpose(-1, -2)
            outs.append(a.unsqueeze(-1).expand_as(t))
        return tuple(outs)


class SpatialAttBridge(nn.Module):
    """Spatial attention bridge (official ``Spatial_Att_Bridge``): per skip, channel mean
    and max -> one shared ``Conv2d(2, 1, 7, padding=9, dilation=3)`` -> sigmoid.

    Shape: five ``(B, c_i, H_i, W_i)`` -> five ``(B, 1, H_i, W_i)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shared_conv2d = nn.Sequential(nn.Conv2d(2, 1, 7, stride=1, padding=9, dilation=3), nn.Sigmoid())

    def forward(self, *ts: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.shared_conv2d(torch.cat([t.mean(dim=1, keepdim=True), t.amax(dim=1, keepdim=True)], 1))
                     for t in ts)


class SCAttBridge(nn.Module):
    """Spatial-channel attention bridge (official ``SC_Att_Bridge``).

    With ``s_i = satt_i * t_i``: ``u_i = s_i + t_i`` and the output is
    ``catt_i(u) * u_i + s_i``.

    Args:
        c_list: Widths (the first five are the skip widths).
        split_att: ``'fc'`` or ``'conv'`` (see :class:`ChannelAttBridge`).

    Shape: five ``(B, c_i, H_i, W_i)`` -> the same five shapes.
    """

    def __init__(self, c_list: Sequence[int], split_att: str = "fc") -> None:
        super().__init__()
        self.catt = ChannelAttBridge(c_list, split_att=split_att)
        self.satt = SpatialAttBridge()

    def forward(self, *ts: Tensor) -> tuple[Tensor, ...]:
        s = [a * t for a, t in zip(self.satt(*ts), ts)]
        u = [si + ti for si, ti in zip(s, ts)]
        return tuple(a * ui + si for a, ui, si in zip(self.catt(*u), u, s))


def ultralight_init_weights(m: nn.Module) -> None:
    """The official ``_init_weights`` of UltraLight VM-UNet / H-vmunet (applied with ``model.apply``)."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.Conv1d):
        n = m.kernel_size[0] * m.out_channels
        nn.init.normal_(m.weight, 0, math.sqrt(2.0 / n))
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _conv3(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=1, padding=1))


def _up2(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class UltraLightVMUNet(nn.Module):
    """UltraLight VM-UNet (official ``UltraLight_VM_UNet``) for 2D segmentation.

    Args:
        in_channels: Input channels.
        num_classes: Output channels (logits; no sigmoid).
        spatial_dims: Must be 2.
        c_list: Six widths c0..c5 (c0..c4 multiples of 4 for ``GroupNorm(4)``;
            c2..c5 multiples of 4 for the PVM split).
        split_att: ``'fc'`` or ``'conv'`` channel-attention heads.
        bridge: Use the spatial-channel attention bridge on the skips.
        d_state, d_conv, expand: Mamba settings of every PVM layer.

    Shape:
        Input ``(B, in_channels, H, W)`` of any size, output logits ``(B, num_classes, H, W)``.
    """

    size_divisor = 32

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 2,
                 c_list: Sequence[int] = (8, 16, 24, 32, 48, 64), split_att: str = "fc", bridge: bool = True,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"UltraLightVMUNet is 2D only (spatial_dims=2), got spatial_dims={spatial_dims}")
        c = [int(v) for v in c_list]
        if len(c) != 6:
            raise ValueError(f"c_list must have 6 widths, got {c_list}")
        if any(v % 4 for v in c):
            raise ValueError(f"every width in c_list must be a multiple of 4, got {c_list}")
        self.in_channels, self.num_classes, self.bridge = in_channels, num_classes, bridge

        def pvm(a: int, b: int) -> nn.Sequential:
            return nn.Sequential(PVMLayer(a, b, d_state=d_state, d_conv=d_conv, expand=expand))

        self.encoder1 = _conv3(in_channels, c[0])
        self.encoder2 = _conv3(c[0], c[1])
        self.encoder3 = _conv3(c[1], c[2])
        self.encoder4 = pvm(c[2], c[3])
        self.encoder5 = pvm(c[3], c[4])
        self.encoder6 = pvm(c[4], c[5])
        if bridge:
            self.scab = SCAttBridge(c, split_att)
        self.decoder1 = pvm(c[5], c[4])
        self.decoder2 = pvm(c[4], c[3])
        self.decoder3 = pvm(c[3], c[2])
        self.decoder4 = _conv3(c[2], c[1])
        self.decoder5 = _conv3(c[1], c[0])
        _add_norms_and_head(self, c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> logits ``(B, num_classes, H, W)``."""
        return _ultralight_unet_forward(self, x)


def _add_norms_and_head(net: nn.Module, c: Sequence[int], num_classes: int) -> None:
    """The GroupNorms after encoder/decoder stages 1-5 (``ebn*``, ``dbn*``), the 1x1 head, the official init.

    Shared with H-vmunet, whose official code has the same modules under the same names.
    """
    for i in range(5):
        setattr(net, f"ebn{i + 1}", nn.GroupNorm(4, c[i]))
    for i in range(5):
        setattr(net, f"dbn{i + 1}", nn.GroupNorm(4, c[4 - i]))
    net.final = nn.Conv2d(c[0], num_classes, kernel_size=1)
    net.apply(ultralight_init_weights)


def _ultralight_unet_forward(net: nn.Module, x: Tensor) -> Tensor:
    """The official encoder/bridge/decoder data flow, shared with H-vmunet.

    ``x``: ``(B, C_in, H, W)``, any H, W (padded to a multiple of ``net.size_divisor`` and cropped back) -> logits
    ``(B, K, H, W)``.
    """
    if x.dim() != 4 or x.shape[1] != net.in_channels:
        raise ValueError(f"{type(net).__name__} expects (B, {net.in_channels}, H, W), got {tuple(x.shape)}")
    x, spatial = pad_to_multiple(x, net.size_divisor)
    skips = []
    out = x
    for i in range(1, 6):  # t_i: (B, c_{i-1}, H/2^i, W/2^i)
        out = F.gelu(F.max_pool2d(getattr(net, f"ebn{i}")(getattr(net, f"encoder{i}")(out)), 2, 2))
        skips.append(out)
    if net.bridge:
        skips = list(net.scab(*skips))
    out = F.gelu(net.encoder6(out))  # (B, c5, H/32, W/32)
    out = F.gelu(net.dbn1(net.decoder1(out))) + skips[4]  # (B, c4, H/32, W/32)
    for i in range(2, 6):  # (B, c_{5-i}, H/2^(6-i), W/2^(6-i))
        out = F.gelu(_up2(getattr(net, f"dbn{i}")(getattr(net, f"decoder{i}")(out)))) + skips[5 - i]
    return crop_to(_up2(net.final(out)), spatial)  # (B, K, H, W)


_ISIC_CFG = dict(c_list=(8, 16, 24, 32, 48, 64), split_att="fc", bridge=True, d_state=16, d_conv=4, expand=2)
_TEST_CFG = dict(c_list=(4, 8, 8, 8, 8, 8), split_att="fc", bridge=True, d_state=4, d_conv=4, expand=2)


@register_model(family="ultralight_vm_unet", paper="arXiv:2403.20035", spatial_dims=(2,), default_cfg=_ISIC_CFG)
def ultralight_vm_unet(**kwargs) -> UltraLightVMUNet:
    """UltraLight VM-UNet, official configuration (49,457 parameters for 3 -> 1 channels)."""
    return UltraLightVMUNet(**{**_ISIC_CFG, **kwargs})


@register_model(family="ultralight_vm_unet", paper="arXiv:2403.20035", spatial_dims=(2,), default_cfg=_TEST_CFG)
def ultralight_vm_unet_test(**kwargs) -> UltraLightVMUNet:
    """Tiny UltraLight VM-UNet for tests (c_list (4, 8, 8, 8, 8, 8), d_state 4)."""
    return UltraLightVMUNet(**{**_TEST_CFG, **kwargs})
