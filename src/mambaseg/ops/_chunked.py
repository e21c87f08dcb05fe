"""Two-level chunked selective scan in pure PyTorch, with its own memory-lean backward.

Same semantics as :mod:`mambaseg.ops._reference` (mamba_ssm's ``selective_scan_fn``); runs on any device.

Why it is fast: the sequence of length L is cut into ``nc`` chunks of ``T`` steps (``T ~ sqrt(L)``) and every
Python-level step updates the states of *all* chunks (and all channels) at once, so a scan costs ``O(T + nc)``
torch calls instead of ``O(L)``. Chunks are linked by a short sequential pass over their boundary states. The
structure follows the CUDA kernel of mamba_ssm (chunks with a carried state, states recomputed in the backward).

Why it is stable: the only exponentials are ``exp(delta * A)`` and ``exp(A * sum(delta))`` over a chunk, both of
non-positive arguments for the usual ``A < 0, delta >= 0`` (never the "ratio trick" ``exp(-cumsum)``, which
overflows once a chunk's decay exceeds ~88 in fp32).

Why it is lean: between forward and backward only the inputs and the chunk-start states ``(B, D, nc, N)`` are
kept, ``T`` times fewer than the per-step states; the backward recomputes the states one slab of channels at a
time, within a memory budget.

Layout inside: channels are regrouped as ``(BG, P)`` with ``BG = batch * groups`` and ``P = dim // groups`` so
grouped B/C broadcast over ``P`` without being copied per channel; one slab is a range of ``BG`` rows (or a range
of ``P`` inside one row) laid out step-major ``(bg, T, nc, N, p)``: every per-step slice is contiguous (for one
row) and the channel axis ``p`` is innermost (long vectorised loops; B/C broadcast along it with stride 0).
"""

from __future__ import annotations

import math
import threading

import torch

from ._checks import expand_bc
from ._reference import finish_output, prepare_inputs

#: Bytes one slab's three working tensors of shape (bg, T, nc, N, p) may use together, fp32. Small enough for the
#: slab to stay in a server CPU's last-level cache, large enough for each per-step op to amortise its overhead.
SLAB_BUDGET_BYTES = 24 * 2**20

_WORKSPACE = threading.local()


def _scratch(like: torch.Tensor, shape: tuple, count: int) -> list[torch.Tensor]:
    """``count`` uninitialised fp32 tensors of ``shape`` for intermediate results.

    On CPU they are carved from one buffer cached per thread and reused by every call: a fresh multi-MB tensor costs
    a page fault per 4 KiB on first touch (as much time as the arithmetic that fills it). On GPU the caching
    allocator already reuses memory, so plain allocations are used.
    """
    n = math.prod(shape)
    if like.device.type != "cpu":
        return [like.new_empty(shape) for _ in range(count)]
    buf = getattr(_WORKSPACE, "buffer", None)
    if buf is None or buf.numel() < n * count:
        buf = _WORKSPACE.buffer = torch.empty(n * count, dtype=torch.float32)
    return [buf[i * n:(i + 1) * n].view(shape) for i in range(count)]


def clear_workspace() -> None:
    """Frees the CPU scratch buffer of the calling thread (it is re-created on the next chunked scan)."""
    _WORKSPACE.buffer = None


def default_chunk_length(length: int) -> int:
    """Chunk length ``T``: the power of two nearest ``sqrt(L)``, clamped to [8, 256]."""
    if length <= 8:
        return max(length, 1)
    return int(min(256, max(8, 2 ** round(math.log2(math.sqrt(length))))))


def _group_layout(B: torch.Tensor, batch: int, dim: int, length: int) -> torch.Tensor:
    """Any accepted B/C layout -> ``(batch * G, N, L)`` fp32, G = 1 (shared), G (grouped) or dim (fixed)."""
    if B.dim() == 3:
        return B
    if B.dim() == 4:
        return B.reshape(batch * B.shape[1], B.shape[2], length)
    return expand_bc(B, batch, dim, length).reshape(batch * dim, B.shape[1], length)


def _slabs(n_rows: int, P: int, elems_per_channel: int, budget: int):
    """Yields ``(row0, row1, [(p0, p1), ...])``: row ranges and the channel ranges of each slab inside them.

    A slab's three working tensors fit ``budget`` bytes (at least one channel per slab).
    """
    max_channels = max(1, budget // (3 * 4 * max(elems_per_channel, 1)))
    if max_channels >= P:
        rows = max(1, max_channels // P)
        for r0 in range(0, n_rows, rows):
            yield r0, min(n_rows, r0 + rows), [(0, P)]
    else:
        for r0 in range(n_rows):
            yield r0, r0 + 1, [(p0, min(P, p0 + max_channels)) for p0 in range(0, P, max_channels)]


def _steps(x: torch.Tensor, T: int) -> torch.Tensor:
    """Step-major view of a channel-last tensor: ``(bg, nc * T, c)`` -> ``(bg, T, nc, c)`` (no copy)."""
    return x.unflatten(1, (-1, T)).transpose(1, 2)


class _Slab:
    """One slab in step-major layout: ``u, delta: (bg, T, nc, 1, p)``, ``B, C: (bg, T, nc, N, 1)``,
    ``A: (bg, 1, 1, N, p)``."""

    def __init__(self, u, delta, B, C, A3, G, T, rows, ps):
        (r0, r1), (p0, p1) = rows, ps
        self.u = _steps(u[r0:r1, :, p0:p1], T).unsqueeze(3)
        self.delta = _steps(delta[r0:r1, :, p0:p1], T).unsqueeze(3)
        self.B, self.C = B, C
        group_of_row = torch.arange(r0, r1, device=u.device) % G
        self.A = A3[group_of_row, p0:p1].transpose(1, 2)[:, None, None].contiguous()

    def work_shape(self) -> tuple:
        return (*self.delta.shape[:3], self.A.shape[3], self.A.shape[4])

    def decay_and_input(self, a, x):
        """Fills ``a = exp(delta * A)`` and ``x = delta * u * B``, both ``(bg, T, nc, N, p)``."""
        torch.mul(self.delta, self.A, out=a).exp_()
        torch.mul(self.delta * self.u, self.B, out=x)
        return a, x

    def chunk_decay(self):
        """``exp(A * sum_t delta_t)`` per chunk: ``(bg, nc, N, p)``."""
        return torch.mul(self.delta.sum(1), self.A[:, 0]).exp_()


def _scan_chunks(decay: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Inclusive linear scan along dim 1: ``E_c = decay_c * E_{c-1} + x_c`` (``E_{-1} = 0``), log-depth.

    Hillis-Steele doubling on ``(bg, nc, N, p)`` tensors: ``2 log2(nc)`` ops instead of ``nc`` sequential ones.
    Products of decays only shrink, so nothing can overflow.
    """
    x, decay = x.clone(), decay.clone()
    nc, k = x.shape[1], 1
    while k < nc:
        x[:, k:] = torch.addcmul(x[:, k:], decay[:, k:], x[:, :-k])
        if 2 * k < nc:
            decay[:, k:] = decay[:, k:] * decay[:, :-k]
        k *= 2
    return x


def _scan_in_place(a, x, start):
    """Turns ``x`` into the states ``h_t = a_t * h_{t-1} + x_t`` of every chunk, from ``start: (bg, nc, N, p)``."""
    x[:, 0].addcmul_(a[:, 0], start)
    for t in range(1, x.shape[1]):
        x[:, t].addcmul_(a[:, t], x[:, t - 1])


def _chunk_start_states(a, x, chunk_decay):
    """States entering each chunk ``(bg, nc, N, p)`` and the final state ``(bg, N, p)``.

    A local scan from zero gives each chunk's end state; a scan over chunks links them.
    """
    s = x[:, 0].clone()
    for t in range(1, x.shape[1]):
        torch.addcmul(x[:, t], a[:, t], s, out=s)
    ends = _scan_chunks(chunk_decay, s)
    starts = torch.cat([torch.zeros_like(ends[:, :1]), ends[:, :-1]], dim=1)
    return starts, ends[:, -1]


def _reverse_scan_in_place(a, e, chunk_decay, carry_in):
    """Turns ``e`` into the adjoints ``g_t = e_t + a_{t+1} g_{t+1}`` across all chunks.

    ``carry_in: (bg, N, p)`` is the adjoint arriving from beyond the sequence end (the gradient of the last state).
    """
    T = e.shape[1]
    s = e[:, T - 1].clone()
    for t in range(T - 2, -1, -1):
        torch.addcmul(e[:, t], a[:, t + 1], s, out=s)
    s.mul_(a[:, 0])  # each chunk's contribution to the adjoint of the previous chunk's last state
    # carry_c = s_{c+1} + decay_{c+1} carry_{c+1}, carry_{nc-1} = carry_in: a forward scan on the flipped chunks
    flipped_in = torch.cat([carry_in[:, None], s[:, 1:].flip(1)], dim=1)
    flipped_decay = torch.cat([torch.zeros_like(carry_in[:, None]), chunk_decay[:, 1:].flip(1)], dim=1)
    carry = _scan_chunks(flipped_decay, flipped_in).flip(1)
    e[:, T - 1].add_(carry)
    for t in range(T - 2, -1, -1):
        e[:, t].addcmul_(a[:, t + 1], e[:, t + 1])


class ChunkedScanFn(torch.autograd.Function):
    """Core scan ``y_t = <h_t, C_t>`` on prepared fp32 inputs (delta already biased and softplus-ed), channel-last.

    Inputs: ``u, delta: (BG, Lp, P)`` with ``Lp`` a multiple of ``T``; ``A3: (G, P, N)``; ``B, C: (BG, Lp, N)``.
    Outputs: ``y: (BG, Lp, P)`` and ``last_state: (BG, N, P)``.
    """

    @staticmethod
    def forward(ctx, u, delta, A3, B_cl, C_cl, G, T, budget):
        BG, Lp, P = u.shape
        N = A3.shape[-1]
        y = u.new_empty(BG, Lp, P)
        last_state = u.new_empty(BG, N, P)
        starts_all = u.new_empty(BG, Lp // T, N, P)
        for r0, r1, p_ranges in _slabs(BG, P, Lp * N, budget):
            B, C = (_steps(t[r0:r1], T).unsqueeze(4).contiguous() for t in (B_cl, C_cl))  # (bg, T, nc, N, 1)
            for p0, p1 in p_ranges:
                slab = _Slab(u, delta, B, C, A3, G, T, (r0, r1), (p0, p1))
                a, x = slab.decay_and_input(*_scratch(u, slab.work_shape(), 2))
                starts, last = _chunk_start_states(a, x, slab.chunk_decay())
                _scan_in_place(a, x, starts)
                _steps(y[r0:r1, :, p0:p1], T).copy_(torch.matmul(C.transpose(-1, -2), x).squeeze(3))
                last_state[r0:r1, :, p0:p1] = last
                starts_all[r0:r1, :, :, p0:p1] = starts
        ctx.save_for_backward(u, delta, A3, B_cl, C_cl, starts_all)
        ctx.G, ctx.T, ctx.budget = G, T, budget
        return y, last_state

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A3, B_cl, C_cl, starts_all = ctx.saved_tensors
        G, T = ctx.G, ctx.T
        BG, Lp, P = u.shape
        N = A3.shape[-1]
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dA = torch.zeros_like(A3)
        dB, dC = torch.zeros_like(B_cl), torch.zeros_like(C_cl)
        dy = dy.contiguous() if dy is not None else torch.zeros_like(u)
        for r0, r1, p_ranges in _slabs(BG, P, Lp * N, ctx.budget):
            B, C = (_steps(t[r0:r1], T).unsqueeze(4).contiguous() for t in (B_cl, C_cl))
            for p0, p1 in p_ranges:
                slab = _Slab(u, delta, B, C, A3, G, T, (r0, r1), (p0, p1))
                dys = _steps(dy[r0:r1, :, p0:p1], T).unsqueeze(3)  # (bg, T, nc, 1, p)
                a, h, g = _scratch(u, slab.work_shape(), 3)
                slab.decay_and_input(a, h)
                starts = starts_all[r0:r1, :, :, p0:p1]
                _scan_in_place(a, h, starts)
                torch.mul(C, dys, out=g)  # dy_t * C_t, (bg, T, nc, N, p); becomes the state adjoint
                carry = dlast[r0:r1, :, p0:p1] if dlast is not None else torch.zeros_like(starts[:, 0])
                _reverse_scan_in_place(a, g, slab.chunk_decay(), carry)
                # dC_t = sum_p dy_t h_t ; dB_t = sum_p g_t delta_t u_t ; (g B)_t = sum_n g_t B_t
                _steps(dC[r0:r1], T).add_(torch.matmul(h, dys.transpose(-1, -2)).squeeze(4))
                _steps(dB[r0:r1], T).add_(torch.matmul(g, (slab.delta * slab.u).transpose(-1, -2)).squeeze(4))
                gB = torch.matmul(B.transpose(-1, -2), g)  # (bg, T, nc, 1, p)
                # w_t = d loss / d log(a_t) = g_t * a_t * h_{t-1}
                w = a.mul_(g)
                w[:, 1:].mul_(h[:, :-1])
                w[:, 0].mul_(starts)
                ddelta_s = torch.mul(w, slab.A, out=h).sum(3).addcmul_(slab.u[:, :, :, 0], gB[:, :, :, 0])
                dA_rows = w.mul_(slab.delta).sum((1, 2)).transpose(1, 2)  # (bg, p, N); h, w are scratch
                dA.index_add_(0, torch.arange(r0, r1, device=u.device) % G,
                              torch.nn.functional.pad(dA_rows, (0, 0, p0, P - p1)))
                _steps(du[r0:r1, :, p0:p1], T).copy_((slab.delta * gB).squeeze(3))
                _steps(ddelta[r0:r1, :, p0:p1], T).copy_(ddelta_s)
        return du, ddelta, dA, dB, dC, None, None, None


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           return_last_state=False, chunk_length=None, slab_budget_bytes=SLAB_BUDGET_BYTES):
    """Chunked selective scan (arguments and shapes as :func:`mambaseg.ops.selective_scan`).

    Args:
        chunk_length: steps per chunk ``T``; default :func:`default_chunk_length`.
        slab_budget_bytes: working memory of one slab of channels (forward and backward).
    """
    out_dtype = u.dtype
    batch, dim, length = u.shape
    u, delta, A, B, C, D, z = prepare_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    Bg, Cg = _group_layout(B, batch, dim, length), _group_layout(C, batch, dim, length)
    G = Bg.shape[0] // batch
    if Cg.shape[0] != Bg.shape[0]:  # one of B/C grouped or fixed, the other shared: give both the finer layout
        G = max(G, Cg.shape[0] // batch)
        Bg = expand_bc(B, batch, dim, length)[:, :: dim // G].reshape(batch * G, -1, length)
        Cg = expand_bc(C, batch, dim, length)[:, :: dim // G].reshape(batch * G, -1, length)
    P = dim // G
    T = chunk_length or default_chunk_length(length)
    pad = (-length) % T
    channel_last = [torch.nn.functional.pad(t, (0, pad)).transpose(1, 2).contiguous()
                    for t in (u.reshape(batch * G, P, length), delta.reshape(batch * G, P, length), Bg, Cg)]
    y, last = ChunkedScanFn.apply(*channel_last[:2], A.reshape(G, P, -1), *channel_last[2:], G, T,
                                  slab_budget_bytes)
    y = y[:, :length].transpose(1, 2).reshape(batch, dim, length)
    out = finish_output(y, u, D, z, out_dtype)
    return (out, last.transpose(1, 2).reshape(batch, dim, -1)) if return_last_state else out
