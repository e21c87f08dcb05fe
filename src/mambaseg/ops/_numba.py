"""Fused CPU selective scan: forward and backward kernels compiled at first use by Numba (no C compiler needed).

Same semantics as :mod:`mambaseg.ops._reference`. Where the ``chunked`` backend drives the recurrence with one
torch call per step over many chunks (about 25 passes over ``(B, D, L, N)`` elements for forward + backward), these
kernels walk each channel's sequence once with its ``N`` states in registers, like mamba_ssm's CUDA kernel:

* forward: one pass over ``u, delta (B, D, L)`` and ``B, C``; nothing of size ``(B, D, L, N)`` is written. The
  states entering every chunk of ``T`` steps, ``(B, D, L / T, N)``, are kept for the backward.
* backward: chunks are visited last to first; each chunk's states and decays are recomputed from its saved start
  into a ``(T, N)`` buffer that stays in L1, then walked backwards.

Decays are ``exp(delta * A)`` evaluated by a vectorisable exponential (range reduction by ``ln 2``, a degree-6
polynomial, the power of two assembled in the exponent bits): about 2 ulp, arguments clamped to ``[-87, 88]``
(below -87 the decay is ~1e-38 instead of 0, above 88 it stays finite). ``delta_bias``, softplus, ``D`` and ``z``
are applied around the kernel by ordinary torch operations, so autograd differentiates them.

Work is split into units ``(batch, group, split)``: the channels of one B/C group are divided into ``S`` splits
so that there are enough units for every thread; each unit writes its own partial ``dB``/``dC``, summed afterwards,
so no two threads ever write the same element.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from ._reference import finish_output, prepare_inputs

#: Steps per chunk: the backward's recompute buffers hold ``2 * T * N`` floats per thread (8 KiB at N = 16).
CHUNK_LENGTH = 64


@lru_cache(maxsize=None)
def numba_available() -> bool:
    """True when Numba imports (the kernels compile on the first call)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _kernels():
    """Forward and backward kernels (compiled at first use, then loaded from Numba's on-disk cache)."""
    from . import _numba_kernels

    return _numba_kernels.forward, _numba_kernels.backward


def _bc_layout(M: torch.Tensor, batch: int, dim: int, length: int) -> tuple[torch.Tensor, int]:
    """B or C in any accepted layout -> ``(Bb, groups, Lb, N)`` contiguous fp32, and channels per group.

    Shared ``(B, N, L)`` -> ``(B, 1, L, N)``; grouped ``(B, G, N, L)`` -> ``(B, G, L, N)``; fixed ``(D, N)`` ->
    ``(1, D, 1, N)`` (batch and time broadcast inside the kernel).
    """
    if M.dim() == 2:
        return M.reshape(1, dim, 1, -1).contiguous(), 1
    if M.dim() == 3:
        M = M.unsqueeze(1)
    return M.transpose(2, 3).contiguous(), dim // M.shape[1]


def _split_count(units: int, channels: int) -> int:
    """Splits per group so that every thread gets about four units."""
    want = 4 * max(1, torch.get_num_threads())
    return max(1, min(channels, -(-want // max(units, 1))))


class NumbaScanFn(torch.autograd.Function):
    """``y_t = <h_t, C_t> + D u_t`` and the last state, on fp32 tensors, with the delta bias and softplus folded in.

    Inputs: ``u, delta: (B, D, L)`` contiguous, ``A: (D, N)``, ``Bm, Cm: (Bb, G*, Lb, N)`` from :func:`_bc_layout`,
    ``D: (D,)`` or None, ``bias: (D,)`` or None. Outputs: ``y: (B, D, L)``, ``last_state: (B, D, N)``.
    Folding ``softplus(delta + bias)`` in keeps its autograd graph out of memory: the backward needs only the
    activated delta, since ``softplus'(x) = 1 - exp(-softplus(x))``.
    """

    @staticmethod
    def forward(ctx, u, delta, A, Bm, Cm, D, bias, softplus, gB, gC):
        forward, _ = _kernels()
        _set_threads()
        batch, dim, L = u.shape
        N = A.shape[1]
        if bias is not None:
            delta = delta + bias[:, None]
        if softplus:
            delta = torch.nn.functional.softplus(delta)
        delta = delta.contiguous()
        skip = D.contiguous() if D is not None else u.new_zeros(dim)
        G = math.lcm(dim // gB, dim // gC)
        S = _split_count(batch * G, dim // G)
        T = min(CHUNK_LENGTH, max(L, 1))
        y = u.new_empty(batch, dim, L)
        last = u.new_empty(batch, dim, N)
        starts = u.new_empty(batch, dim, -(-L // T), N)
        forward(u.numpy(), delta.numpy(), A.numpy(), Bm.numpy(), Cm.numpy(), skip.numpy(), gB, gC, G, S, T,
                y.numpy(), last.numpy(), starts.numpy())
        ctx.save_for_backward(u, delta, A, Bm, Cm, skip, starts)
        ctx.gB, ctx.gC, ctx.G, ctx.T = gB, gC, G, T
        ctx.has_D, ctx.has_bias, ctx.softplus = D is not None, bias is not None, softplus
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, Bm, Cm, skip, starts = ctx.saved_tensors
        _, backward = _kernels()
        _set_threads()
        batch, dim, L = u.shape
        G = ctx.G
        S = _split_count(batch * G, dim // G)
        dy = dy.contiguous() if dy is not None else torch.zeros_like(u)
        dlast = dlast.contiguous() if dlast is not None else u.new_zeros(batch, dim, A.shape[1])
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dA = u.new_empty(batch, dim, A.shape[1])
        dD = u.new_empty(batch, dim)
        dB = u.new_zeros(batch, S, G, Bm.shape[2], Bm.shape[3])
        dC = u.new_zeros(batch, S, G, Cm.shape[2], Cm.shape[3])
        backward(u.numpy(), delta.numpy(), A.numpy(), Bm.numpy(), Cm.numpy(), skip.numpy(), ctx.softplus, ctx.gB,
                 ctx.gC, G, S, ctx.T, starts.numpy(), dy.numpy(), dlast.numpy(), du.numpy(), ddelta.numpy(), dA.numpy(),
                 dB.numpy(), dC.numpy(), dD.numpy())
        dbias = ddelta.sum((0, 2)) if ctx.has_bias else None
        return (du, ddelta, dA.sum(0), _fold_partials(dB, Bm), _fold_partials(dC, Cm),
                dD.sum(0) if ctx.has_D else None, dbias, None, None, None)


def _fold_partials(part: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """``(B, S, G, Lb, N)`` per-unit partial gradients -> the layout of ``M``: ``(Bb, GM, Lb, N)``."""
    batch, _, G, Lb, N = part.shape
    out = part.sum(1).view(batch, M.shape[1], G // M.shape[1], Lb, N).sum(2)
    return out.sum(0, keepdim=True) if M.shape[0] == 1 else out


def _set_threads() -> None:
    """Numba uses as many threads as torch (within the number it was started with)."""
    import numba

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def selective_scan_numba(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False):
    """Fused CPU selective scan (arguments and shapes as :func:`mambaseg.ops.selective_scan`)."""
    out_dtype = u.dtype
    batch, dim, length = u.shape
    u, delta, A, B, C, D, z = prepare_inputs(u, delta, A, B, C, D, z, None, False)  # bias, softplus, D: in the Function
    (Bm, gB), (Cm, gC) = _bc_layout(B, batch, dim, length), _bc_layout(C, batch, dim, length)
    bias = delta_bias.float() if delta_bias is not None else None
    y, last = NumbaScanFn.apply(u.contiguous(), delta, A.contiguous(), Bm, Cm, D, bias, delta_softplus, gB, gC)
    out = finish_output(y, u, None, z, out_dtype)
    return (out, last) if return_last_state else out
