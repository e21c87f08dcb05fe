"""Two-level chunked selective scan in pure PyTorch, with its own memory-lean backward.

Same semantics as :mod:`mambaseg.ops._reference` (mamba_ssm's ``selective_scan_fn``); runs on any device.

Why it is fast: the sequence of length L is cut into ``nc`` chunks of ``T`` steps (``T ~ sqrt(L)``). Everything
that does not depend on the recurrence is done for a whole slab at once: the decays ``exp(delta A)``, the inputs
``delta u B``, the output contraction ``<h, C>`` and every gradient term (batched matrix products and products
over the slab). Only the recurrence itself runs step by step, one fused ``addcmul`` per step that updates the
states of *all* chunks and channels of the slab, so a scan costs ``O(T + nc)`` torch calls instead of ``O(L)``
(``O(T + log nc)`` for small states). Chunks are linked by a scan over their boundary states. The structure follows
the CUDA kernel of mamba_ssm (chunks with a carried state, states recomputed in the backward, decays as ``exp2`` of a
``log2(e)``-scaled ``A``; torch's ``exp2`` also ran 3-4x faster than its ``exp`` on the CPU).

Why it is stable: the only exponentials are ``exp(delta * A)`` and ``exp(A * sum(delta))`` over a chunk, both of
non-positive arguments for the usual ``A < 0, delta >= 0`` (never the "ratio trick" ``exp(-cumsum)``, which
overflows once a chunk's decay exceeds ~88 in fp32).

Why it is lean: between forward and backward only the inputs and the chunk-start states ``(B, D, nc, N)`` are
kept, ``T`` times fewer than the per-step states; the backward recomputes the states one slab at a time, within a
memory budget. Intermediate results live in one workspace per thread that every call reuses.

Layout inside: channels are regrouped as ``(BG, P)`` with ``BG = batch * groups`` and ``P = dim // groups`` so
grouped B/C broadcast over ``P`` without being copied per channel; inputs are staged channel-last, and one slab is
a range of ``BG`` rows or of chunks inside one row, with every channel, laid out step-major ``(bg, T, nc, N, P)``:
every per-step slice is contiguous (for one row) and the channel axis is innermost (long vectorised loops; B/C
broadcast along it with stride 0).
"""

from __future__ import annotations

import itertools
import math
import threading

import torch

from mambaseg.layers.layout import copy_in_slabs_

from ._checks import expand_bc
from ._reference import finish_output, prepare_inputs

#: Working tensors of shape (bg, T, nc, N, p) that one slab needs: decays, states and (backward) state adjoints.
WORK_TENSORS = 3
#: Bytes that one slab's working tensors may use together, fp32. Whole-slab passes run at cache speed while the slab
#: stays in the last-level cache (32 MB on the 2-core Zen machine of benchmarks/results/scan.md); larger slabs mean
#: fewer torch calls.
SLAB_BUDGET_BYTES = 24 * 2**20

_WORKSPACE = threading.local()
LOG2E = math.log2(math.e)


def _workspace(like: torch.Tensor, shapes: list[tuple]) -> list[torch.Tensor]:
    """Uninitialised fp32 tensors of the given shapes for intermediate results of one call.

    On CPU they are carved from one buffer cached per thread and reused by every call: a fresh multi-MB tensor costs
    a page fault per 4 KiB on first touch (as much time as the arithmetic that fills it), and glibc hands such
    blocks back to the system after each call. On GPU the caching allocator already reuses memory, so plain
    allocations are used.
    """
    if like.device.type != "cpu":
        return [like.new_empty(shape, dtype=torch.float32) for shape in shapes]
    sizes = [math.prod(shape) for shape in shapes]
    buf = getattr(_WORKSPACE, "buffer", None)
    if buf is None or buf.numel() < sum(sizes):
        buf = _WORKSPACE.buffer = torch.empty(sum(sizes), dtype=torch.float32)
    offsets = [0, *itertools.accumulate(sizes)]
    return [buf[o:o + n].view(shape) for o, n, shape in zip(offsets, sizes, shapes)]


def _split(flat: torch.Tensor, shape: tuple, count: int) -> list[torch.Tensor]:
    """``count`` tensors of ``shape`` from the front of a flat workspace tensor."""
    n = math.prod(shape)
    return [flat[i * n:(i + 1) * n].view(shape) for i in range(count)]


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


def _slabs(n_rows: int, n_chunks: int, chunk_elems: int, budget: int):
    """Yields ``(r0, r1, c0, c1)``: slabs of rows ``r0:r1`` and chunks ``c0:c1``, each row's chunks in order.

    A slab's :data:`WORK_TENSORS` working tensors (``chunk_elems`` fp32 elements per chunk and row, all channels)
    fit ``budget`` bytes, at least one chunk per slab, and there are at least that many slabs when there are enough
    chunks, so the scratch never exceeds the size of one (B, D, L, N) fp32 tensor. Slabs keep every channel: the
    channel axis is the innermost one of all the whole-slab products, the longer it is the faster they run.
    """
    per_chunk = WORK_TENSORS * 4 * max(chunk_elems, 1)
    budget = min(budget, n_rows * n_chunks * per_chunk // WORK_TENSORS)  # scratch <= one (B, D, L, N) tensor
    max_chunks = max(1, budget // per_chunk)
    if max_chunks >= n_chunks:
        rows = max(1, max_chunks // n_chunks)
        for r0 in range(0, n_rows, rows):
            yield r0, min(n_rows, r0 + rows), 0, n_chunks
    else:
        width = -(-n_chunks // -(-n_chunks // max_chunks))  # equal slabs: ceil(nc / number of slabs)
        for r0 in range(n_rows):
            for c0 in range(0, n_chunks, width):
                yield r0, r0 + 1, c0, min(n_chunks, c0 + width)


def _steps(x: torch.Tensor, T: int) -> torch.Tensor:
    """Step-major view of a channel-last tensor: ``(bg, nc * T, c)`` -> ``(bg, T, nc, c)`` (no copy)."""
    return x.unflatten(1, (-1, T)).transpose(1, 2)


class _Slab:
    """One slab in step-major layout: rows ``r0:r1`` of the ``BG`` rows, chunks ``c0:c1``, every channel.

    ``delta, u, du = delta * u: (bg, T, nc, 1, P)`` (delta biased, activated, zero on padded steps);
    ``B, C: (bg, T, nc, N, 1)``; ``A: (bg, 1, 1, N, P)``; ``D: (bg, 1, 1, 1, P)`` or None, where ``nc = c1 - c0``.
    The ``(bg, T, nc, N, P)`` tensors it fills are scratch; every per-step slice ``[:, t]`` of them is contiguous
    for one row.
    """

    def __init__(self, u, delta, B_cl, C_cl, A3, D, bias, softplus, length, G, T, slab, for_backward=False):
        r0, r1, c0, c1 = slab
        self.rows, self.steps = slice(r0, r1), slice(c0 * T, c1 * T)
        self.T = T
        self.group_of_row = torch.arange(r0, r1, device=u.device) % G
        self.u = self.take(u).unsqueeze(3).contiguous()
        raw = self.take(delta).unsqueeze(3)
        self.delta = torch.empty(raw.shape, dtype=raw.dtype, device=raw.device)  # never a view of the input
        if bias is not None:
            torch.add(raw, self.per_row(bias), out=self.delta)
        else:
            self.delta.copy_(raw)
        self.softplus_grad = None  # d delta / d (delta + bias) where softplus is on
        if softplus:
            self.softplus_grad = torch.sigmoid(self.delta) if for_backward else None
            self.delta = torch.nn.functional.softplus(self.delta)
        self.first_padded = length - (c1 - 1) * T if c1 * T > length else None  # padding: in the last chunk only
        self.zero_padding_(self.delta)  # padded steps stay neutral: decay 1, no input
        self.du = self.delta * self.u
        self.B, self.C = (self.take(x).unsqueeze(4).contiguous() for x in (B_cl, C_cl))
        self.A = A3[self.group_of_row].transpose(1, 2)[:, None, None].contiguous()
        self.A_log2e = self.A * LOG2E  # decays as exp2: torch's exp2 ran 3-4x faster than its exp on the CPU
        self.D = self.per_row(D) if D is not None else None

    def zero_padding_(self, x: torch.Tensor) -> torch.Tensor:
        """Zeroes the padded steps of a step-major ``(bg, T, nc, ...)`` slab tensor in place."""
        if self.first_padded is not None:
            x[:, self.first_padded:, -1] = 0
        return x

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """This slab's part of a channel-last ``(BG, Lp, c)`` tensor, step-major ``(bg, T, nc, c)`` (a view)."""
        return _steps(x[self.rows, self.steps], self.T)

    def per_row(self, x: torch.Tensor) -> torch.Tensor:
        """A per-group channel vector ``(G, P)`` for this slab's rows, as ``(bg, 1, 1, 1, P)``."""
        return x[self.group_of_row][:, None, None, None]

    def work_shape(self) -> tuple:
        return self.delta.shape[:3] + self.A.shape[3:]

    def decays(self, out: torch.Tensor) -> torch.Tensor:
        """``a_t = exp(delta_t * A) = 2^(delta_t * A log2(e))`` of every step into ``out: (bg, T, nc, N, P)``."""
        return torch.mul(self.delta, self.A_log2e, out=out).exp2_()

    def inputs(self, out: torch.Tensor) -> torch.Tensor:
        """``x_t = delta_t u_t B_t`` of every step into ``out: (bg, T, nc, N, P)``."""
        return torch.mul(self.du, self.B, out=out)

    def chunk_decay(self) -> torch.Tensor:
        """``exp(A * sum_t delta_t)`` per chunk: ``(bg, nc, N, P)``."""
        return torch.mul(self.delta.sum(1), self.A_log2e[:, 0]).exp2_()


def _batches(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``(bg, T, nc, ...)`` -> ``(bg * T * nc, rows, cols)``: one small matrix per (row, step, chunk) (a view)."""
    return x.view(-1, rows, cols)


def _contract(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched ``a @ b`` of ``(K, m, k) @ (K, k, n)``; a broadcast product when the contracted size is 1 (N = 1)."""
    return torch.mul(a, b) if a.shape[-1] == 1 else torch.bmm(a, b)


def _scan_chunks(decay: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Inclusive linear scan along dim 1: ``E_c = decay_c * E_{c-1} + x_c`` (``E_{-1} = 0``) on ``(bg, nc, N, P)``.

    One fused step per chunk while a chunk's slice is large against the number of chunks; otherwise Hillis-Steele
    doubling, ``2 log2(nc)`` whole-tensor ops (on this CPU the step loop ran up to 2x faster at N = 16, doubling up to
    2x faster at N = 1; the two break even near ``bg N P = 3 nc``). Products of decays only shrink, so nothing can
    overflow.
    """
    x = x.clone()
    nc = x.shape[1]
    if x[:, 0].numel() >= 3 * nc:
        x_c, decay_c = x.unbind(1), decay.unbind(1)
        for c in range(1, nc):
            x_c[c].addcmul_(decay_c[c], x_c[c - 1])
        return x
    decay, k = decay.clone(), 1
    while k < nc:
        x[:, k:] = torch.addcmul(x[:, k:], decay[:, k:], x[:, :-k])
        if 2 * k < nc:
            decay[:, k:] = decay[:, k:] * decay[:, :-k]
        k *= 2
    return x


def _scan_states(a: torch.Tensor, x: torch.Tensor, chunk_decay: torch.Tensor | None, starts: torch.Tensor):
    """States ``h_t = a_t h_{t-1} + x_t`` of every step, written over ``x`` (``a, x: (bg, T, nc, N, P)``).

    Without ``chunk_decay`` ``starts`` holds the state entering each chunk ``(bg, nc, N, P)`` and one pass
    suffices. With it (the product of each chunk's decays), ``starts: (bg, N, P)`` is the state entering the first
    chunk: a first pass from zero gives each chunk's end state and a scan over chunks links them.
    Returns the chunk-start states ``(bg, nc, N, P)``.
    """
    a_t, x_t = a.unbind(1), x.unbind(1)
    if chunk_decay is not None:
        s = x_t[0].clone()
        for t in range(1, len(x_t)):
            torch.addcmul(x_t[t], a_t[t], s, out=s)
        s[:, 0].addcmul_(chunk_decay[:, 0], starts)
        ends = _scan_chunks(chunk_decay, s)
        starts = torch.cat([starts[:, None], ends[:, :-1]], dim=1)
    prev = starts
    for t in range(len(x_t)):
        prev = torch.addcmul(x_t[t], a_t[t], prev, out=x_t[t])
    return starts


def _scan_adjoints(a: torch.Tensor, y: torch.Tensor, chunk_decay: torch.Tensor, carry_in: torch.Tensor):
    """State adjoints ``g_t = a_{t+1} g_{t+1} + y_t`` of every step, written over ``y`` (reverse time).

    ``y_t = dy_t C_t`` is the direct gradient of each state; ``carry_in: (bg, N, P)`` is the adjoint of the last
    state arriving from beyond the slab (the gradient of the last state, or the slab after). Like
    :func:`_scan_states` in reverse: a first pass gives each chunk's contribution to the adjoint of the previous
    chunk's last state, a scan over the flipped chunks links them, a second pass writes ``g``. Returns the
    adjoint of the state entering the slab ``(bg, N, P)``.
    """
    a_t, y_t = a.unbind(1), y.unbind(1)
    T = len(y_t)
    s = y_t[T - 1].clone()
    for t in range(T - 2, -1, -1):
        torch.addcmul(y_t[t], a_t[t + 1], s, out=s)
    s.mul_(a_t[0])
    # carry_c = s_{c+1} + decay_{c+1} carry_{c+1}, carry_{nc-1} = carry_in: a forward scan on the flipped chunks
    flipped_in = torch.cat([carry_in[:, None], s[:, 1:].flip(1)], dim=1)
    flipped_decay = torch.cat([torch.zeros_like(carry_in[:, None]), chunk_decay[:, 1:].flip(1)], dim=1)
    carry = _scan_chunks(flipped_decay, flipped_in).flip(1)
    y_t[T - 1].add_(carry)
    for t in range(T - 2, -1, -1):
        torch.addcmul(y_t[t], a_t[t + 1], y_t[t + 1], out=y_t[t])
    return s[:, 0].addcmul_(chunk_decay[:, 0], carry[:, 0])


def _to_channel_last_(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Fills ``out: (R, Lp, c)`` with ``x: (R, c, L)`` transposed, zero-padded from ``L`` to ``Lp`` steps.

    On the CPU the copy runs over blocks of 8 channels: a plain copy of the transposed view walks all ``c`` rows,
    ``L`` elements apart, for every step, and ran 2-4x slower at the benchmark shapes (benchmarks/results/scan.md).
    """
    L = x.shape[2]
    out[:, L:] = 0
    copy_in_slabs_(out[:, :L], x.transpose(1, 2), dim=2, width=8)
    return out


def _channel_major(x: torch.Tensor, length: int) -> torch.Tensor:
    """``(R, Lp, c)`` -> a new ``(R, c, L)`` tensor, the padding dropped (a plain copy is fast in this direction)."""
    return x[:, :length].transpose(1, 2).contiguous()


def _plan(BG: int, P: int, N: int, length: int, T: int, budget: int):
    """Slabs of one call and the size of the largest: ``(padded length, [(r0, r1, c0, c1), ...], elements)``."""
    Lp = -(-length // T) * T
    slabs = list(_slabs(BG, Lp // T, T * N * P, budget))
    return Lp, slabs, max((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in slabs) * T * N * P


class ChunkedScanFn(torch.autograd.Function):
    """Core scan ``y_t = <h_t, C_t> + D u_t`` with the delta bias and softplus folded in; channel-major in and out.

    Inputs: ``u, delta: (BG, P, L)``; ``A3: (G, P, N)``; ``B, C: (BG, N, L)``; ``D, bias: (G, P)`` or None (row
    ``r`` of the ``BG = batch * G`` rows belongs to group ``r % G``). Outputs: ``y: (BG, P, L)`` and
    ``last_state: (BG, N, P)``. Inside, the sequence is zero-padded to a multiple of ``T`` and laid out
    channel-last in the workspace, forward and backward alike: only the inputs and the chunk-start states are kept
    between the two. Folding the bias, softplus and skip term in keeps their whole-tensor autograd graph (and its
    allocations) away: the backward recomputes the activated delta and ``softplus' = sigmoid`` slab by slab.
    """

    @staticmethod
    def forward(ctx, u, delta, A3, B, C, D, bias, G, T, budget, softplus):
        BG, P, length = u.shape
        N = A3.shape[-1]
        Lp, slabs, work = _plan(BG, P, N, length, T, budget)
        *staged, y, flat = _workspace(u, [(BG, Lp, P)] * 2 + [(BG, Lp, N)] * 2 + [(BG, Lp, P), (2 * work,)])
        u_cl, delta_cl, B_cl, C_cl = (_to_channel_last_(o, x) for o, x in zip(staged, (u, delta, B, C)))
        last_state = u.new_zeros(BG, N, P)  # carried from slab to slab along each row: ends as the last state
        starts_all = u.new_empty(BG, Lp // T, N, P)
        for r0, r1, c0, c1 in slabs:
            slab = _Slab(u_cl, delta_cl, B_cl, C_cl, A3, D, bias, softplus, length, G, T, (r0, r1, c0, c1))
            a, h = _split(flat, slab.work_shape(), 2)
            slab.decays(a)
            starts_all[r0:r1, c0:c1] = _scan_states(a, slab.inputs(h), slab.chunk_decay(), last_state[r0:r1])
            ys = _contract(_batches(slab.C, 1, N), _batches(h, N, P)).view(slab.u.shape)  # sum_n C_t h_t
            if slab.D is not None:
                ys.addcmul_(slab.D, slab.u)
            slab.take(y).copy_(ys.squeeze(3))
            last_state[r0:r1] = h[:, -1, -1]
        ctx.save_for_backward(u, delta, A3, B, C, D, bias, starts_all)
        ctx.G, ctx.T, ctx.budget, ctx.softplus = G, T, budget, softplus
        return _channel_major(y, length), last_state

    @staticmethod
    def backward(ctx, dy, dlast):
        u_in, delta_in, A3, B_in, C_in, D, bias, starts_all = ctx.saved_tensors
        G, T = ctx.G, ctx.T
        BG, P, length = u_in.shape
        N = A3.shape[-1]
        Lp, slabs, work = _plan(BG, P, N, length, T, ctx.budget)
        *staged, du, ddelta, dB, dC, flat = _workspace(
            u_in, [(BG, Lp, P)] * 3 + [(BG, Lp, N)] * 2 + [(BG, Lp, P)] * 2 + [(BG, Lp, N)] * 2 + [(3 * work,)])
        if dy is None:
            dy = torch.zeros_like(u_in)
        u, delta, dy, B_cl, C_cl = (_to_channel_last_(o, x) for o, x in zip(staged, (u_in, delta_in, dy, B_in, C_in)))
        dA = torch.zeros_like(A3)
        dD = torch.zeros_like(D) if D is not None else None
        dbias = torch.zeros_like(bias) if bias is not None else None
        carry = dlast.clone() if dlast is not None else u.new_zeros(BG, N, P)  # from later slabs, per row
        for r0, r1, c0, c1 in reversed(slabs):
            slab = _Slab(u, delta, B_cl, C_cl, A3, D, bias, ctx.softplus, length, G, T, (r0, r1, c0, c1),
                         for_backward=True)
            dys = slab.take(dy).unsqueeze(3).contiguous()  # (bg, T, nc, 1, P)
            a, h, g = _split(flat, slab.work_shape(), 3)
            starts = starts_all[r0:r1, c0:c1]
            slab.decays(a)
            _scan_states(a, slab.inputs(h), None, starts)  # recomputed states
            carry[r0:r1] = _scan_adjoints(a, torch.mul(dys, slab.C, out=g), slab.chunk_decay(), carry[r0:r1])
            hT, gT = (_batches(x, N, P).transpose(1, 2) for x in (h, g))  # (bg T nc, P, N) views
            slab.take(dC).copy_(_contract(_batches(dys, 1, P), hT).view(dys.shape[:3] + (N,)))  # sum_p dy_t h_t
            slab.take(dB).copy_(_contract(_batches(slab.du, 1, P), gT).view(dys.shape[:3] + (N,)))  # sum_p g du
            gB = _contract(_batches(slab.B, 1, N), _batches(g, N, P)).view(dys.shape)  # sum_n g_t B_t
            # w_t = d loss / d log(a_t) = g_t a_t h_{t-1}; feeds d delta (via A) and d A (via delta)
            w = g.mul_(a)
            w[:, 1:].mul_(h[:, :-1])
            w[:, 0].mul_(starts)
            dA_rows = torch.mul(w, slab.delta, out=h).sum((1, 2)).transpose(1, 2)  # (bg, P, N)
            dA.index_add_(0, slab.group_of_row, dA_rows)
            d_delta = w.mul_(slab.A).sum(3, keepdim=True).addcmul_(slab.u, gB)  # (bg, T, nc, 1, P)
            if slab.softplus_grad is not None:
                d_delta.mul_(slab.softplus_grad)
            slab.take(ddelta).copy_(slab.zero_padding_(d_delta).squeeze(3))
            d_u = gB.mul_(slab.delta)
            if D is not None:
                d_u.addcmul_(slab.D, dys)
                dD.index_add_(0, slab.group_of_row, (dys * slab.u).sum((1, 2, 3)))
            slab.take(du).copy_(d_u.squeeze(3))
            if bias is not None:
                dbias.index_add_(0, slab.group_of_row, d_delta.sum((1, 2, 3)))
        du, ddelta, dB, dC = (_channel_major(x, length) for x in (du, ddelta, dB, dC))
        return du, ddelta, dA, dB, dC, dD, dbias, None, None, None, None


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           return_last_state=False, chunk_length=None, slab_budget_bytes=SLAB_BUDGET_BYTES):
    """Chunked selective scan (arguments and shapes as :func:`mambaseg.ops.selective_scan`).

    Args:
        chunk_length: steps per chunk ``T``; default :func:`default_chunk_length`.
        slab_budget_bytes: working memory of one slab of chunks (forward and backward).
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
    per_group = [x.reshape(G, P) if x is not None else None for x in (D, delta_bias)]
    if per_group[1] is not None:
        per_group[1] = per_group[1].float()
    y, last = ChunkedScanFn.apply(u.reshape(batch * G, P, length), delta.reshape(batch * G, P, length),
                                  A.reshape(G, P, -1), Bg, Cg, *per_group, G,
                                  chunk_length or default_chunk_length(length), slab_budget_bytes, delta_softplus)
    out = finish_output(y.view(batch, dim, length), u, None, z, out_dtype)
    return (out, last.transpose(1, 2).reshape(batch, dim, -1)) if return_last_state else out
