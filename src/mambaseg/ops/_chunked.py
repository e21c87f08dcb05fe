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
grouped B/C broadcast over ``P`` without being copied per channel. One slab is a range of ``BG`` rows or of chunks
inside one row, with every channel, seen step-major ``(bg, T, nc, N, P)``. For ``N > 1`` it is stored that way
(inputs staged channel-last row by row): every per-step slice is contiguous and the channel axis innermost (long
vectorised loops; B/C broadcast along it with stride 0). For ``N = 1`` it is stored channel-major, as the inputs
come, which saves the transposing copies that would otherwise cost more than the scan (:func:`channel_last`).
Outputs are written slab by slab straight into the channel-major results.
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
#: Tensors of shape (bg, T, nc, 1, P) in the workspace of one slab: delta, delta * u and softplus'.
SLAB_CHANNEL_TENSORS = 3
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


def clear_workspace() -> None:
    """Frees the CPU scratch buffer of the calling thread (it is re-created on the next chunked scan)."""
    _WORKSPACE.buffer = None


def default_chunk_length(length: int, d_state: int = 16) -> int:
    """Chunk length ``T``: 8 at ``N = 1``; otherwise the power of two nearest ``sqrt(L) / 2``, clamped to [8, 128].

    Each step costs a handful of torch calls on a ``(bg, L / T, N, p)`` slice: a smaller ``T`` means fewer calls,
    a larger one smaller slices that stay in cache. Measured on a 2-core Zen3 (benchmarks/scan.py): T = 16-32 at
    L = 1024-4096 for N = 16; at N = 1 (channel-major, strided per-step slices) T = 8 ran fastest at every L from
    1024 to 32768, 10-40% ahead of T = 4, 16 and 32.
    """
    if length <= 8:
        return max(length, 1)
    if d_state == 1:
        return 8
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
    chunks, so they take about the size of one (B, D, L, N) fp32 tensor at most (with the :data:`SLAB_CHANNEL_TENSORS`,
    the per-slab scratch stays within about 2x of it at N = 1 and 51/48 at N = 16). Slabs keep every channel: the
    channel axis is the innermost one of all the whole-slab products, the longer it is the faster they run.
    """
    per_chunk = WORK_TENSORS * 4 * max(chunk_elems, 1)
    third = -(-n_rows * n_chunks // WORK_TENSORS)  # chunks of all rows / 3, rounded up: about one (B, D, L, N) tensor
    max_chunks = max(1, min(budget // per_chunk, third))
    if max_chunks >= n_chunks:
        rows = max(1, max_chunks // n_chunks)
        for r0 in range(0, n_rows, rows):
            yield r0, min(n_rows, r0 + rows), 0, n_chunks
    else:
        width = -(-n_chunks // -(-n_chunks // max_chunks))  # equal slabs: ceil(nc / number of slabs)
        for r0 in range(n_rows):
            for c0 in range(0, n_chunks, width):
                yield r0, r0 + 1, c0, min(n_chunks, c0 + width)


def channel_last(N: int) -> bool:
    """Memory layout of a call's slab tensors: channel-last for ``N > 1``, channel-major (as the inputs come) for
    ``N = 1``.

    Channel-last makes every per-step slice contiguous and lets B/C broadcast along the innermost axis, but needs a
    transposing copy of each input and output (u, delta, dy in; y, du, d delta out). At ``N = 1`` those copies cost
    more than the whole scan (about 4 of 12 ms at (1, 96, 4096, 1) on the benchmark CPU), while strided per-step
    slices cost little; at ``N = 16`` it is the other way round.
    """
    return N > 1


def _steps(x: torch.Tensor, T: int, last: bool) -> torch.Tensor:
    """Step-major view ``(bg, T, nc, c)`` (no copy) of a slab tensor stored channel-last ``(bg, nc T, c)`` or
    channel-major ``(bg, c, nc T)``."""
    return x.unflatten(1, (-1, T)).transpose(1, 2) if last else x.unflatten(2, (-1, T)).permute(0, 3, 2, 1)


def _layout(shape: tuple, last: bool, flat: torch.Tensor, count: int) -> list[torch.Tensor]:
    """``count`` uninitialised step-major ``(bg, T, nc, n, p)`` tensors carved one after another from the front of
    the flat workspace tensor ``flat``, stored channel-last (as that shape) or channel-major (``(bg, p, n, nc, T)``)."""
    order = (0, 1, 2, 3, 4) if last else (0, 4, 3, 2, 1)  # stored axis i holds step-major axis order[i]
    stored = tuple(shape[i] for i in order)
    return list(flat[:count * math.prod(stored)].view(count, *stored).permute(0, *(i + 1 for i in order)).unbind(0))


class _Rows:
    """Per-row parameters of one call, each row ``r`` of the ``BG = batch * G`` rows from group ``r % G``:
    ``group: (BG,)``; ``A, A_log2e: (BG, 1, 1, N, P)``; ``D, bias: (BG, 1, 1, 1, P)`` or None."""

    def __init__(self, A3, D, bias, n_rows: int):
        G = A3.shape[0]
        self.group = torch.arange(n_rows, device=A3.device) % G
        self.A = A3[self.group].transpose(1, 2)[:, None, None].contiguous()
        self.A_log2e = self.A * LOG2E  # decays as exp2: torch's exp2 ran 3-4x faster than its exp on the CPU
        self.D, self.bias = (x[self.group][:, None, None, None] if x is not None else None for x in (D, bias))


class _Slab:
    """One slab in step-major layout: rows ``r0:r1`` of the ``BG`` rows, chunks ``c0:c1``, every channel.

    Built from step-major views ``(bg, T, nc, c)`` of the slab's inputs (zero past the end of the sequence), in the
    layout of :func:`channel_last`, which every tensor it makes keeps. ``delta, du = delta * u: (bg, T, nc, 1, P)``
    (delta biased, activated, zero on padded steps); ``u`` the same shape (a view); ``B, C: (bg, T, nc, N, 1)``;
    ``A, A_log2e: (bg, 1, 1, N, P)``; ``D: (bg, 1, 1, 1, P)`` or None; ``group: (bg,)``, where ``nc = c1 - c0``.
    ``delta``, ``du`` and ``softplus_grad`` live in ``scratch``, a flat workspace tensor of
    :data:`SLAB_CHANNEL_TENSORS` ``(bg, T, nc, 1, P)`` tensors: nothing per slab is allocated, so the peak memory
    does not depend on how the allocator recycles blocks.
    """

    def __init__(self, u, delta, B, C, rows: _Rows, softplus, length, T, slab, last, scratch, for_backward=False):
        r0, r1, c0, c1 = slab
        self.r0, self.s0, self.length = r0, c0 * T, length
        self.group, self.A, self.A_log2e = rows.group[r0:r1], rows.A[r0:r1], rows.A_log2e[r0:r1]
        self.D = rows.D[r0:r1] if rows.D is not None else None
        self.u = u.unsqueeze(3)
        self.delta, self.du, self.softplus_grad = _layout(self.u.shape, last, scratch, SLAB_CHANNEL_TENSORS)
        pre = self.du if softplus else self.delta  # delta + bias, before the activation
        if rows.bias is not None:
            torch.add(delta.unsqueeze(3), rows.bias[r0:r1], out=pre)
        else:
            pre.copy_(delta.unsqueeze(3))
        if softplus and for_backward:
            torch.sigmoid(pre, out=self.softplus_grad)  # d delta / d pre = softplus'(pre)
        else:
            self.softplus_grad = None
        if softplus:
            torch._C._nn.softplus(pre, 1, 20, out=self.delta)  # F.softplus (beta 1, threshold 20) with out=
        self.first_padded = length - (c1 - 1) * T if c1 * T > length else None  # padding: in the last chunk only
        self.zero_padding_(self.delta)  # padded steps stay neutral: decay 1, no input
        torch.mul(self.delta, self.u, out=self.du)
        self.B, self.C = B.unsqueeze(4), C.unsqueeze(4)

    def zero_padding_(self, x: torch.Tensor) -> torch.Tensor:
        """Zeroes the padded steps of a step-major ``(bg, T, nc, ...)`` slab tensor in place."""
        if self.first_padded is not None:
            x[:, self.first_padded:, -1] = 0
        return x

    def put(self, out: torch.Tensor, values: torch.Tensor) -> None:
        """Writes this slab's step-major ``values: (bg, T, nc, c)`` into the channel-major ``out: (BG, c, L)``."""
        _put_steps_(out[self.r0:self.r0 + values.shape[0]], self.s0, values, self.length)

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
        return torch.mul(_sum(self.delta, (1,)), self.A_log2e[:, 0]).exp2_()


def _sum(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``x.sum(dims)``, reduced in the order of ``x``'s memory: torch reduced the step-major view of a channel-major
    slab up to 10x slower than the same memory seen in its own order."""
    order = sorted(range(x.dim()), key=lambda d: x.stride(d), reverse=True)  # outermost axis first
    kept = [d for d in order if d not in dims]
    out = x.permute(order).sum([order.index(d) for d in dims])  # axes left in the order of ``kept``
    return out.permute([kept.index(d) for d in sorted(kept)])


def _sum_over_states(c: torch.Tensor, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_n c_n x_n``: ``c: (bg, T, nc, N, 1)``, ``x: (bg, T, nc, N, P)`` -> ``(bg, T, nc, 1, P)``.

    One small matrix product per (row, step, chunk) for ``N > 1`` (``x`` channel-last); a product at ``N = 1``,
    written into ``out`` where given (it may be ``x``).
    """
    bg, T, nc, N, P = x.shape
    if N == 1:
        return torch.mul(c, x, out=out) if out is not None else c * x
    return torch.bmm(c.reshape(-1, 1, N), x.view(-1, N, P)).view(bg, T, nc, 1, P)


def _sum_over_channels(v: torch.Tensor, x: torch.Tensor, spare: torch.Tensor) -> torch.Tensor:
    """``sum_p v_p x_{n p}``: ``v: (bg, T, nc, 1, P)``, ``x: (bg, T, nc, N, P)`` -> ``(bg, T, nc, N)``; at ``N = 1``
    the products go to ``spare``, a tensor of ``v``'s shape (it may be ``v``)."""
    bg, T, nc, N, P = x.shape
    if N == 1:
        return _sum(torch.mul(v, x, out=spare), (4,))
    return torch.bmm(v.reshape(-1, 1, P), x.view(-1, N, P).transpose(1, 2)).view(bg, T, nc, N)


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
    """Fills ``out: (R, S, c)`` with ``x: (R, c, L)`` transposed, zero-padded from ``L`` to ``S`` steps.

    On the CPU the copy runs over blocks of 8 channels: a plain copy of the transposed view walks all ``c`` rows,
    ``L`` elements apart, for every step, and ran 2-4x slower at the benchmark shapes (benchmarks/results/scan.md).
    """
    L = x.shape[2]
    out[:, L:] = 0
    copy_in_slabs_(out[:, :L], x.transpose(1, 2), dim=2, width=8)
    return out


def _put_steps_(out: torch.Tensor, s0: int, values: torch.Tensor, length: int) -> None:
    """Writes step-major ``values: (bg, T, nc, c)`` of steps ``s0 : s0 + nc T`` into channel-major
    ``out: (bg, c, length)``, dropping the steps past ``length`` (only the last chunk can hold any)."""
    _, T, nc, _ = values.shape
    full = min(nc, (length - s0) // T)
    if full:
        out[:, :, s0:s0 + full * T].unflatten(2, (full, T)).permute(0, 3, 2, 1).copy_(values[:, :, :full])
    if full < nc:
        start = s0 + full * T
        out[:, :, start:length].transpose(1, 2).copy_(values[:, :length - start, full])


class _Inputs:
    """A call's channel-major ``(BG, c, L)`` inputs, handed out as step-major views ``(bg, T, nc, c)`` of one slab
    at a time, zero past ``L`` (the padding of the last chunk).

    Channel-last (:func:`channel_last`): the slab's rows are staged whole, ``(bg, Lp, c)`` in the flat workspace
    ``flat``, when a slab starts on new rows (slabs along one row reuse them): staging slab by slab took 12 copies
    per input and slab and ran 10-20% slower at N = 16. Channel-major: views of the inputs, except for a slab that
    reaches past ``L``, which is copied with zero padding.
    """

    def __init__(self, tensors, flat: torch.Tensor, T: int, last: bool):
        self.tensors, self.flat, self.T, self.last = tensors, flat, T, last
        self.length = tensors[0].shape[2]
        self.rows, self.staged = None, []

    @staticmethod
    def workspace_elements(tensors, T: int, last: bool, slabs) -> int:
        """Workspace elements that :meth:`slab` needs for ``slabs``."""
        length = tensors[0].shape[2]
        rows_times_steps = max((r1 - r0) * (-(-length // T) * T if last else (c1 - c0) * T)
                               for r0, r1, c0, c1 in slabs)
        return rows_times_steps * sum(x.shape[1] for x in tensors)

    def _copies(self, r0: int, r1: int, s0: int, s1: int) -> list[torch.Tensor]:
        """Steps ``s0:s1`` of rows ``r0:r1`` of each input, copied into the workspace, channel-last ``(bg, S, c)``
        or channel-major ``(bg, c, S)``, zero past ``L``."""
        out, offset = [], 0
        for x in self.tensors:
            part = x[r0:r1, :, s0:s1]
            shape = (r1 - r0, s1 - s0, x.shape[1]) if self.last else (r1 - r0, x.shape[1], s1 - s0)
            buf = self.flat[offset:offset + math.prod(shape)].view(shape)
            offset += buf.numel()
            if self.last:
                _to_channel_last_(buf, part)
            else:
                buf[:, :, part.shape[2]:] = 0
                buf[:, :, :part.shape[2]] = part
            out.append(buf)
        return out

    def slab(self, r0: int, r1: int, c0: int, c1: int) -> list[torch.Tensor]:
        T = self.T
        if self.last:
            if self.rows != (r0, r1):
                self.rows, self.staged = (r0, r1), self._copies(r0, r1, 0, -(-self.length // T) * T)
            return [_steps(x[:, c0 * T:c1 * T], T, True) for x in self.staged]
        if c1 * T <= self.length:
            return [_steps(x[r0:r1, :, c0 * T:c1 * T], T, False) for x in self.tensors]
        return [_steps(x, T, False) for x in self._copies(r0, r1, c0 * T, c1 * T)]


def _pass_buffers(inputs, T: int, last: bool, slabs, steps: int, work_tensors: int):
    """The per-thread workspace of one pass (forward or backward) over ``slabs``: ``(inputs, scratch, flat)`` with
    the :class:`_Inputs` over ``inputs``, room for one slab's :data:`SLAB_CHANNEL_TENSORS` channel tensors and
    for its ``work_tensors`` state tensors ``(bg, T, nc, N, P)`` (``steps``: rows times steps of the largest slab)."""
    P, N = inputs[0].shape[1], inputs[2].shape[1]
    staging, scratch, flat = _workspace(inputs[0], [(_Inputs.workspace_elements(inputs, T, last, slabs),),
                                                    (SLAB_CHANNEL_TENSORS * steps * P,),
                                                    (work_tensors * steps * N * P,)])
    return _Inputs(inputs, staging, T, last), scratch, flat


def _plan(BG: int, P: int, N: int, length: int, T: int, budget: int):
    """Slabs of one call and the steps of the largest (rows times steps): ``([(r0, r1, c0, c1), ...], steps)``."""
    slabs = list(_slabs(BG, -(-length // T), T * N * P, budget))
    return slabs, max((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in slabs) * T


class ChunkedScanFn(torch.autograd.Function):
    """Core scan ``y_t = <h_t, C_t> + D u_t`` with the delta bias and softplus folded in; channel-major in and out.

    Inputs: ``u, delta: (BG, P, L)``; ``A3: (G, P, N)``; ``B, C: (BG, N, L)``; ``D, bias: (G, P)`` or None (row
    ``r`` of the ``BG = batch * G`` rows belongs to group ``r % G``). Outputs: ``y: (BG, P, L)`` and
    ``last_state: (BG, N, P)``. Inside, the sequence is zero-padded to a multiple of ``T`` (:class:`_Inputs`) and
    cut into slabs, forward and backward alike: only the inputs and the chunk-start states are kept between the
    two. Folding the bias, softplus and skip term in keeps their whole-tensor autograd graph (and its
    allocations) away: the backward recomputes the activated delta and ``softplus' = sigmoid`` slab by slab.
    """

    @staticmethod
    def forward(ctx, u, delta, A3, B, C, D, bias, T, budget, softplus):
        BG, P, length = u.shape
        N = A3.shape[-1]
        slabs, steps = _plan(BG, P, N, length, T, budget)
        last = channel_last(N)
        inputs, scratch, flat = _pass_buffers((u, delta, B, C), T, last, slabs, steps, 2)
        rows = _Rows(A3, D, bias, BG)
        y = u.new_empty(BG, P, length)
        last_state = u.new_zeros(BG, N, P)  # carried from slab to slab along each row: ends as the last state
        starts_all = u.new_empty(BG, -(-length // T), N, P)
        for r0, r1, c0, c1 in slabs:
            slab = _Slab(*inputs.slab(r0, r1, c0, c1), rows, softplus, length, T, (r0, r1, c0, c1), last, scratch)
            a, h = _layout(slab.work_shape(), last, flat, 2)
            slab.decays(a)
            starts_all[r0:r1, c0:c1] = _scan_states(a, slab.inputs(h), slab.chunk_decay(), last_state[r0:r1])
            last_state[r0:r1] = h[:, -1, -1]
            ys = _sum_over_states(slab.C, h, out=h if N == 1 else None)  # sum_n C_t h_t
            if slab.D is not None:
                ys.addcmul_(slab.D, slab.u)
            slab.put(y, ys.squeeze(3))
        ctx.save_for_backward(u, delta, A3, B, C, D, bias, starts_all)
        ctx.T, ctx.budget, ctx.softplus = T, budget, softplus
        return y, last_state

    @staticmethod
    def backward(ctx, dy, dlast):
        u_in, delta_in, A3, B_in, C_in, D, bias, starts_all = ctx.saved_tensors
        T = ctx.T
        BG, P, length = u_in.shape
        N = A3.shape[-1]
        slabs, steps = _plan(BG, P, N, length, T, ctx.budget)
        last = channel_last(N)
        if dy is None:
            dy = torch.zeros_like(u_in)
        inputs, scratch, flat = _pass_buffers((u_in, delta_in, B_in, C_in, dy), T, last, slabs, steps, 3)
        du, ddelta = torch.empty_like(u_in), torch.empty_like(u_in)
        dB, dC = torch.empty_like(B_in), torch.empty_like(C_in)
        dA = torch.zeros_like(A3)
        dD = torch.zeros_like(D) if D is not None else None
        dbias = torch.zeros_like(bias) if bias is not None else None
        rows = _Rows(A3, D, bias, BG)
        carry = dlast.clone() if dlast is not None else u_in.new_zeros(BG, N, P)  # from later slabs, per row
        for r0, r1, c0, c1 in reversed(slabs):
            *staged, dys = inputs.slab(r0, r1, c0, c1)
            slab = _Slab(*staged, rows, ctx.softplus, length, T, (r0, r1, c0, c1), last, scratch, for_backward=True)
            dys = dys.unsqueeze(3)  # (bg, T, nc, 1, P)
            a, h, g = _layout(slab.work_shape(), last, flat, 3)
            starts = starts_all[r0:r1, c0:c1]
            slab.decays(a)
            _scan_states(a, slab.inputs(h), None, starts)  # recomputed states
            carry[r0:r1] = _scan_adjoints(a, torch.mul(dys, slab.C, out=g), slab.chunk_decay(), carry[r0:r1])
            slab.put(dB, _sum_over_channels(slab.du, g, slab.du))  # sum_p du_t g_t; du is not needed after this
            spare = slab.du
            slab.put(dC, _sum_over_channels(dys, h, spare))  # sum_p dy_t h_t
            # w_t = d loss / d log(a_t) = g_t a_t h_{t-1}; feeds d delta (via A) and d A (via delta)
            w = torch.mul(g, a, out=a)
            w[:, 1:].mul_(h[:, :-1])
            w[:, 0].mul_(starts)
            gB = _sum_over_states(slab.B, g, out=g if N == 1 else None)  # sum_n g_t B_t
            dA_rows = _sum(torch.mul(w, slab.delta, out=h), (1, 2)).transpose(1, 2)  # (bg, P, N)
            dA.index_add_(0, slab.group, dA_rows)
            w.mul_(slab.A)
            d_delta = (w if N == 1 else w.sum(3, keepdim=True)).addcmul_(slab.u, gB)  # (bg, T, nc, 1, P)
            if slab.softplus_grad is not None:
                d_delta.mul_(slab.softplus_grad)
            slab.put(ddelta, slab.zero_padding_(d_delta).squeeze(3))
            d_u = gB.mul_(slab.delta)
            if D is not None:
                d_u.addcmul_(slab.D, dys)
                dD.index_add_(0, slab.group, _sum(torch.mul(dys, slab.u, out=spare), (1, 2, 3)))
            slab.put(du, d_u.squeeze(3))
            if bias is not None:
                dbias.index_add_(0, slab.group, _sum(d_delta, (1, 2, 3)))
        return du, ddelta, dA, dB, dC, dD, dbias, None, None, None


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
    T = chunk_length or default_chunk_length(length, A.shape[-1])
    y, last = ChunkedScanFn.apply(u.reshape(batch * G, P, length), delta.reshape(batch * G, P, length),
                                  A.reshape(G, P, -1), Bg, Cg, *per_group, T, slab_budget_bytes, delta_softplus)
    out = finish_output(y.view(batch, dim, length), u, None, z, out_dtype)
    return (out, last.transpose(1, 2).reshape(batch, dim, -1)) if return_last_state else out
