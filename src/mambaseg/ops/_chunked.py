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

Why it is close to the memory bound: each Python step works on one ``(bg, nc, N, p)`` slice that stays in cache;
the step's input ``delta_t u_t B_t``, its output ``<h_t, C_t>`` and every gradient term are formed from that slice
on the fly. Only the decays ``exp(delta A)`` (forward) and the decays and states (backward) of one slab go through
main memory, once written and once or twice read.

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

#: Bytes that one slab's two working tensors of shape (bg, T, nc, N, p) (decays, states) may use together, fp32.
#: Per-step slices are what must stay in cache; larger slabs mean fewer torch calls.
SLAB_BUDGET_BYTES = 64 * 2**20

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
    """Chunk length ``T``: the power of two nearest ``sqrt(L) / 2``, clamped to [8, 128].

    Each step costs a handful of torch calls on a ``(bg, L / T, N, p)`` slice: a smaller ``T`` means fewer calls,
    a larger one smaller slices that stay in cache. Measured on a 2-core Zen3 (benchmarks/scan.py): T = 16-32 at
    L = 1024-4096.
    """
    if length <= 8:
        return max(length, 1)
    return int(min(128, max(8, 2 ** round(math.log2(math.sqrt(length) / 2)))))


def _group_layout(B: torch.Tensor, batch: int, dim: int, length: int) -> torch.Tensor:
    """Any accepted B/C layout -> ``(batch * G, N, L)`` fp32, G = 1 (shared), G (grouped) or dim (fixed)."""
    if B.dim() == 3:
        return B
    if B.dim() == 4:
        return B.reshape(batch * B.shape[1], B.shape[2], length)
    return expand_bc(B, batch, dim, length).reshape(batch * dim, B.shape[1], length)


def _slabs(n_rows: int, P: int, elems_per_channel: int, budget: int):
    """Yields ``(row0, row1, [(p0, p1), ...])``: row ranges and the channel ranges of each slab inside them.

    A slab's two working tensors fit ``budget`` bytes (at least one channel per slab), and there are at least two
    slabs when there are two channels, so the scratch never exceeds the size of one (B, D, L, N) fp32 tensor.
    """
    per_channel = 2 * 4 * max(elems_per_channel, 1)
    budget = min(budget, n_rows * P * per_channel // 2)  # at least two slabs: scratch <= one (B, D, L, N) tensor
    max_channels = max(1, budget // per_channel)
    if max_channels >= P:
        rows = max(1, max_channels // P)
        for r0 in range(0, n_rows, rows):
            yield r0, min(n_rows, r0 + rows), [(0, P)]
    else:
        width = -(-P // -(-P // max_channels))  # equal slabs: ceil(P / number of slabs)
        for r0 in range(n_rows):
            yield r0, r0 + 1, [(p0, min(P, p0 + width)) for p0 in range(0, P, width)]


def _steps(x: torch.Tensor, T: int) -> torch.Tensor:
    """Step-major view of a channel-last tensor: ``(bg, nc * T, c)`` -> ``(bg, T, nc, c)`` (no copy)."""
    return x.unflatten(1, (-1, T)).transpose(1, 2)


class _Slab:
    """One slab in step-major layout (small tensors only; the (bg, T, nc, N, p) ones are scratch).

    ``delta, u, du = delta * u: (bg, T, nc, 1, p)``; ``B, C: (bg, T, nc, N, 1)``; ``A: (bg, 1, N, p)``.
    """

    def __init__(self, u, delta, B, C, A3, G, T, rows, ps):
        (r0, r1), (p0, p1) = rows, ps
        self.u = _steps(u[r0:r1, :, p0:p1], T).unsqueeze(3).contiguous()
        self.delta = _steps(delta[r0:r1, :, p0:p1], T).unsqueeze(3).contiguous()
        self.du = self.delta * self.u
        self.B, self.C = B, C
        # per-step views, made once: indexing inside the step loops costs more Python time than the small ops
        self.delta_t, self.du_t, self.B_t, self.C_t = (x.unbind(1) for x in (self.delta, self.du, B, C))
        group_of_row = torch.arange(r0, r1, device=u.device) % G
        self.A = A3[group_of_row, p0:p1].transpose(1, 2)[:, None].contiguous()
        self.T = T

    def work_shape(self) -> tuple:
        bg, T, nc = self.delta.shape[:3]
        return (bg, T, nc, self.A.shape[2], self.A.shape[3])

    def decay(self, t: int, out: torch.Tensor) -> torch.Tensor:
        """``a_t = exp(delta_t * A)`` into ``out: (bg, nc, N, p)``."""
        return torch.mul(self.delta_t[t], self.A, out=out).exp_()

    def chunk_decay(self) -> torch.Tensor:
        """``exp(A * sum_t delta_t)`` per chunk: ``(bg, nc, N, p)``."""
        return torch.mul(self.delta.sum(1), self.A).exp_()

    def chunk_starts(self, a: torch.Tensor):
        """Fills ``a`` with the decays; returns the states entering each chunk ``(bg, nc, N, p)`` and the last one.

        A local scan from zero gives each chunk's end state; a scan over chunks links them.
        """
        a_t = a.unbind(1)
        s = torch.mul(self.du_t[0], self.B_t[0])
        self.decay(0, a_t[0])
        for t in range(1, self.T):
            s.mul_(self.decay(t, a_t[t])).addcmul_(self.du_t[t], self.B_t[t])
        ends = _scan_chunks(self.chunk_decay(), s)
        starts = torch.cat([torch.zeros_like(ends[:, :1]), ends[:, :-1]], dim=1)
        return starts, ends[:, -1]


def _contract(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``a @ b`` over the last two dims into ``out``; a broadcast product when the contracted size is 1 (N = 1)."""
    return torch.mul(a, b, out=out) if a.shape[-1] == 1 else torch.matmul(a, b, out=out)


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


def _adjoint_carries(slab: _Slab, a: torch.Tensor, dy: torch.Tensor, carry_in: torch.Tensor) -> torch.Tensor:
    """Adjoint of each chunk's last state arriving from the chunks after it, ``(bg, nc, N, p)``.

    ``a``: the decays ``(bg, T, nc, N, p)``; ``dy: (bg, T, nc, 1, p)``; ``carry_in: (bg, N, p)`` is the adjoint
    from beyond the sequence end (the gradient of the last state).
    """
    T, a_t, dy_t = a.shape[1], a.unbind(1), dy.unbind(1)
    s = torch.mul(dy_t[T - 1], slab.C_t[T - 1])
    for t in range(T - 2, -1, -1):
        s.mul_(a_t[t + 1]).addcmul_(dy_t[t], slab.C_t[t])
    s.mul_(a_t[0])  # each chunk's contribution to the adjoint of the previous chunk's last state
    # carry_c = s_{c+1} + decay_{c+1} carry_{c+1}, carry_{nc-1} = carry_in: a forward scan on the flipped chunks
    flipped_in = torch.cat([carry_in[:, None], s[:, 1:].flip(1)], dim=1)
    flipped_decay = torch.cat([torch.zeros_like(carry_in[:, None]), slab.chunk_decay()[:, 1:].flip(1)], dim=1)
    return _scan_chunks(flipped_decay, flipped_in).flip(1)


class ChunkedScanFn(torch.autograd.Function):
    """Core scan ``y_t = <h_t, C_t>`` on fp32 channel-last inputs, with the delta bias and softplus folded in.

    Inputs: ``u, delta: (BG, Lp, P)`` zero-padded from ``length`` to ``Lp``, a multiple of ``T``; ``A3: (G, P, N)``;
    ``B, C: (BG, Lp, N)``; ``bias: (G, P)`` or None. Outputs: ``y: (BG, Lp, P)`` and ``last_state: (BG, N, P)``.
    Folding ``softplus(delta + bias)`` in saves its autograd graph: the backward needs only the activated delta,
    since ``softplus'(x) = 1 - exp(-softplus(x))``.
    """

    @staticmethod
    def forward(ctx, u, delta, A3, B_cl, C_cl, bias, G, T, budget, softplus, length):
        BG, Lp, P = u.shape
        if bias is not None:
            delta = delta + bias.repeat(BG // G, 1)[:, None, :]  # row r = (b, g) uses bias[g]
        if softplus:
            delta = torch.nn.functional.softplus(delta)
        if (bias is not None or softplus) and length < Lp:
            delta[:, length:] = 0  # padded steps stay neutral: decay 1, no input
        N = A3.shape[-1]
        y = u.new_empty(BG, Lp, P)
        last_state = u.new_empty(BG, N, P)
        starts_all = u.new_empty(BG, Lp // T, N, P)
        for r0, r1, p_ranges in _slabs(BG, P, Lp * N, budget):
            B, C = (_steps(t[r0:r1], T).unsqueeze(4).contiguous() for t in (B_cl, C_cl))  # (bg, T, nc, N, 1)
            C_row = C.transpose(-1, -2)  # (bg, T, nc, 1, N)
            for p0, p1 in p_ranges:
                slab = _Slab(u, delta, B, C, A3, G, T, (r0, r1), (p0, p1))
                (a,) = _scratch(u, slab.work_shape(), 1)
                starts, last = slab.chunk_starts(a)
                h = starts.clone()
                ys = u.new_empty(T, *slab.delta_t[0].shape)  # (T, bg, nc, 1, p), step-outer: out= slices
                for a_t, du_t, B_t, C_t, y_t in zip(a.unbind(1), slab.du_t, slab.B_t, C_row.unbind(1), ys):
                    h.mul_(a_t).addcmul_(du_t, B_t)
                    _contract(C_t, h, y_t)
                _steps(y[r0:r1, :, p0:p1], T).copy_(ys.squeeze(3).transpose(0, 1))
                last_state[r0:r1, :, p0:p1] = last
                starts_all[r0:r1, :, :, p0:p1] = starts
        ctx.save_for_backward(u, delta, A3, B_cl, C_cl, starts_all)
        ctx.G, ctx.T, ctx.budget, ctx.length = G, T, budget, length
        ctx.softplus, ctx.has_bias = softplus, bias is not None
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
        dy = dy if dy is not None else torch.zeros_like(u)
        for r0, r1, p_ranges in _slabs(BG, P, Lp * N, ctx.budget):
            B, C = (_steps(t[r0:r1], T).unsqueeze(4).contiguous() for t in (B_cl, C_cl))
            B_row = B.transpose(-1, -2)  # (bg, T, nc, 1, N)
            for p0, p1 in p_ranges:
                slab = _Slab(u, delta, B, C, A3, G, T, (r0, r1), (p0, p1))
                dys = _steps(dy[r0:r1, :, p0:p1], T).unsqueeze(3).contiguous()  # (bg, T, nc, 1, p)
                dy_col, du_col = (x.transpose(-1, -2).contiguous() for x in (dys, slab.du))  # (bg, T, nc, p, 1)
                a, h = _scratch(u, slab.work_shape(), 2)
                starts = starts_all[r0:r1, :, :, p0:p1]
                a_t, h_t = a.unbind(1), h.unbind(1)
                prev_t = (starts,) + h_t[:-1]  # h_{t-1}
                for t in range(T):  # recompute decays and states
                    torch.mul(slab.decay(t, a_t[t]), prev_t[t], out=h_t[t]).addcmul_(slab.du_t[t], slab.B_t[t])
                carry = dlast[r0:r1, :, p0:p1] if dlast is not None else torch.zeros_like(starts[:, 0])
                g = _adjoint_carries(slab, a, dys, carry)  # becomes the state adjoint g_t, step by step
                w = torch.empty_like(g)
                dA_acc = torch.zeros_like(g)
                # per-step results, step-outer so that each step writes one contiguous slice
                dCs, dBs = (u.new_empty(T, *g.shape[:-1], 1) for _ in range(2))  # (T, bg, nc, N, 1)
                gBs, wAs = (u.new_empty(T, *dys[:, 0].shape) for _ in range(2))  # (T, bg, nc, 1, p)
                dys_t, dy_col_t, du_col_t, B_row_t = (x.unbind(1) for x in (dys, dy_col, du_col, B_row))
                for t in range(T - 1, -1, -1):
                    if t < T - 1:
                        g.mul_(a_t[t + 1])
                    g.addcmul_(dys_t[t], slab.C_t[t])  # g_t = dy_t C_t + a_{t+1} g_{t+1}
                    torch.matmul(h_t[t], dy_col_t[t], out=dCs[t])  # sum_p dy_t h_t
                    torch.matmul(g, du_col_t[t], out=dBs[t])  # sum_p g_t delta_t u_t
                    _contract(B_row_t[t], g, gBs[t])  # sum_n g_t B_t
                    # w_t = d loss / d log(a_t) = g_t a_t h_{t-1}; feeds d delta (via A) and d A (via delta)
                    torch.mul(g, a_t[t], out=w).mul_(prev_t[t])
                    dA_acc.addcmul_(w, slab.delta_t[t])
                    torch.sum(w.mul_(slab.A), 2, keepdim=True, out=wAs[t])

                def by_step(x):  # (T, bg, nc, c, 1) or (T, bg, nc, 1, c) -> (bg, T, nc, c)
                    return x.flatten(3).transpose(0, 1)

                gB = by_step(gBs)
                _steps(du[r0:r1, :, p0:p1], T).copy_(slab.delta.squeeze(3) * gB)
                _steps(ddelta[r0:r1, :, p0:p1], T).copy_(by_step(wAs).addcmul_(slab.u.squeeze(3), gB))
                _steps(dC[r0:r1], T).add_(by_step(dCs))
                _steps(dB[r0:r1], T).add_(by_step(dBs))
                dA_rows = dA_acc.sum(1).transpose(1, 2)  # (bg, p, N)
                dA.index_add_(0, torch.arange(r0, r1, device=u.device) % G,
                              torch.nn.functional.pad(dA_rows, (0, 0, p0, P - p1)))
        if ctx.softplus:
            ddelta.mul_(-torch.expm1(-delta))  # softplus'(x) = sigmoid(x) = 1 - exp(-softplus(x))
        dbias = ddelta[:, :ctx.length].sum(1).view(-1, G, P).sum(0) if ctx.has_bias else None
        return du, ddelta, dA, dB, dC, dbias, None, None, None, None, None


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           return_last_state=False, chunk_length=None, slab_budget_bytes=SLAB_BUDGET_BYTES):
    """Chunked selective scan (arguments and shapes as :func:`mambaseg.ops.selective_scan`).

    Args:
        chunk_length: steps per chunk ``T``; default :func:`default_chunk_length`.
        slab_budget_bytes: working memory of one slab of channels (forward and backward).
    """
    out_dtype = u.dtype
    batch, dim, length = u.shape
    u, delta, A, B, C, D, z = prepare_inputs(u, delta, A, B, C, D, z, None, False)  # bias, softplus: in the Function
    Bg, Cg = _group_layout(B, batch, dim, length), _group_layout(C, batch, dim, length)
    G = Bg.shape[0] // batch
    if Cg.shape[0] != Bg.shape[0]:  # one of B/C grouped or fixed, the other shared: give both the finer layout
        G = max(G, Cg.shape[0] // batch)
        Bg = expand_bc(B, batch, dim, length)[:, :: dim // G].reshape(batch * G, -1, length)
        Cg = expand_bc(C, batch, dim, length)[:, :: dim // G].reshape(batch * G, -1, length)
    P = dim // G
    T = chunk_length or default_chunk_length(length)
    pad = (-length) % T
    channel_last = [(torch.nn.functional.pad(t, (0, pad)) if pad else t).transpose(1, 2).contiguous()
                    for t in (u.reshape(batch * G, P, length), delta.reshape(batch * G, P, length), Bg, Cg)]
    bias = delta_bias.float().reshape(G, P) if delta_bias is not None else None
    y, last = ChunkedScanFn.apply(*channel_last[:2], A.reshape(G, P, -1), *channel_last[2:], bias, G, T,
                                  slab_budget_bytes, delta_softplus, length)
    y = y[:, :length].transpose(1, 2).reshape(batch, dim, length)
    out = finish_output(y, u, D, z, out_dtype)
    return (out, last.transpose(1, 2).reshape(batch, dim, -1)) if return_last_state else out
