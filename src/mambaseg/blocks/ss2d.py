"""VMamba 2D selective scan (SS2D) and the visual state-space block (VSSBlock).

Paper:
    VMamba: Liu et al., "VMamba: Visual State Space Model", arXiv:2401.10166.

Official code followed (our own re-implementation, not a copy): VMamba "v0" as
used by the segmentation networks Mamba-UNet (ziyangwang007/Mamba-UNet,
``code/networks/mamba_sys.py``) and VM-UNet (JCruan519/VM-UNet,
``models/vmunet/vmamba.py``), classes ``SS2D`` (``forward_corev0``) and
``VSSBlock``. Parameter names, shapes and initialisation match, so their
checkpoints load unchanged:

* ``in_proj`` -> (x, z); depthwise ``conv2d`` + SiLU on x;
* K=4 direction sequences (row-major, column-major, and both reversed), with
  per-direction ``x_proj_weight (K, R + 2N, d_inner)`` (each slice initialised
  like a default ``nn.Linear``), ``dt_projs_weight (K, d_inner, R)`` /
  ``dt_projs_bias (K, d_inner)`` (each initialised like mamba_ssm's ``dt_proj``),
  ``A_logs (K*d_inner, N)``, ``Ds (K*d_inner,)``;
* ONE selective scan over ``K*d_inner`` channels in fp32 with grouped ``B``/``C``
  ``(B, K, N, L)``, ``delta_bias = dt_projs_bias``, softplus, no gate;
* the K outputs are folded back to raster positions and summed, then
  ``out_norm = LayerNorm(d_inner)`` (fp32), times ``silu(z)``, ``out_proj``, dropout.

Deliberate differences:
    * The serialisation is a :mod:`mambaseg.ops.scan_orders` order (``scan``,
      default ``"cross"`` = VMamba's exact direction order ``[row, col, row
      reversed, col reversed]``); any 2D order works and its ``K`` sets the
      number of direction parameter sets. ``merge`` sums the K folded outputs in
      one reduction instead of VMamba's ``y0 + inv_y0 + wh_y + invwh_y`` (same
      value up to fp32 summation order).
    * Pure PyTorch scan (:func:`mambaseg.ops.selective_scan`, ``backend``).
    * ``VSSBlock``'s default ``norm_layer`` is ``nn.LayerNorm`` (eps 1e-5), which is
      what Mamba-UNet's and VM-UNet's ``VSSLayer``/``VSSM`` always pass; the
      official class default ``partial(nn.LayerNorm, eps=1e-6)`` is never used by
      those networks. ``drop_path`` is our own :class:`mambaseg.layers.DropPath` (timm semantics).
    * H-vmunet (wurenkai/H-vmunet) builds ``SS2D(d_model=d, dropout=0,
      d_state=16)`` from its own ``models/vmamba.py`` (not inspected here); its
      parameter counts equal this default formula.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mambaseg.blocks.mamba import a_log_init, init_dt_proj
from mambaseg.layers.drop import DropPath
from mambaseg.ops import selective_scan
from mambaseg.ops.scan_orders import ScanOrder, get_scan_order

__all__ = ["SS2D", "ScanLike", "VSSBlock"]

#: What a ``scan`` argument takes: an order name or a ScanOrder object.
ScanLike = Union[str, ScanOrder]


class SS2D(nn.Module):
    """VMamba 2D selective scan over K serialisations of a channel-last feature map.

    Args:
        d_model: Channel count ``C``.
        d_state: SSM state size ``N``.
        d_conv: Kernel size of the depthwise 2D convolution.
        expand: ``d_inner = expand * d_model``.
        dt_rank: ``"auto"`` = ``ceil(d_model / 16)``.
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: ``dt`` projection init (as mamba_ssm).
        dropout: Dropout probability on the output (none when 0).
        conv_bias: Bias in the depthwise convolution.
        bias: Bias in ``in_proj`` / ``out_proj``.
        scan: Name of a 2D scan order (:func:`mambaseg.ops.scan_orders.get_scan_order`), or a
            :class:`~mambaseg.ops.scan_orders.ScanOrder` object (used as is, e.g. shared by every SS2D
            of a model; ``create_model(..., scan_options=...)`` passes one).
        scan_options: Options for a named order (e.g. ``{"window": 7}`` for ``local``); not with an object.
        backend: Selective-scan backend.
        device, dtype: Factory arguments.

    Shape:
        Input ``(B, H, W, d_model)``, output ``(B, H, W, d_model)``.
    """

    #: The whole SS2D is the SSM token mixer that ``create_model(..., ablation="no-mamba")`` replaces by an
    #: identity (see :mod:`mambaseg.models.ablation`).
    ssm_mixer = True

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 3, expand: int = 2,
                 dt_rank: Union[int, str] = "auto", dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 dropout: float = 0.0, conv_bias: bool = True, bias: bool = False,
                 scan: ScanLike = "cross", scan_options: Optional[dict] = None, backend: str = "auto",
                 device=None, dtype=None) -> None:
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        if isinstance(scan, ScanOrder):
            if scan_options:
                raise ValueError(f"SS2D: scan_options={scan_options!r} needs scan to be an order name, "
                                 f"got the order object {scan!r}")
            self.scan_order = scan
        else:
            self.scan_order = get_scan_order(scan, **(scan_options or {}))
        if self.scan_order.spatial_dims != 2:
            raise ValueError(f"SS2D needs a 2D scan order, got scan={self.scan_order.name!r} "
                             f"({self.scan_order.spatial_dims}D)")
        self.scan = self.scan_order.name
        self.backend = backend
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.num_directions = k = self.scan_order.num_directions
        d_inner, r = self.d_inner, self.dt_rank

        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias, **factory)
        self.conv2d = nn.Conv2d(d_inner, d_inner, kernel_size=d_conv, groups=d_inner,
                                padding=(d_conv - 1) // 2, bias=conv_bias, **factory)
        self.act = nn.SiLU()

        # Per-direction projections, each initialised as its own nn.Linear (as VMamba does).
        x_projs = [nn.Linear(d_inner, r + 2 * d_state, bias=False, **factory) for _ in range(k)]
        self.x_proj_weight = nn.Parameter(torch.stack([m.weight.detach() for m in x_projs], 0))
        dt_projs = []
        for _ in range(k):
            m = nn.Linear(r, d_inner, bias=True, **factory)
            init_dt_proj(m, r, dt_scale, dt_init, dt_min, dt_max, dt_init_floor)
            dt_projs.append(m)
        self.dt_projs_weight = nn.Parameter(torch.stack([m.weight.detach() for m in dt_projs], 0))
        self.dt_projs_bias = nn.Parameter(torch.stack([m.bias.detach() for m in dt_projs], 0))

        self.A_logs = nn.Parameter(a_log_init(d_state, d_inner, device=device).repeat(k, 1))  # (K*d_inner, N)
        self.A_logs._no_weight_decay = True
        self.Ds = nn.Parameter(torch.ones(k * d_inner, device=device))
        self.Ds._no_weight_decay = True

        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout) if dropout > 0.0 else None

    def forward_core(self, x: Tensor) -> Tensor:
        """Scan the K serialisations and fold them back.

        Args:
            x: ``(B, d_inner, H, W)`` (after conv + SiLU).

        Returns:
            ``(B, d_inner, H, W)`` fp32: the sum over directions of the scan outputs.
        """
        b, d, h, w = x.shape
        k, n, L = self.num_directions, self.d_state, h * w
        xs = self.scan_order.flatten(x)  # (B, K, d, L)
        # per-direction projections as batched matmuls over (B, K): (c, d) @ (d, L); unlike einsum, this never
        # copies xs into a (K, B*L, d) layout
        x_dbl = torch.matmul(self.x_proj_weight.unsqueeze(0), xs)  # (B, K, r + 2N, L)
        dts, bs, cs = torch.split(x_dbl, [self.dt_rank, n, n], dim=2)
        dts = torch.matmul(self.dt_projs_weight.unsqueeze(0), dts)  # (B, K, d, L)
        out = selective_scan(
            xs.float().reshape(b, k * d, L),
            dts.float().reshape(b, k * d, L),
            -torch.exp(self.A_logs.float()),
            bs.float().contiguous(),  # (B, K, N, L): direction k's channels use group k
            cs.float().contiguous(),
            self.Ds.float(),
            z=None,
            delta_bias=self.dt_projs_bias.float().reshape(-1),
            delta_softplus=True,
            backend=self.backend,
        )
        return self.scan_order.merge(out.view(b, k, d, L), (h, w))

    def forward(self, x: Tensor) -> Tensor:
        """Apply SS2D.

        Args:
            x: ``(B, H, W, d_model)`` channel-last.

        Returns:
            ``(B, H, W, d_model)``.
        """
        if x.dim() != 4 or x.shape[-1] != self.d_model:
            raise ValueError(f"SS2D(d_model={self.d_model}) expects (B, H, W, {self.d_model}), got {tuple(x.shape)}")
        x, z = self.in_proj(x).chunk(2, dim=-1)  # (B, H, W, d_inner) each
        x = self.act(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))  # (B, d_inner, H, W)
        y = self.forward_core(x).permute(0, 2, 3, 1)  # (B, H, W, d_inner), fp32
        y = self.out_norm(y).to(x.dtype)
        out = self.out_proj(y * F.silu(z))
        if self.dropout is not None:
            out = self.dropout(out)
        return out


class VSSBlock(nn.Module):
    """Visual state-space block: ``x + drop_path(SS2D(norm(x)))``.

    Args:
        hidden_dim: Channel count ``C``.
        drop_path: Stochastic-depth probability.
        norm_layer: Factory ``norm_layer(hidden_dim)`` for the pre-norm ``ln_1``.
        attn_drop_rate: Dropout of the SS2D output.
        d_state: SSM state size.
        **kwargs: Further :class:`SS2D` arguments (``scan``, ``backend``, ...).

    Shape:
        Input ``(B, H, W, C)``, output ``(B, H, W, C)``.
    """

    def __init__(self, hidden_dim: int = 0, drop_path: float = 0.0,
                 norm_layer: Callable[..., nn.Module] = nn.LayerNorm, attn_drop_rate: float = 0.0,
                 d_state: int = 16, **kwargs) -> None:
        super().__init__()
        self.ln_1 = norm_layer(hidden_dim)
        self.self_attention = SS2D(d_model=hidden_dim, dropout=attn_drop_rate, d_state=d_state, **kwargs)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to ``(B, H, W, C)``; returns ``(B, H, W, C)``."""
        return x + self.drop_path(self.self_attention(self.ln_1(x)))
