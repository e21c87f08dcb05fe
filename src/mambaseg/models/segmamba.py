"""SegMamba: a 3D Mamba U-Net with tri-oriented Mamba (ToM) and gated spatial convolution (GSC).

Paper:
    Z. Xing, T. Ye, Y. Yang, G. Liu, L. Zhu, "SegMamba: Long-range Sequential Modeling Mamba for 3D
    Medical Image Segmentation", arXiv:2401.13560.

Official code (read, not copied): ge-xing/SegMamba, ``model_segmamba/segmamba.py`` (classes ``SegMamba``,
``MambaEncoder``, ``MambaLayer``, ``GSC``, ``MlpChannel``; read at 1039e37, the version with ``gscs`` whose
counts match ``reference/official_params.md``) and its patched mamba, ``mamba/mamba_ssm/modules/mamba_simple.py``
(class ``Mamba`` with ``bimamba_type="v3"``, fused path ``mamba_inner_fn_no_out_proj``).

Configuration followed (``create_model("segmamba", in_channels=4, num_classes=4)``, the BraTS 2023 setting):
``SegMamba(in_chans=4, out_chans=4, depths=[2, 2, 2, 2], feat_size=[48, 96, 192, 384], hidden_size=768)`` —
67,416,196 parameters = vit 15,718,080 (downsample_layers 840,720: stem Conv3d(k7, s2, p3) then
[InstanceNorm3d, Conv3d(k = s = 2)] x3; gscs 10,969,920; stages 3,121,920: LayerNorm + v3 Mamba per layer,
v3 Mamba 31,392 / 93,888 / 312,192 / 1,122,048 for widths 48 / 96 / 192 / 384; mlps 785,520) + encoder1..5
(MONAI ``UnetrBasicBlock``, ``res_block=True``, instance norm) + decoder5..2 (MONAI ``UnetrUpBlock``) +
decoder1 (``UnetrBasicBlock``) + out (MONAI ``UnetOutBlock``, 1x1 conv).

What follows the official code:
    * Tri-oriented Mamba (:class:`TriOrientedMamba`): one shared ``in_proj`` (no bias) gives ``x, z``; three
      directions, each with its own causal depthwise ``conv1d`` + SiLU, ``x_proj``, ``dt_proj``, ``A_log``
      and ``D`` (suffixes none / ``_b`` / ``_s``, the official parameter names): forward tokens; the flipped
      sequence (output flipped back); the inter-slice order ``stack(xz.chunk(nslices, -1), -1).flatten(-2)``
      (position ``p`` of chunk ``s`` goes to ``p * nslices + s``; output mapped back by the inverse). The
      gate ``silu(z)`` is applied per direction inside the scan (``mamba_inner_fn_no_out_proj``), the three
      outputs are summed and one ``out_proj`` (no bias) follows. ``nslices`` per stage is 64 / 32 / 16 / 8.
    * Initialisation as the patched file: only ``dt_proj`` gets mamba's special init (uniform weight,
      inverse-softplus bias); ``dt_proj_b`` and ``dt_proj_s`` keep PyTorch's default ``nn.Linear`` init;
      all three ``A_log`` are S4D-real ``log(1..N)``, all ``D`` ones.
    * Mamba layer = ``x + ToM(LayerNorm(tokens))`` (row-major ``(D, H, W)`` tokens). GSC: ``relu(in(conv3))``
      twice on one branch, ``relu(in(conv1x1))`` on the other, sum, ``relu(in(conv1x1))``, plus the input.
      Encoder stage ``i``: downsample, GSC, Mamba layers, then InstanceNorm3d + MlpChannel (1x1 convs C -> 2C
      -> C, GELU) for the skip. InstanceNorm3d has no affine parameters anywhere in the encoder.
    * The decoder uses MONAI's own ``UnetrBasicBlock`` / ``UnetrUpBlock`` / ``UnetOutBlock`` (MONAI is a
      dependency; imported when the model is built), as the official code does. Module and parameter names
      equal the official ones, so official ``state_dict``s load unchanged.

Deliberate differences:
    * Any input size. The official network needs every spatial size divisible by 16 (the decoder
      concatenates at strides 8, 4, 2, 1) and the token count of encoder stage ``i`` divisible by
      ``num_slices[i]`` (``torch.chunk`` + ``stack`` fail otherwise); for the official slices this means
      ``prod(size / 16) % 8 == 0``, e.g. 32^3, 64^3, 128^3, but not 16^3 or 80^3. Other inputs are padded at
      the end of each axis (zeros by default, ``pad_mode``) to the smallest accepted size
      (:func:`segmamba_padded_size`) and the logits are cropped back. Accepted sizes run unpadded, as
      officially.
    * ``num_slices=None`` uses the actual depth ``D`` of each stage's feature map as ``nslices`` (the
      official inter-slice order at the 128^3 training size, where ``num_slices[i]`` equals ``D``); then only
      the divisible-by-16 rule remains.
    * The three directions run as one grouped :func:`mambaseg.ops.selective_scan` call (B/C groups, one
      per direction), which computes exactly the three separate scans of the official fused path. The
      official non-fused path (taken without ``causal_conv1d``/CUDA) silently runs the forward direction
      only; we always compute all three.
    * ``in_channels`` / ``num_classes`` name ``in_chans`` / ``out_chans``; the unused official arguments
      (``drop_path_rate``, ``layer_scale_init_value``, ``conv_block``) are not offered; ``norm_name`` and
      ``res_block`` are fixed to the official "instance" / True; the output block reads ``feat_size[0]``
      channels (officially a hard-coded 48, equal for the official configuration); ``d_state``,
      ``d_conv``, ``expand`` and ``backend`` are arguments. ``spatial_dims`` must be 3.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mambaseg.blocks.mamba import a_log_init, init_dt_proj
from mambaseg.layers.layout import copy_in_slabs_, plain_layout_ops
from mambaseg.layers.padding import crop_to, pad_to_multiple
from mambaseg.models._registry import register_model
from mambaseg.ops import selective_scan

__all__ = ["SegMamba", "TriOrientedMamba", "SegMambaLayer", "GSC", "MlpChannel", "SegMambaEncoder",
           "segmamba_padded_size", "to_inter_slice", "from_inter_slice", "tri_orient", "tri_merge"]

_SUFFIXES = ("", "_b", "_s")  # forward, backward (flipped), inter-slice: the official parameter suffixes


def to_inter_slice(seq: Tensor, nslices: int) -> Tensor:
    """Inter-slice token order: ``(..., L) -> (..., L)``, position ``p`` of chunk ``s`` moves to ``p * nslices + s``.

    The ``nslices`` chunks of length ``L / nslices`` are interleaved (SegMamba's
    ``stack(seq.chunk(nslices, -1), -1).flatten(-2)``).
    """
    *lead, length = seq.shape
    return seq.reshape(*lead, nslices, length // nslices).transpose(-1, -2).reshape(*lead, length)


def from_inter_slice(seq: Tensor, nslices: int) -> Tensor:
    """Inverse of :func:`to_inter_slice`: ``(..., L) -> (..., L)``."""
    *lead, length = seq.shape
    return seq.reshape(*lead, length // nslices, nslices).transpose(-1, -2).reshape(*lead, length)


def tri_orient(xz: Tensor, nslices: int) -> Tensor:
    """SegMamba's three token orders, channels first: ``(B, L, C)`` -> ``(B, 3, C, L)``.

    Direction 0 is the token order, 1 the reversed order, 2 :func:`to_inter_slice`; equal to
    ``stack((t, t.flip(-1), to_inter_slice(t, nslices)), 1)`` with ``t = xz.transpose(1, 2)``, built with
    slab-wise copies (:func:`mambaseg.layers.copy_in_slabs_`). Its adjoint is :func:`tri_merge`.
    """
    b, length, c = xz.shape
    out = xz.new_empty(b, 3, c, length)
    copy_in_slabs_(out[:, 0], xz.transpose(1, 2), dim=2)
    out[:, 1].copy_(out[:, 0].flip(-1))
    inter = out[:, 2].view(b, c, length // nslices, nslices)
    copy_in_slabs_(inter, out[:, 0].view(b, c, nslices, length // nslices).transpose(-1, -2), dim=1)
    return out


def tri_merge(y: Tensor, nslices: int) -> Tensor:
    """Sum of the three directions' outputs back in token order, channels last: ``(B, 3, C, L)`` -> ``(B, L, C)``.

    Equal to ``(y[:, 0] + y[:, 1].flip(-1) + from_inter_slice(y[:, 2], nslices)).transpose(1, 2)`` (same
    summation order), built with cache-sized copies; the adjoint of :func:`tri_orient`.
    """
    y = y.contiguous()
    b, _, c, length = y.shape
    acc = y[:, 0] + y[:, 1].flip(-1)
    inter = torch.empty_like(acc)
    copy_in_slabs_(inter.view(b, c, nslices, length // nslices),
                    y[:, 2].view(b, c, length // nslices, nslices).transpose(-1, -2), dim=1)
    acc += inter
    out = y.new_empty(b, length, c)
    copy_in_slabs_(out.transpose(1, 2), acc, dim=2)
    return out


class _TriOrder(torch.autograd.Function):
    """:func:`tri_orient` (``merge=False``) or :func:`tri_merge` (``merge=True``), each with the other as its
    backward (autograd's own backward of the view copies would take the slow strided path)."""

    @staticmethod
    def forward(ctx, x: Tensor, nslices: int, merge: bool) -> Tensor:
        ctx.nslices, ctx.merge = nslices, merge
        return tri_merge(x, nslices) if merge else tri_orient(x, nslices)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (tri_orient if ctx.merge else tri_merge)(grad, ctx.nslices), None, None


def _tri_order(x: Tensor, nslices: int, merge: bool) -> Tensor:
    """:func:`tri_orient` / :func:`tri_merge` with their fast backward; their plain view definitions while
    tracing, exporting or compiling (:func:`mambaseg.layers.layout.plain_layout_ops`)."""
    if not plain_layout_ops():
        return _TriOrder.apply(x, nslices, merge)
    if merge:
        return (x[:, 0] + x[:, 1].flip(-1) + from_inter_slice(x[:, 2], nslices)).transpose(1, 2)
    t = x.transpose(1, 2)
    return torch.stack((t, t.flip(-1), to_inter_slice(t, nslices)), dim=1)


class TriOrientedMamba(nn.Module):
    """SegMamba's tri-oriented Mamba mixer (the patched mamba ``Mamba`` with ``bimamba_type="v3"``).

    Args:
        d_model: Token dimension ``C``.
        nslices: Default number of slices of the inter-slice direction (``L`` must be divisible by it);
            ``forward`` may override it per call.
        d_state: SSM state size ``N``.
        d_conv: Causal depthwise convolution width.
        expand: ``d_inner = expand * d_model``.
        dt_rank: Rank of the ``dt`` projections; ``"auto"`` = ``ceil(d_model / 16)``.
        conv_bias: Bias in the three depthwise convolutions.
        bias: Bias in ``in_proj`` / ``out_proj``.
        backend: Selective-scan backend for :func:`mambaseg.ops.selective_scan`.

    Shape:
        ``(B, L, C)`` -> ``(B, L, C)``.
    """

    ssm_mixer = True  # what ablation="no-mamba" replaces (mambaseg.models.ablation)

    def __init__(self, d_model: int, nslices: int = 64, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", conv_bias: bool = True, bias: bool = False,
                 backend: str = "auto") -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv, self.nslices = d_model, d_state, d_conv, nslices
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.backend = backend
        di = self.d_inner
        self.in_proj = nn.Linear(d_model, 2 * di, bias=bias)
        for k, sfx in enumerate(_SUFFIXES):
            self.add_module("conv1d" + sfx, nn.Conv1d(di, di, d_conv, groups=di, padding=d_conv - 1, bias=conv_bias))
            self.add_module("x_proj" + sfx, nn.Linear(di, self.dt_rank + 2 * d_state, bias=False))
            self.add_module("dt_proj" + sfx, nn.Linear(self.dt_rank, di, bias=True))
            if k == 0:  # official: only the forward direction gets mamba's dt initialisation
                init_dt_proj(self.dt_proj, self.dt_rank)
            a_name = "A_log" if k == 0 else f"A{sfx}_log"
            setattr(self, a_name, nn.Parameter(a_log_init(d_state, di)))
            setattr(self, "D" + sfx, nn.Parameter(torch.ones(di)))
            getattr(self, a_name)._no_weight_decay = True
            getattr(self, "D" + sfx)._no_weight_decay = True
        self.out_proj = nn.Linear(di, d_model, bias=bias)

    def direction_parameters(self, k: int) -> dict:
        """Parameters of direction ``k`` (0 forward, 1 backward, 2 inter-slice) under suffix-free names."""
        sfx = _SUFFIXES[k]
        return {"conv1d": getattr(self, "conv1d" + sfx), "x_proj": getattr(self, "x_proj" + sfx),
                "dt_proj": getattr(self, "dt_proj" + sfx), "A_log": getattr(self, "A_log" if k == 0 else f"A{sfx}_log"),
                "D": getattr(self, "D" + sfx)}

    def forward(self, hidden_states: Tensor, nslices: Optional[int] = None) -> Tensor:
        """Apply the mixer.

        Args:
            hidden_states: ``(B, L, C)`` tokens.
            nslices: Slices of the inter-slice direction (default ``self.nslices``); must divide ``L``.

        Returns:
            ``(B, L, C)``.
        """
        nslices = self.nslices if nslices is None else int(nslices)
        b, length, _ = hidden_states.shape
        if nslices < 1 or length % nslices:
            raise ValueError(f"TriOrientedMamba: the token count L={length} must be divisible by nslices={nslices} "
                             "(the inter-slice direction splits the sequence into nslices equal chunks)")
        di, n, r, k = self.d_inner, self.d_state, self.dt_rank, len(_SUFFIXES)
        xz = _tri_order(self.in_proj(hidden_states), nslices, merge=False)  # (B, L, 2 di) -> (B, 3, 2 di, L)
        x, z = xz.chunk(2, dim=2)  # (B, 3, di, L) each
        params = [self.direction_parameters(j) for j in range(k)]
        conv_w = torch.cat([p["conv1d"].weight for p in params])  # (3 di, 1, d_conv)
        conv_b = torch.cat([p["conv1d"].bias for p in params]) if params[0]["conv1d"].bias is not None else None
        x = F.silu(F.conv1d(x.reshape(b, k * di, length), conv_w, conv_b, padding=self.d_conv - 1,
                            groups=k * di)[..., :length])  # (B, 3 di, L), causal
        x_proj_w = torch.stack([p["x_proj"].weight for p in params])  # (3, R + 2N, di)
        x_dbl = torch.einsum("bkdl,ked->bkel", x.view(b, k, di, length), x_proj_w)  # (B, 3, R + 2N, L)
        dt, bmat, cmat = torch.split(x_dbl, [r, n, n], dim=2)
        dt_w = torch.stack([p["dt_proj"].weight for p in params])  # (3, di, R)
        delta = torch.einsum("bkrl,kdr->bkdl", dt, dt_w).reshape(b, k * di, length)
        a = -torch.exp(torch.cat([p["A_log"] for p in params]).float())  # (3 di, N)
        d_skip = torch.cat([p["D"] for p in params]).float()
        delta_bias = torch.cat([p["dt_proj"].bias for p in params]).float()
        y = selective_scan(x, delta, a, bmat.contiguous(), cmat.contiguous(), d_skip, z=z.reshape(b, k * di, length),
                           delta_bias=delta_bias, delta_softplus=True, backend=self.backend)  # groups = directions
        y = y.view(b, k, di, length)
        return self.out_proj(_tri_order(y, nslices, merge=True))  # (B, L, di) -> (B, L, C)


class SegMambaLayer(nn.Module):
    """SegMamba's ``MambaLayer``: ``x + ToM(LayerNorm(tokens))`` over the row-major spatial tokens.

    Args:
        dim: Channels ``C``.
        num_slices: ``nslices`` of the inter-slice direction; ``None`` = the map's depth ``D`` at each call.
        d_state, d_conv, expand, backend: Passed to :class:`TriOrientedMamba`.

    Shape:
        ``(B, C, D, H, W)`` -> same.
    """

    def __init__(self, dim: int, num_slices: Optional[int] = 64, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, backend: str = "auto") -> None:
        super().__init__()
        self.dim, self.num_slices = dim, num_slices
        self.norm = nn.LayerNorm(dim)
        self.mamba = TriOrientedMamba(dim, num_slices or 1, d_state, d_conv, expand, backend=backend)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[1] != self.dim:
            raise ValueError(f"SegMambaLayer(dim={self.dim}) expects (B, {self.dim}, D, H, W), got {tuple(x.shape)}")
        b, c = x.shape[:2]
        tokens = x.reshape(b, c, -1).transpose(1, 2)  # (B, L, C)
        out = self.mamba(self.norm(tokens), nslices=self.num_slices or x.shape[2])
        return x + out.transpose(1, 2).reshape(x.shape)


class GSC(nn.Module):
    """Gated spatial convolution (official ``GSC``): two conv paths summed, a 1x1 conv, plus the input.

    ``relu(in4(proj4(relu(in2(proj2(relu(in(proj(x)))))) + relu(in3(proj3(x)))))) + x`` with 3x3x3 convs
    ``proj``/``proj2`` and 1x1x1 convs ``proj3``/``proj4`` (all with bias), InstanceNorm3d without affine.

    Shape: ``(B, C, D, H, W)`` -> same.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj, self.norm = nn.Conv3d(channels, channels, 3, 1, 1), nn.InstanceNorm3d(channels)
        self.proj2, self.norm2 = nn.Conv3d(channels, channels, 3, 1, 1), nn.InstanceNorm3d(channels)
        self.proj3, self.norm3 = nn.Conv3d(channels, channels, 1, 1, 0), nn.InstanceNorm3d(channels)
        self.proj4, self.norm4 = nn.Conv3d(channels, channels, 1, 1, 0), nn.InstanceNorm3d(channels)

    def forward(self, x: Tensor) -> Tensor:
        x1 = F.relu(self.norm2(self.proj2(F.relu(self.norm(self.proj(x))))))
        x2 = F.relu(self.norm3(self.proj3(x)))
        return F.relu(self.norm4(self.proj4(x1 + x2))) + x


class MlpChannel(nn.Module):
    """Channel MLP with 1x1x1 convs (official ``MlpChannel``): ``fc2(gelu(fc1(x)))``, ``C -> hidden -> C``."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Conv3d(channels, hidden, 1), nn.GELU(), nn.Conv3d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SegMambaEncoder(nn.Module):
    """SegMamba's Mamba encoder (official ``MambaEncoder``, stored as ``vit``).

    Args:
        in_channels: Input channels.
        depths: Mamba layers per stage.
        dims: Stage widths.
        num_slices: ``nslices`` per stage (official 64 / 32 / 16 / 8), or ``None`` (each map's depth).
        d_state, d_conv, expand, backend: Mamba settings.

    Shape:
        ``(B, C_in, D, H, W)`` -> tuple of stage outputs ``(B, dims[i], D / 2^(i+1), ...)``.
    """

    def __init__(self, in_channels: int, depths: Sequence[int] = (2, 2, 2, 2),
                 dims: Sequence[int] = (48, 96, 192, 384), num_slices: Optional[Sequence[int]] = (64, 32, 16, 8),
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, backend: str = "auto") -> None:
        super().__init__()
        n = len(dims)
        slices = [None] * n if num_slices is None else [int(s) for s in num_slices]
        if len(depths) != n or len(slices) != n:
            raise ValueError(f"depths, dims and num_slices need one entry per stage, got {tuple(depths)}, "
                             f"{tuple(dims)} and {num_slices}")
        self.downsample_layers = nn.ModuleList([nn.Sequential(nn.Conv3d(in_channels, dims[0], 7, stride=2, padding=3))])
        for i in range(n - 1):
            self.downsample_layers.append(nn.Sequential(nn.InstanceNorm3d(dims[i]),
                                                        nn.Conv3d(dims[i], dims[i + 1], 2, stride=2)))
        self.stages = nn.ModuleList(
            nn.Sequential(*[SegMambaLayer(dims[i], slices[i], d_state, d_conv, expand, backend)
                            for _ in range(depths[i])]) for i in range(n))
        self.gscs = nn.ModuleList(GSC(d) for d in dims)
        for i, d in enumerate(dims):
            self.add_module(f"norm{i}", nn.InstanceNorm3d(d))
        self.mlps = nn.ModuleList(MlpChannel(d, 2 * d) for d in dims)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        outs = []
        for i, (down, gsc, stage, mlp) in enumerate(zip(self.downsample_layers, self.gscs, self.stages, self.mlps)):
            x = stage(gsc(down(x)))
            outs.append(mlp(getattr(self, f"norm{i}")(x)))
        return tuple(outs)


@functools.lru_cache(maxsize=256)
def segmamba_padded_size(spatial: tuple[int, ...], num_slices: Optional[tuple[int, ...]] = (64, 32, 16, 8),
                         max_extra_steps: int = 7) -> tuple[int, ...]:
    """Smallest size ``>= spatial`` (per axis) that official SegMamba accepts.

    Rule: every axis divisible by ``2**n`` (``n = len(num_slices)`` stages; 16 officially) and the token count
    ``prod(size / 2**(i+1))`` of stage ``i`` divisible by ``num_slices[i]``. Among sizes that add up to
    ``max_extra_steps`` extra steps of ``2**n`` per axis, the one with the fewest voxels wins (ties: the smallest
    largest axis, then the first found).

    Raises:
        ValueError: No such size within the search range (names the rule).
    """
    n = 4 if num_slices is None else len(num_slices)
    step = 2 ** n
    base = [math.ceil(s / step) * step for s in spatial]
    best = None
    for extra in itertools.product(range(max_extra_steps + 1), repeat=len(spatial)):
        size = tuple(b + e * step for b, e in zip(base, extra))
        if num_slices is not None and any(math.prod(s // 2 ** (i + 1) for s in size) % ns
                                          for i, ns in enumerate(num_slices)):
            continue
        if best is None or (math.prod(size), max(size)) < (math.prod(best), max(best)):
            best = size  # fewest voxels, then the most even shape
    if best is None:
        raise ValueError(f"SegMamba: no padded size found for input {spatial}: every spatial size must be divisible "
                         f"by {step} and the token count of encoder stage i divisible by num_slices[i]={num_slices}")
    return best


def _monai_unetr_blocks():
    """MONAI's UNETR blocks (imported lazily: importing MONAI takes seconds)."""
    from monai.networks.blocks.dynunet_block import UnetOutBlock
    from monai.networks.blocks.unetr_block import UnetrBasicBlock, UnetrUpBlock

    return UnetrBasicBlock, UnetrUpBlock, UnetOutBlock


class SegMamba(nn.Module):
    """SegMamba (official ``SegMamba``): Mamba encoder (GSC + ToM), UNETR-style conv decoder (MONAI blocks).

    Args:
        in_channels: Input channels (4 MRI sequences for BraTS).
        num_classes: Output channels (logits).
        spatial_dims: Must be 3.
        depths: Mamba layers per encoder stage.
        feat_size: Encoder stage widths (also the decoder widths).
        hidden_size: Width of the bottleneck block ``encoder5``.
        num_slices: ``nslices`` of the inter-slice direction per stage (official ``(64, 32, 16, 8)``), or
            ``None`` to use each feature map's depth.
        d_state, d_conv, expand: Mamba settings (official 16 / 4 / 2).
        pad_mode: ``F.pad`` mode for inputs the official network does not accept (``"constant"`` = zeros).
        backend: Selective-scan backend.

    Shape:
        ``(B, in_channels, D, H, W)`` (any size) -> logits ``(B, num_classes, D, H, W)``.
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 3,
                 depths: Sequence[int] = (2, 2, 2, 2), feat_size: Sequence[int] = (48, 96, 192, 384),
                 hidden_size: int = 768, num_slices: Optional[Sequence[int]] = (64, 32, 16, 8),
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, pad_mode: str = "constant",
                 backend: str = "auto") -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"SegMamba is 3D only (spatial_dims=3), got spatial_dims={spatial_dims}")
        f = [int(c) for c in feat_size]
        if len(f) != 4 or len(depths) != 4:
            raise ValueError(f"SegMamba needs 4 feat_size entries and 4 depths, got {f} and {tuple(depths)}")
        self.in_channels, self.num_classes, self.hidden_size, self.feat_size = in_channels, num_classes, hidden_size, f
        self.num_slices = None if num_slices is None else tuple(int(s) for s in num_slices)
        self.pad_mode = pad_mode
        basic, up, out = _monai_unetr_blocks()
        common = {"spatial_dims": 3, "kernel_size": 3, "norm_name": "instance", "res_block": True}
        self.vit = SegMambaEncoder(in_channels, depths, f, self.num_slices, d_state, d_conv, expand, backend)
        self.encoder1 = basic(in_channels=in_channels, out_channels=f[0], stride=1, **common)
        self.encoder2 = basic(in_channels=f[0], out_channels=f[1], stride=1, **common)
        self.encoder3 = basic(in_channels=f[1], out_channels=f[2], stride=1, **common)
        self.encoder4 = basic(in_channels=f[2], out_channels=f[3], stride=1, **common)
        self.encoder5 = basic(in_channels=f[3], out_channels=hidden_size, stride=1, **common)
        self.decoder5 = up(in_channels=hidden_size, out_channels=f[3], upsample_kernel_size=2, **common)
        self.decoder4 = up(in_channels=f[3], out_channels=f[2], upsample_kernel_size=2, **common)
        self.decoder3 = up(in_channels=f[2], out_channels=f[1], upsample_kernel_size=2, **common)
        self.decoder2 = up(in_channels=f[1], out_channels=f[0], upsample_kernel_size=2, **common)
        self.decoder1 = basic(in_channels=f[0], out_channels=f[0], stride=1, **common)
        self.out = out(spatial_dims=3, in_channels=f[0], out_channels=num_classes)

    def padded_size(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """The size an input of spatial size ``spatial`` is padded to (itself when the official code accepts it)."""
        return segmamba_padded_size(tuple(int(s) for s in spatial), self.num_slices)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, D, H, W)`` -> logits ``(B, num_classes, D, H, W)``."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"SegMamba expects (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        spatial = tuple(x.shape[2:])
        target = self.padded_size(spatial)
        x, _ = pad_to_multiple(x, target, mode=self.pad_mode)  # divisor = target pads exactly up to it
        outs = self.vit(x)
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(outs[0])
        enc3 = self.encoder3(outs[1])
        enc4 = self.encoder4(outs[2])
        hidden = self.encoder5(outs[3])
        dec3 = self.decoder5(hidden, enc4)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        dec0 = self.decoder2(dec1, enc1)
        return crop_to(self.out(self.decoder1(dec0)), spatial)


# ----------------------------------------------------------------------------- registry
_SEGMAMBA_CFG = {"depths": (2, 2, 2, 2), "feat_size": (48, 96, 192, 384), "hidden_size": 768,
                 "num_slices": (64, 32, 16, 8), "d_state": 16, "d_conv": 4, "expand": 2}
_SEGMAMBA_TEST_CFG = {"depths": (1, 1, 1, 1), "feat_size": (4, 8, 16, 32), "hidden_size": 32,
                      "num_slices": (64, 32, 16, 8), "d_state": 4, "d_conv": 4, "expand": 2}


@register_model(family="segmamba", paper="arXiv:2401.13560", spatial_dims=(3,), default_cfg=_SEGMAMBA_CFG)
def segmamba(**kwargs) -> SegMamba:
    """SegMamba, official BraTS configuration (67,416,196 parameters for 4 -> 4 channels)."""
    return SegMamba(**{**_SEGMAMBA_CFG, **kwargs})


@register_model(family="segmamba", paper="arXiv:2401.13560", spatial_dims=(3,), default_cfg=_SEGMAMBA_TEST_CFG)
def segmamba_test(**kwargs) -> SegMamba:
    """Tiny SegMamba for tests (feat_size (4, 8, 16, 32), hidden 32, one layer per stage, d_state 4)."""
    return SegMamba(**{**_SEGMAMBA_TEST_CFG, **kwargs})
