"""Mamba-1 block and the U-Mamba ``MambaLayer`` for N-D feature maps.

Papers:
    * Mamba: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State
      Spaces", arXiv:2312.00752.
    * U-Mamba: Ma, Li & Wang, "U-Mamba: Enhancing Long-range Dependency for
      Biomedical Image Segmentation", arXiv:2401.04722.

Official code followed (our own re-implementation, not a copy):
    * ``Mamba``: state-spaces/mamba ``mamba_ssm/modules/mamba_simple.py`` class
      ``Mamba``, the non-fused path (``in_proj`` -> causal depthwise ``conv1d`` ->
      SiLU -> ``x_proj`` -> ``dt_proj`` weight -> ``selective_scan_fn`` with
      ``delta_bias=dt_proj.bias``, ``delta_softplus=True`` and gate ``z`` ->
      ``out_proj``). Parameter names, shapes and initialisation are identical, so
      official ``state_dict``s load unchanged.
    * ``MambaLayer``: bowang-lab/U-Mamba ``umamba/nnunetv2/nets/UMambaBot_2d.py``
      (same class in the 3-D files): ``LayerNorm`` then ``Mamba`` over the flattened
      spatial tokens, *no* residual, run with autocast disabled and fp16 inputs
      cast to fp32.

Deliberate differences:
    * Pure PyTorch: the scan is :func:`mambaseg.ops.selective_scan` (``backend``
      argument, default ``"auto"``); no fused ``mamba_inner_fn`` /
      ``causal_conv1d`` kernels. The fused and non-fused official paths compute
      the same function.
    * No autoregressive decoding (``inference_params`` / ``step`` / state cache),
      which segmentation does not use; ``layer_idx`` is accepted and stored only.
    * ``MambaLayer`` also casts bfloat16 inputs to fp32 (the official code casts
      only fp16) and accepts ``backend`` plus extra ``Mamba`` keyword arguments.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mambaseg.layers.layout import transpose_contiguous
from mambaseg.ops import selective_scan

__all__ = ["Mamba", "MambaLayer", "dt_bias_init", "a_log_init"]


def dt_bias_init(d_inner: int, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 device=None, dtype=None) -> Tensor:
    """mamba_ssm's ``dt_proj.bias`` initialisation.

    Samples ``dt`` log-uniformly in ``[dt_min, dt_max]``, clamps it at
    ``dt_init_floor`` and returns its inverse softplus, so that
    ``softplus(bias)`` lies in ``[dt_min, dt_max]``.

    Returns:
        Tensor of shape ``(d_inner,)``.
    """
    log_lo, log_hi = math.log(dt_min), math.log(dt_max)
    dt = torch.exp(torch.rand(d_inner, device=device, dtype=dtype) * (log_hi - log_lo) + log_lo)
    dt = dt.clamp(min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus


def init_dt_proj(dt_proj: nn.Linear, dt_rank: int, dt_scale: float = 1.0, dt_init: str = "random",
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> None:
    """Initialise a ``Linear(dt_rank, d_inner)`` in place exactly as mamba_ssm does.

    Weight: constant or uniform in ``±dt_rank**-0.5 * dt_scale``; bias:
    :func:`dt_bias_init` (marked ``_no_reinit``).
    """
    std = dt_rank ** -0.5 * dt_scale
    with torch.no_grad():
        if dt_init == "constant":
            nn.init.constant_(dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(dt_proj.weight, -std, std)
        else:
            raise NotImplementedError(f"dt_init={dt_init!r}; expected 'random' or 'constant'")
        dt_proj.bias.copy_(dt_bias_init(dt_proj.out_features, dt_min, dt_max, dt_init_floor,
                                        device=dt_proj.bias.device, dtype=dt_proj.bias.dtype))
    dt_proj.bias._no_reinit = True


def a_log_init(d_state: int, d_inner: int, device=None) -> Tensor:
    """S4D-real initialisation ``A_log[d, n] = log(n + 1)``, fp32, shape ``(d_inner, d_state)``."""
    a = torch.arange(1, d_state + 1, dtype=torch.float32, device=device)
    return torch.log(a).unsqueeze(0).repeat(d_inner, 1).contiguous()


class Mamba(nn.Module):
    """Mamba-1 block (selective SSM with gated MLP-style projections).

    Args:
        d_model: Model (token) dimension.
        d_state: SSM state size ``N``.
        d_conv: Width of the causal depthwise convolution.
        expand: ``d_inner = expand * d_model``.
        dt_rank: Rank of the ``dt`` projection; ``"auto"`` = ``ceil(d_model / 16)``.
        dt_min, dt_max: Range of the initial step size ``softplus(dt_proj.bias)``.
        dt_init: ``"random"`` (uniform) or ``"constant"`` ``dt_proj.weight`` init.
        dt_scale: Scale of the ``dt_proj.weight`` init.
        dt_init_floor: Lower clamp of the initial step size.
        conv_bias: Bias in the depthwise convolution.
        bias: Bias in ``in_proj`` / ``out_proj``.
        layer_idx: Stored only (kept for API compatibility).
        backend: Selective-scan backend passed to :func:`mambaseg.ops.selective_scan`.
        device, dtype: Factory arguments for the parameters (``A_log``, ``D`` stay fp32).

    Shape:
        Input ``(B, L, d_model)``, output ``(B, L, d_model)``.
    """

    #: The whole block (projections, conv, scan) is the SSM mixer that ``ablation="no-mamba"`` replaces by an
    #: identity where it sits inside a larger layer (LightM-UNet, UltraLight VM-UNet's PVM layer); see
    #: :mod:`mambaseg.models.ablation`.
    ssm_mixer = True

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: Union[int, str] = "auto", dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, layer_idx: Optional[int] = None,
                 backend: str = "auto", device=None, dtype=None) -> None:
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.layer_idx = layer_idx
        self.backend = backend

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias, **factory)
        self.act = nn.SiLU()
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)
        init_dt_proj(self.dt_proj, self.dt_rank, dt_scale, dt_init, dt_min, dt_max, dt_init_floor)

        self.A_log = nn.Parameter(a_log_init(d_state, self.d_inner, device=device))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    def forward(self, hidden_states: Tensor) -> Tensor:
        """Apply the block.

        Args:
            hidden_states: ``(B, L, d_model)``.

        Returns:
            ``(B, L, d_model)``.
        """
        seqlen = hidden_states.shape[1]
        # layout changes through transpose_contiguous: slab-wise copies, fast for long 3D sequences on the CPU
        xz = transpose_contiguous(self.in_proj(hidden_states))  # (B, 2*d_inner, L)
        x, z = xz.chunk(2, dim=1)
        x = self.act(self.conv1d(x)[..., :seqlen])  # causal: keep the first L outputs
        x_dbl = self.x_proj(x.transpose(1, 2))  # (B, L, dt_rank + 2N)
        dt, b, c = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = transpose_contiguous(F.linear(dt, self.dt_proj.weight))  # (B, d_inner, L); bias added in the scan
        b, c = transpose_contiguous(b), transpose_contiguous(c)  # (B, N, L)
        a = -torch.exp(self.A_log.float())  # (d_inner, N)
        y = selective_scan(x, dt, a, b, c, self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(),
                           delta_softplus=True, backend=self.backend)  # (B, d_inner, L)
        return self.out_proj(transpose_contiguous(y))


class MambaLayer(nn.Module):
    """U-Mamba layer: ``LayerNorm`` + :class:`Mamba` over all spatial tokens of a feature map.

    No residual connection (as in U-Mamba). Runs with autocast disabled; half
    precision inputs are computed (and returned) in fp32.

    Args:
        dim: Channel count ``C``.
        d_state, d_conv, expand: Passed to :class:`Mamba`.
        backend: Selective-scan backend.
        **mamba_kwargs: Further :class:`Mamba` arguments.

    Shape:
        Input ``(B, C, *spatial)`` with any number of spatial dims; output the same shape.
    """

    #: U-Mamba's layer (LayerNorm + Mamba, no residual) is removed as a whole by ``ablation="no-mamba"``, as
    #: nnU-Net Revisited's "No-Mamba Base" does; see :mod:`mambaseg.models.ablation`.
    ssm_mixer = True

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 backend: str = "auto", **mamba_kwargs) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim)
        self.mamba = Mamba(d_model=dim, d_state=d_state, d_conv=d_conv, expand=expand,
                           backend=backend, **mamba_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer.

        Args:
            x: ``(B, C, *spatial)``.

        Returns:
            ``(B, C, *spatial)``.
        """
        if x.dim() < 3 or x.shape[1] != self.dim:
            raise ValueError(f"MambaLayer(dim={self.dim}) expects (B, {self.dim}, *spatial), got {tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            if x.dtype in (torch.float16, torch.bfloat16):
                x = x.float()
            b, c = x.shape[:2]
            spatial = x.shape[2:]
            tokens = x.reshape(b, c, -1).transpose(1, 2)  # (B, L, C)
            out = self.mamba(self.norm(tokens))
            return out.transpose(1, 2).reshape(b, c, *spatial)
