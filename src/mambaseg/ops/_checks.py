"""Argument checks and B/C layout helpers shared by the selective-scan backends."""

from __future__ import annotations

import torch


def _fail(name: str, tensor: torch.Tensor, expected: str) -> None:
    raise ValueError(f"selective_scan: argument '{name}' has shape {tuple(tensor.shape)}, expected {expected}")


def check_scan_inputs(u, delta, A, B, C, D=None, z=None, delta_bias=None) -> int:
    """Validates shapes against the mamba_ssm contract.

    Returns:
        The number of B/C groups ``G`` (1 for fixed ``(D, N)`` or shared ``(B, N, L)`` B/C).

    Raises:
        ValueError: naming the first argument whose shape or dtype is wrong and the shape it should have.
    """
    if u.dim() != 3:
        _fail("u", u, "(batch, dim, length)")
    batch, dim, length = u.shape
    if delta.shape != u.shape:
        _fail("delta", delta, f"(batch, dim, length) = {tuple(u.shape)} like u")
    if A.dim() != 2 or A.shape[0] != dim:
        _fail("A", A, f"(dim, d_state) with dim = {dim}")
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported (no Vision-Mamba model uses it); pass a real A")
    d_state = A.shape[1]
    groups = 1
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 2:
            if t.shape != A.shape:
                _fail(name, t, f"(dim, d_state) = {tuple(A.shape)}, (batch, d_state, length) or "
                               f"(batch, groups, d_state, length)")
        elif t.dim() == 3:
            if t.shape != (batch, d_state, length):
                _fail(name, t, f"(batch, d_state, length) = {(batch, d_state, length)}")
        elif t.dim() == 4:
            g = t.shape[1]
            if t.shape != (batch, g, d_state, length) or g == 0 or dim % g != 0:
                _fail(name, t, f"(batch, groups, d_state, length) = ({batch}, G, {d_state}, {length}) "
                               f"with G dividing dim = {dim}")
            groups = max(groups, g)
        else:
            _fail(name, t, "(dim, d_state), (batch, d_state, length) or (batch, groups, d_state, length)")
    if B.dim() == 4 and C.dim() == 4 and B.shape[1] != C.shape[1]:
        raise ValueError(f"selective_scan: B has {B.shape[1]} groups but C has {C.shape[1]}; they must match")
    if D is not None and D.shape != (dim,):
        _fail("D", D, f"(dim,) = ({dim},)")
    if z is not None and z.shape != u.shape:
        _fail("z", z, f"(batch, dim, length) = {tuple(u.shape)} like u")
    if delta_bias is not None and delta_bias.shape != (dim,):
        _fail("delta_bias", delta_bias, f"(dim,) = ({dim},)")
    for name, t in (("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("delta_bias", delta_bias)):
        if t is not None and t.device != u.device:
            raise ValueError(f"selective_scan: argument '{name}' is on {t.device} but u is on {u.device}")
    return groups


def expand_bc(t: torch.Tensor, batch: int, dim: int, length: int) -> torch.Tensor:
    """Broadcasts B or C to one row per channel: any accepted layout -> ``(batch, dim, d_state, length)``.

    Channel ``d`` of a grouped ``(batch, G, N, L)`` tensor uses group ``d // (dim // G)``, as mamba_ssm does.
    The result is a view (expand) where possible.
    """
    if t.dim() == 2:  # fixed (D, N)
        return t[None, :, :, None].expand(batch, dim, t.shape[1], length)
    if t.dim() == 3:  # shared (B, N, L)
        return t[:, None].expand(batch, dim, t.shape[1], length)
    groups, d_state = t.shape[1], t.shape[2]
    grouped = t[:, :, None].expand(batch, groups, dim // groups, d_state, length)
    return grouped.reshape(batch, dim, d_state, length)
