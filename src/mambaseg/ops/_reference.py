"""The sequential selective scan: the specification every other backend is tested against.

This is the S6 recurrence of Mamba (Gu & Dao, 2023, arXiv 2312.00752) with the exact semantics of
``mamba_ssm.selective_scan_fn`` / ``selective_scan_ref``:

    delta <- softplus(delta + delta_bias)          (each step optional)
    h_t    = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t      (Euler discretisation of B, as mamba_ssm)
    y_t    = <h_t, C_t> + D * u_t
    out    = y * silu(z)                           (optional)

It is written to be obviously right, not fast: one Python step per token. Unlike ``selective_scan_ref`` it takes
per-step slices with ``unbind`` so that its backward stays linear in L (slicing a (B, D, L, N) tensor in a loop makes
autograd allocate a full-size zero buffer per step and the backward quadratic).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import expand_bc


def prepare_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dtype=torch.float32):
    """Casts to the compute dtype (fp32) and applies ``delta_bias`` and softplus. Shared by every backend.

    Returns:
        ``(u, delta, A, B, C, D, z)`` in ``dtype``, ``delta`` already biased and softplus-ed.
    """
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    D = D.to(dtype) if D is not None else None
    z = z.to(dtype) if z is not None else None
    return u, delta, A, B, C, D, z


def finish_output(y, u, D, z, out_dtype):
    """Adds the skip ``D * u``, gates with ``silu(z)`` and casts back: ``(B, D, L)`` -> ``(B, D, L)``."""
    if D is not None:
        y = y + u * D[:, None]
    if z is not None:
        y = y * F.silu(z)
    return y.to(out_dtype)


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             return_last_state=False):
    """Sequential selective scan (arguments and shapes as :func:`mambaseg.ops.selective_scan`).

    Computes in fp32 (or in fp64 when the inputs are fp64, which the tests use as the high-precision reference).
    """
    out_dtype = u.dtype
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A, B, C, D, z = prepare_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dtype)
    batch, dim, length = u.shape
    B_full = expand_bc(B, batch, dim, length)  # (B, D, N, L)
    C_full = expand_bc(C, batch, dim, length)
    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    steps = zip(delta.unbind(-1), u.unbind(-1), B_full.unbind(-1), C_full.unbind(-1))
    for delta_t, u_t, b_t, c_t in steps:  # (B, D), (B, D), (B, D, N), (B, D, N)
        h = torch.exp(delta_t[..., None] * A) * h + (delta_t * u_t)[..., None] * b_t
        ys.append((h * c_t).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0)
    out = finish_output(y, u, D, z, out_dtype)
    return (out, h) if return_last_state else out
