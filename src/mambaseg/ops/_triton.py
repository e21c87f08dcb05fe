"""Fused Triton selective scan (S6 of Mamba, Gu & Dao 2023, arXiv 2312.00752) with its backward.

Same semantics as :func:`mambaseg.ops.selective_scan` (mamba_ssm's ``selective_scan_fn``): fixed ``(D, N)``, shared
``(B, N, L)`` and grouped ``(B, G, N, L)`` B/C; ``D``, ``z``, ``delta_bias``, ``delta_softplus``; the last state
(whose gradient, unlike mamba_ssm's CUDA op, is propagated). Inputs may be fp32, fp16 or bf16; everything is
accumulated in fp32 and the output has the dtype of ``u``. ``exp`` is ``exp2`` of ``log2(e)``-scaled ``A``.

Structure (the two-level scheme of mamba_ssm's CUDA kernel and of :mod:`._chunked`): L is cut into chunks of
``T`` steps (a power of two) and every kernel runs one program per (batch, block of channels, chunk), so a long
sequence with few channels (3D volumes) still fills the GPU. A channel block never straddles two B/C groups, so
a program reads one B/C row per step and reduces dB/dC over its channels before one atomic add.

Forward, single pass (the default unless ``L > 64 * batch * dim``): ``_fwd_single_pass_kernel``, one program per
(batch, channel), walks L in tiles; in a tile the ``(N, BLOCK_T)`` states come from one associative scan along time
started from the carried state. One exponential per (step, state); it also writes the state entering every chunk of
``T`` steps, which is what the backward needs.
Forward, two passes (few channels, long L, e.g. 3D volumes, where one program per channel leaves the GPU idle):
    1. ``_fwd_chunk_kernel`` (pass 1): each chunk but the last scans from a zero state with the state
       ``(BLOCK_D, N)`` in registers and writes its end state and ``sum(delta)`` (the chunk decay is
       ``exp(A * sum(delta))``);
    2. ``_chunk_combine_kernel``: an associative scan over chunks (per channel and state) gives each chunk's
       start state;
    3. ``_fwd_chunk_kernel`` (pass 2): each chunk re-scans from its start state and writes
       ``out = (<h_t, C_t> + D u_t) * silu(z_t)``, and the last chunk the last state.
    Only ``(B, D, n_chunks, N)`` start states are kept for the backward; nothing of size ``(B, D, L, N)`` is
    ever written.
Backward, chunk-parallel (the default, ``backward="chunk_parallel"``):
    1. ``_bwd_chunk_carry_kernel``: each chunk but the first walks its steps in reverse from a zero adjoint and
       writes the adjoint it sends to the previous chunk's end state;
    2. ``_chunk_combine_kernel`` (reverse): the adjoint arriving at each chunk's end (the last one gets the
       gradient of the last state);
    3. ``_bwd_chunk_kernel``: per chunk and per state index n, the states ``h`` (forward) and the adjoints ``g``
       (reverse) of the whole chunk are formed in registers as ``(BLOCK_D, T)`` tiles by two associative scans
       (from the saved start state and the carried adjoint; the reverse one scans the chunk read backwards and is
       flipped back with ``tl.flip``), and du, ddelta, dA, dB, dC, dD, dz, ddelta_bias are
       emitted. ``a_t h_{t-1}`` is taken as ``h_t - delta_t B_t u_t``: no division by a decay, so strong decays
       stay exact. (A purely sequential reverse walk would need ``h_{t-1} = (h_t - x_t) / a_t``, which blows up
       when ``a_t`` underflows; the scans recompute the chunk's states instead, as the CUDA kernel does.)
Backward, single pass (``backward="single_pass"``, not yet timed on a GPU): ``_bwd_single_pass_kernel``, one
program per (batch, channel), walks the chunks from last to first carrying the adjoint of all N, with the same two
scans per chunk as ``(N, T)`` tiles; no carry pass, no combine; dB/dC are added per channel, as mamba_ssm's
CUDA backward does.

Several scan directions in one launch (VMamba's SS2D, K = 4; SegMamba's three orders, K = 3): stack the
directions along channels and pass B/C grouped by direction::

    u, delta: (batch, K * D, L)      # direction k owns channels k*D ... (k+1)*D - 1
    A: (K * D, N); D, delta_bias: (K * D,)
    B, C: (batch, K, N, L)           # group k = direction k
    out = selective_scan_triton(u, delta, A, B, C, D=D, delta_bias=delta_bias, delta_softplus=True)

Channel ``d`` uses group ``d // D``, i.e. its own direction's B/C: this *is* the packed scan, one launch for all
directions (no separate ``_packed`` entry point is needed).

Importing this module imports no Triton: the kernels are wrapped at first use, for the interpreter or for the
compiler according to how Triton itself was set up when first imported (``TRITON_INTERPRET=1`` is read then, for
Triton's own standard library, so the mode is fixed per process; see :func:`triton_mode`).
:func:`compile_for_gpu` builds every kernel for a GPU architecture without a GPU (a CI check).

Written from the mamba_ssm semantics; no code is taken from other Triton scans. Launch defaults come from an H200
sweep (``benchmarks/triton_tune.py``, results/triton_tune_h200.md): there the forward matched mamba_ssm's CUDA kernel
(2x faster at D=48, L=32768) and the backward was 1.7-2.7x slower than mamba_ssm's (0.9x at that 3D shape).
"""

from __future__ import annotations

import functools
import math
import os
import types
from typing import TYPE_CHECKING, Optional

import torch

from ._checks import check_scan_inputs

if TYPE_CHECKING:  # the kernels' globals get the real module when they are wrapped (see _kernels)
    import triton.language as tl

_HELPERS = ("_affine_combine", "_softplus", "_step_size", "_add_relaxed", "_channel_state_tile",
            "_channel_row", "_scan_from", "_last_column")
#: Launch defaults, from ``benchmarks/triton_tune.py`` on an H200 (results/triton_tune_h200.md, 2026-12-04):
#: ``forward="auto"`` takes the two-pass kernel only when L exceeds this many steps per channel (batch * dim): a
#: single-pass program walks all of L, so few channels with a long L leave the GPU idle. Measured: (1, 48, 32768)
#: two-pass 172 us vs single 348 us; (1, 96, 4096) single 47 us vs two-pass 64 us; single wins by 1.4-2.9x at
#: every other shape.
TWO_PASS_MIN_STEPS_PER_CHANNEL = 64
#: State elements per thread in the backward's carry pass (the default warps follow from it): 16 let the per-step
#: scalar work (loads, step size, softplus) be shared; at 2 per thread (Triton's default 4 warps on a 16 x 16 tile)
#: the sm_90 hot loop issued 6x the instructions per element (benchmarks/results/triton_sass_sm90.md).
CARRY_ELEMENTS_PER_THREAD = 16
#: From this many channels (batch * dim) on, 2 warps per program (and single-pass tiles of 128 steps) were fastest;
#: below it 4 warps (tiles of 256). Best or within 5 % of the best at every measured shape.
MANY_CHANNELS = 384
#: Software-pipelining depth (``tl.range(..., num_stages=)``) of the tile loops (the single-pass forward's and
#: backward's, the gradient kernel's loop over states) and of the serial loops (the two-pass forward and the carry pass
#: step by step, the chunk combine). At 1 (no pipelining, the code timed on the H200) every iteration waits for its own
#: loads; above 1 the loads of the next iterations are issued (cp.async) while this one computes, which the serial
#: loops need most: the two-pass forward and the carry pass walk their chunk's steps one after another, each behind
#: a global-memory round trip. Not yet timed on a GPU: ``benchmarks/triton_tune.py`` sweeps both.
DEFAULT_STAGES = 1
DEFAULT_STAGES_SERIAL = 1
#: The chunk combine's tile: up to ``COMBINE_BLOCK_C`` chunk boundaries (scanned at once along the chunk axis) by
#: ``COMBINE_TILE / block_c`` independent (channel, state) pairs; 8 elements per thread at 4 warps. At the 3D shape
#: (510 boundaries, 768 pairs) that is 96 programs walking 4 tiles each, instead of 3 programs walking 510 steps.
#: Both must be powers of two (Triton's tile sizes).
COMBINE_BLOCK_C = 128
COMBINE_TILE = 1024
_KERNELS = ("_fwd_chunk_kernel", "_fwd_single_pass_kernel", "_chunk_combine_kernel", "_bwd_chunk_carry_kernel",
            "_bwd_chunk_kernel", "_bwd_single_pass_kernel")


# ----------------------------------------------------------------------------------------------------------------
# Kernel sources. They are plain functions here; ``_kernels`` wraps copies of them for the interpreter or for the
# compiler, each copy with its own globals (``tl`` and the matching helpers).
# ----------------------------------------------------------------------------------------------------------------

def _affine_combine(a_first, x_first, a_second, x_second):
    """Composition of two steps ``h -> a h + x`` (``first`` applied first)."""
    return a_first * a_second, a_second * x_first + x_second


def _softplus(x):
    """``log(1 + exp(x))`` with torch's threshold of 20 (identity above)."""
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))), x)


def _step_size(raw, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """``delta`` as loaded -> the step size: ``+ delta_bias`` and softplus when asked (``bias`` is read only with
    ``HAS_BIAS``; pass 0.0 without it)."""
    dt = raw.to(tl.float32)
    if HAS_BIAS:
        dt = dt + bias
    if SOFTPLUS:
        dt = _softplus(dt)
    return dt


def _add_relaxed(ptr, val, mask=None):
    """Atomic ``*ptr += val`` with relaxed ordering. Gradient sums need no ordering within the kernel (the launch
    boundary orders them), and Triton's default (``acq_rel``) fences every add: on sm_90 a ``MEMBAR.ALL.GPU`` before it
    and an L1 invalidation (``CCTL.IVALL``) after it, inside the hot loops (``benchmarks/triton_sass.py``)."""
    tl.atomic_add(ptr, val, mask=mask, sem="relaxed")


def _scan_from(a, x, start, first):
    """States ``h_t = a_t h_{t-1} + x_t`` along axis 1 of ``(rows, T)`` tiles, entering column 0 (``first``, a
    ``(1, T)`` mask) from the states ``start`` ``(rows,)``: one associative scan, the carried state injected into
    column 0's input."""
    _, h = tl.associative_scan((a, x + tl.where(first, a * start[:, None], 0.0)), 1, _affine_combine)
    return h


def _last_column(tile, steps, BLOCK: tl.constexpr):
    """Column ``BLOCK - 1`` of a ``(rows, BLOCK)`` tile, as ``(rows,)`` (``steps = tl.arange(0, BLOCK)``)."""
    return tl.sum(tl.where(steps[None, :] == BLOCK - 1, tile, 0.0), axis=1)


def _channel_state_tile(pid_gp, n_pblocks, P, n_state, A_ptr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """The ``(BLOCK_D, BLOCK_N)`` (channel, state) tile of program ``pid_gp`` along a grid axis of channel blocks per
    B/C group: block ``pid_gp % n_pblocks`` of the ``P`` channels of group ``grp = pid_gp // n_pblocks``.

    Returns ``(grp, d, mask_d, offs_n, mask_n, mask_dn, dn, A2)``: channel indices ``d`` ``(BLOCK_D,)``, state
    indices ``offs_n`` ``(BLOCK_N,)``, their masks, offsets ``dn`` into ``(D, N)`` tensors and ``A2 = A log2(e)``
    in fp32, both ``(BLOCK_D, BLOCK_N)``.
    """
    grp = pid_gp // n_pblocks
    p = (pid_gp % n_pblocks) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = p < P
    d = grp * P + p
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < n_state
    mask_dn = mask_d[:, None] & mask_n[None, :]
    dn = d[:, None] * n_state + offs_n[None, :]
    A2 = tl.load(A_ptr + dn, mask=mask_dn, other=0.0).to(tl.float32) * 1.4426950408889634
    return grp, d, mask_d, offs_n, mask_n, mask_dn, dn, A2


def _channel_row(pid_b, d, dim, length, n_state, P, A_ptr, bias_ptr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr):
    """What a one-channel program (the single-pass kernels, grid (batch, dim)) reads first: its B/C group ``grp``,
    the state indices ``offs_n`` ``(BLOCK_N,)`` and their mask, ``A2 = A[d] log2(e)`` in fp32, the offset ``row``
    of ``(pid_b, d, 0)`` in ``(B, D, L)`` tensors and the channel's delta_bias (0.0 without one)."""
    grp = d // P
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < n_state
    A2 = tl.load(A_ptr + d * n_state + offs_n, mask=mask_n, other=0.0).to(tl.float32) * 1.4426950408889634
    row = (pid_b * dim + d) * length
    bias = tl.load(bias_ptr + d).to(tl.float32) if HAS_BIAS else 0.0
    return grp, offs_n, mask_n, A2, row, bias


def _fwd_chunk_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, state_ptr,
                      sumdelta_ptr, last_ptr, dim, length, n_state, n_chunks, chunk_len, P, n_pblocks,
                      sbb, sbg, sbn, scb, scg, scn,
                      OUTPUT: tl.constexpr, B_FIXED: tl.constexpr, C_FIXED: tl.constexpr,
                      HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                      SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                      STAGES: tl.constexpr):
    """Sequential scan of one chunk, state ``(BLOCK_D, BLOCK_N)`` in registers.

    ``OUTPUT=False``: from a zero state; writes the end state to ``state_ptr`` ``(B, D, nc, N)`` and the chunk's
    ``sum(delta)`` to ``sumdelta_ptr`` ``(B, D, nc)``. ``OUTPUT=True``: from the start state read at
    ``state_ptr``; writes ``out`` ``(B, D, L)`` and, for the last chunk, ``last_ptr`` ``(B, D, N)``.
    """
    pid_b = tl.program_id(0)
    pid_gp = tl.program_id(1)
    pid_c = tl.program_id(2)
    grp, d, mask_d, offs_n, mask_n, mask_dn, dn, A2 = _channel_state_tile(pid_gp, n_pblocks, P, n_state, A_ptr,
                                                                           BLOCK_D, BLOCK_N)
    row = pid_b * dim * length + d * length
    state_idx = ((pid_b * dim + d) * n_chunks + pid_c)[:, None] * n_state + offs_n[None, :]
    bias = tl.load(bias_ptr + d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else 0.0
    if B_FIXED:
        B_fix = tl.load(B_ptr + dn, mask=mask_dn, other=0.0).to(tl.float32)
    if OUTPUT:
        h = tl.load(state_ptr + state_idx, mask=mask_dn, other=0.0)
        if C_FIXED:
            C_fix = tl.load(C_ptr + dn, mask=mask_dn, other=0.0).to(tl.float32)
        if HAS_D:
            Dv = tl.load(D_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
    else:
        h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
        dsum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    t0 = pid_c * chunk_len
    t1 = tl.minimum(t0 + chunk_len, length)
    for t in tl.range(t0, t1, num_stages=STAGES):
        dt = _step_size(tl.load(delta_ptr + row + t, mask=mask_d, other=0.0), bias, HAS_BIAS, SOFTPLUS)
        u = tl.load(u_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
        if B_FIXED:
            Bt = B_fix
        else:
            Bt = tl.load(B_ptr + pid_b * sbb + grp * sbg + offs_n * sbn + t, mask=mask_n,
                         other=0.0).to(tl.float32)[None, :]
        h = tl.exp2(dt[:, None] * A2) * h + (dt * u)[:, None] * Bt
        if OUTPUT:
            if C_FIXED:
                Ct = C_fix
            else:
                Ct = tl.load(C_ptr + pid_b * scb + grp * scg + offs_n * scn + t, mask=mask_n,
                             other=0.0).to(tl.float32)[None, :]
            y = tl.sum(h * Ct, axis=1)
            if HAS_D:
                y = y + Dv * u
            if HAS_Z:
                zt = tl.load(z_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                y = y * zt * tl.sigmoid(zt)
            tl.store(out_ptr + row + t, y, mask=mask_d)
        else:
            dsum = dsum + dt
    if OUTPUT:
        if pid_c == n_chunks - 1:
            tl.store(last_ptr + (pid_b * dim + d)[:, None] * n_state + offs_n[None, :], h, mask=mask_dn)
    else:
        tl.store(state_ptr + state_idx, h, mask=mask_dn)
        tl.store(sumdelta_ptr + (pid_b * dim + d) * n_chunks + pid_c, dsum, mask=mask_d)


def _fwd_single_pass_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, state_ptr,
                            last_ptr, dim, length, n_state, n_chunks, P, sbb, sbg, sbn, scb, scg, scn,
                            B_FIXED: tl.constexpr, C_FIXED: tl.constexpr, HAS_D: tl.constexpr,
                            HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                            BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, CHUNK: tl.constexpr,
                            STAGES: tl.constexpr):
    """The whole sequence of one channel in one program: one pass, one ``exp`` per (step, state).

    The program walks L in tiles of ``BLOCK_T`` steps; in each tile the states of all ``N`` are formed at once as
    a ``(BLOCK_N, BLOCK_T)`` tile by an associative scan along time, started from the state carried out of the
    previous tile. Writes ``out`` ``(B, D, L)``, the last state, and, for the backward, the state entering each
    chunk of ``CHUNK`` steps to ``state_ptr`` ``(B, D, nc, N)`` (zero-initialised: chunk 0 starts from 0).
    Grid: (batch, dim). The two-pass kernel above needs twice the exponentials but splits L across programs;
    this one suits many channels (SS2D packs 4 x 192 of them), the other few channels and long L (3D).
    """
    pid_b = tl.program_id(0)
    d = tl.program_id(1)
    grp, offs_n, mask_n, A2, row, bias = _channel_row(pid_b, d, dim, length, n_state, P, A_ptr, bias_ptr, HAS_BIAS,
                                                      BLOCK_N)
    steps = tl.arange(0, BLOCK_T)
    if B_FIXED:
        B_fix = tl.load(B_ptr + d * n_state + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
    if C_FIXED:
        C_fix = tl.load(C_ptr + d * n_state + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
    if HAS_D:
        Dv = tl.load(D_ptr + d).to(tl.float32)
    h = tl.zeros((BLOCK_N,), dtype=tl.float32)
    state_base = (pid_b * dim + d) * n_chunks
    for t0 in tl.range(0, length, BLOCK_T, num_stages=STAGES):
        offs_t = t0 + steps
        mask_t = offs_t < length
        dt = _step_size(tl.load(delta_ptr + row + offs_t, mask=mask_t, other=0.0), bias, HAS_BIAS, SOFTPLUS)
        dt = tl.where(mask_t, dt, 0.0)  # decay 1, input 0 past the end: the carried state passes unchanged
        u = tl.load(u_ptr + row + offs_t, mask=mask_t, other=0.0).to(tl.float32)
        mask_nt = mask_n[:, None] & mask_t[None, :]
        if B_FIXED:
            Bt = B_fix
        else:
            Bt = tl.load(B_ptr + pid_b * sbb + grp * sbg + offs_n[:, None] * sbn + offs_t[None, :], mask=mask_nt,
                         other=0.0).to(tl.float32)
        if C_FIXED:
            Ct = C_fix
        else:
            Ct = tl.load(C_ptr + pid_b * scb + grp * scg + offs_n[:, None] * scn + offs_t[None, :], mask=mask_nt,
                         other=0.0).to(tl.float32)
        a = tl.exp2(A2[:, None] * dt[None, :])
        x = Bt * (dt * u)[None, :]
        hs = _scan_from(a, x, h, steps[None, :] == 0)
        y = tl.sum(hs * Ct, axis=0)
        if HAS_D:
            y = y + Dv * u
        if HAS_Z:
            zt = tl.load(z_ptr + row + offs_t, mask=mask_t, other=0.0).to(tl.float32)
            y = y * zt * tl.sigmoid(zt)
        tl.store(out_ptr + row + offs_t, y, mask=mask_t)
        # the state after the last step of chunk c enters chunk c + 1
        chunk_end = (offs_t % CHUNK == CHUNK - 1) & (offs_t + 1 < length)
        tl.store(state_ptr + (state_base + (offs_t + 1) // CHUNK)[None, :] * n_state + offs_n[:, None], hs,
                 mask=mask_n[:, None] & chunk_end[None, :])
        h = _last_column(hs, steps, BLOCK_T)
    tl.store(last_ptr + (pid_b * dim + d) * n_state + offs_n, h, mask=mask_n)


def _chunk_combine_kernel(local_ptr, sumdelta_ptr, A_ptr, init_ptr, out_ptr, dim, n_state, n_chunks,
                          REVERSE: tl.constexpr, HAS_INIT: tl.constexpr,
                          BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, STAGES: tl.constexpr):
    """Links chunks: ``s <- exp(A sum(delta)_c) s + local_c`` over c, writing the state entering each chunk.

    Forward (``REVERSE=False``): ``out[0] = 0``, ``out[c+1] = decay_c out[c] + local_c``. Reverse: ``out[nc-1] =
    init`` (gradient of the last state), ``out[c-1] = decay_c out[c] + local_c``. Shapes: ``local, out:
    (B, D, nc, N)``, ``sumdelta: (B, D, nc)``, ``init: (B, D, N)``; ``A`` ``(D, N)`` contiguous.

    Every (channel, state) pair is an independent first-order recurrence over chunks, so a program takes
    ``BLOCK_P`` pairs (``p = d * N + n``) and walks the chunks in tiles of ``BLOCK_C``: one associative scan along
    the chunk axis per tile, started from the state carried out of the previous tile. The chain of dependent
    global-memory round trips is ``nc / BLOCK_C`` long, not ``nc`` (511 chunk boundaries at the 3D shape).
    Grid: (batch, cdiv(D * N, BLOCK_P)).
    """
    pid_b = tl.program_id(0)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = p < dim * n_state
    d = p // n_state
    n = p - d * n_state
    A2 = tl.load(A_ptr + p, mask=mask_p, other=0.0).to(tl.float32) * 1.4426950408889634
    chunk_row = (pid_b * dim + d) * n_chunks  # (BLOCK_P,): index of (b, d, chunk 0) in sumdelta
    if HAS_INIT:
        s = tl.load(init_ptr + pid_b * dim * n_state + p, mask=mask_p, other=0.0)
    else:
        s = tl.zeros((BLOCK_P,), dtype=tl.float32)
    if REVERSE:
        c_first = n_chunks - 1
    else:
        c_first = 0
    tl.store(out_ptr + (chunk_row + c_first) * n_state + n, s, mask=mask_p)
    steps = tl.arange(0, BLOCK_C)
    for i0 in tl.range(0, n_chunks - 1, BLOCK_C, num_stages=STAGES):
        i = i0 + steps  # the i-th link: from chunk c to chunk c_next
        if REVERSE:
            c = n_chunks - 1 - i
            c_next = c - 1
        else:
            c = i
            c_next = i + 1
        mask = mask_p[:, None] & (i < n_chunks - 1)[None, :]
        cell = chunk_row[:, None] + c[None, :]  # (BLOCK_P, BLOCK_C)
        dsum = tl.load(sumdelta_ptr + cell, mask=mask, other=0.0)
        local = tl.load(local_ptr + cell * n_state + n[:, None], mask=mask, other=0.0)
        a = tl.exp2(dsum * A2[:, None])  # masked links: decay 1, input 0, the carried state passes unchanged
        states = _scan_from(a, local, s, steps[None, :] == 0)
        tl.store(out_ptr + (chunk_row[:, None] + c_next[None, :]) * n_state + n[:, None], states, mask=mask)
        s = _last_column(states, steps, BLOCK_C)


def _bwd_chunk_carry_kernel(delta_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, dout_ptr, local_ptr, sumdelta_ptr,
                            dim, length, n_state, n_chunks, chunk_len, P, n_pblocks, scb, scg, scn,
                            C_FIXED: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                            SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                            STAGES: tl.constexpr):
    """Reverse walk of chunk ``pid_c + 1`` from a zero adjoint.

    Writes ``a_{t0} g_{t0}`` (the adjoint it sends to the previous chunk's end state) to ``local_ptr``
    ``(B, D, nc, N)`` and the chunk's ``sum(delta)`` to ``sumdelta_ptr`` ``(B, D, nc)``.
    """
    pid_b = tl.program_id(0)
    pid_gp = tl.program_id(1)
    chunk = tl.program_id(2) + 1
    grp, d, mask_d, offs_n, mask_n, mask_dn, dn, A2 = _channel_state_tile(pid_gp, n_pblocks, P, n_state, A_ptr,
                                                                           BLOCK_D, BLOCK_N)
    row = pid_b * dim * length + d * length
    bias = tl.load(bias_ptr + d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else 0.0
    if C_FIXED:
        C_fix = tl.load(C_ptr + dn, mask=mask_dn, other=0.0).to(tl.float32)
    q = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dsum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    t0 = chunk * chunk_len
    t1 = tl.minimum(t0 + chunk_len, length)
    for i in tl.range(0, t1 - t0, num_stages=STAGES):
        t = t1 - 1 - i
        dt = _step_size(tl.load(delta_ptr + row + t, mask=mask_d, other=0.0), bias, HAS_BIAS, SOFTPLUS)
        dy = tl.load(dout_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
        if HAS_Z:
            zt = tl.load(z_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
            dy = dy * zt * tl.sigmoid(zt)
        if C_FIXED:
            Ct = C_fix
        else:
            Ct = tl.load(C_ptr + pid_b * scb + grp * scg + offs_n * scn + t, mask=mask_n,
                         other=0.0).to(tl.float32)[None, :]
        q = tl.exp2(dt[:, None] * A2) * (dy[:, None] * Ct + q)
        dsum = dsum + dt
    state_idx = ((pid_b * dim + d) * n_chunks + chunk)[:, None] * n_state + offs_n[None, :]
    tl.store(local_ptr + state_idx, q, mask=mask_dn)
    tl.store(sumdelta_ptr + (pid_b * dim + d) * n_chunks + chunk, dsum, mask=mask_d)


def _bwd_chunk_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, starts_ptr,
                      carries_ptr, du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dz_ptr, dbias_ptr,
                      dim, length, n_state, n_chunks, P, n_pblocks, sbb, sbg, sbn, scb, scg, scn,
                      B_FIXED: tl.constexpr, C_FIXED: tl.constexpr, HAS_D: tl.constexpr,
                      HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                      BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr, STAGES: tl.constexpr):
    """All gradients of one chunk of ``BLOCK_T`` steps for ``BLOCK_D`` channels, looping over the states n.

    ``starts, carries: (B, D, nc, N)``: the state entering each chunk and the adjoint arriving at its end.
    ``du, ddelta, dz`` are written; ``dA, dB, dC, dD, dbias`` (fp32, zero-initialised) are accumulated with
    atomic adds (dB/dC already summed over the block's channels, which all belong to one group).
    Tiles that only the epilogue needs (``u``, ``dout``, ``z``, the step size before softplus) are loaded again
    there, not held in registers through the loop over states: at 8 x 64 and 2 warps that takes the kernel from 205
    to 168 registers on sm_90, 12 resident warps per SM instead of 8 (``benchmarks/triton_sass.py``).
    """
    pid_b = tl.program_id(0)
    pid_gp = tl.program_id(1)
    pid_c = tl.program_id(2)
    grp = pid_gp // n_pblocks
    p = (pid_gp % n_pblocks) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = p < P
    d = grp * P + p
    steps = tl.arange(0, BLOCK_T)
    offs_t = pid_c * BLOCK_T + steps
    mask_t = offs_t < length
    mask2 = mask_d[:, None] & mask_t[None, :]
    ptr2 = (pid_b * dim * length + d * length)[:, None] + offs_t[None, :]
    bias = tl.load(bias_ptr + d, mask=mask_d, other=0.0).to(tl.float32)[:, None] if HAS_BIAS else 0.0
    dt_pre = _step_size(tl.load(delta_ptr + ptr2, mask=mask2, other=0.0), bias, HAS_BIAS, False)
    # The adjoint runs backwards in time: its scan reads the chunk in reversed order (index i <-> step
    # BLOCK_T - 1 - i) and its result is flipped back (a forward scan plus tl.flip, not associative_scan's
    # reverse=True, reported wrong on GPUs for non-commutative combines: triton-lang/triton#4362).
    offs_r = pid_c * BLOCK_T + (BLOCK_T - 1 - steps)
    mask_r = mask_d[:, None] & (offs_r < length)[None, :]
    ptr_r = (pid_b * dim * length + d * length)[:, None] + offs_r[None, :]
    # delta one step later (the reverse scan's coefficient); 0 (decay 1) past the end of the chunk or sequence
    mask_next = mask_d[:, None] & ((offs_r + 1) < length)[None, :] & (steps > 0)[None, :]
    dt = tl.where(mask2, _step_size(dt_pre, 0.0, False, SOFTPLUS), 0.0)
    dtu = dt * tl.load(u_ptr + ptr2, mask=mask2, other=0.0).to(tl.float32)
    dt_next = _step_size(tl.load(delta_ptr + ptr_r + 1, mask=mask_next, other=0.0), bias, HAS_BIAS, SOFTPLUS)
    dt_next = tl.where(mask_next, dt_next, 0.0)
    dy = tl.load(dout_ptr + ptr2, mask=mask2, other=0.0).to(tl.float32)
    dy_r = tl.load(dout_ptr + ptr_r, mask=mask_r, other=0.0).to(tl.float32)
    if HAS_Z:
        zz = tl.load(z_ptr + ptr2, mask=mask2, other=0.0).to(tl.float32)
        dy = dy * zz * tl.sigmoid(zz)
        z_r = tl.load(z_ptr + ptr_r, mask=mask_r, other=0.0).to(tl.float32)
        dy_r = dy_r * z_r * tl.sigmoid(z_r)
    is_first = (steps == 0)[None, :]  # first step of the chunk; in reversed order: its last step
    y_acc = tl.zeros((BLOCK_D, BLOCK_T), dtype=tl.float32)
    gB_acc = tl.zeros((BLOCK_D, BLOCK_T), dtype=tl.float32)
    ddt_acc = tl.zeros((BLOCK_D, BLOCK_T), dtype=tl.float32)
    state_row = ((pid_b * dim + d) * n_chunks + pid_c) * n_state
    for n in tl.range(0, n_state, num_stages=STAGES):
        A_n = tl.load(A_ptr + d * n_state + n, mask=mask_d, other=0.0).to(tl.float32)
        A2 = (A_n * 1.4426950408889634)[:, None]
        a = tl.exp2(dt * A2)
        a_next = tl.exp2(dt_next * A2)
        if B_FIXED:
            Bn = tl.load(B_ptr + d * n_state + n, mask=mask_d, other=0.0).to(tl.float32)[:, None]
        else:
            Bn = tl.load(B_ptr + pid_b * sbb + grp * sbg + n * sbn + offs_t, mask=mask_t,
                         other=0.0).to(tl.float32)[None, :]
        if C_FIXED:
            Cn = tl.load(C_ptr + d * n_state + n, mask=mask_d, other=0.0).to(tl.float32)[:, None]
            Cn_r = Cn
        else:
            Cn = tl.load(C_ptr + pid_b * scb + grp * scg + n * scn + offs_t, mask=mask_t,
                         other=0.0).to(tl.float32)[None, :]
            Cn_r = tl.load(C_ptr + pid_b * scb + grp * scg + n * scn + offs_r, mask=offs_r < length,
                           other=0.0).to(tl.float32)[None, :]
        x = dtu * Bn
        h_start = tl.load(starts_ptr + state_row + n, mask=mask_d, other=0.0)
        h = _scan_from(a, x, h_start, is_first)
        carry = tl.load(carries_ptr + state_row + n, mask=mask_d, other=0.0)
        _, g_r = tl.associative_scan((a_next, dy_r * Cn_r + tl.where(is_first, carry[:, None], 0.0)), 1,
                                     _affine_combine)
        g = tl.flip(g_r, 1)
        y_acc += h * Cn
        gB_acc += g * Bn
        w = g * (h - x)  # d loss / d log(a_t) = g_t a_t h_{t-1}, with a_t h_{t-1} = h_t - x_t
        ddt_acc += w * A2 * 0.6931471805599453  # * A (A2 / log2(e))
        _add_relaxed(dA_ptr + d * n_state + n, tl.sum(w * dt, axis=1), mask=mask_d)
        if C_FIXED:
            _add_relaxed(dC_ptr + d * n_state + n, tl.sum(dy * h, axis=1), mask=mask_d)
        else:
            _add_relaxed(dC_ptr + pid_b * scb + grp * scg + n * scn + offs_t, tl.sum(dy * h, axis=0),
                          mask=mask_t)
        if B_FIXED:
            _add_relaxed(dB_ptr + d * n_state + n, tl.sum(g * dtu, axis=1), mask=mask_d)
        else:
            _add_relaxed(dB_ptr + pid_b * sbb + grp * sbg + n * sbn + offs_t, tl.sum(g * dtu, axis=0),
                          mask=mask_t)
    u = tl.load(u_ptr + ptr2, mask=mask2, other=0.0).to(tl.float32)
    du = dt * gB_acc
    y_pre = y_acc
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=mask_d, other=0.0).to(tl.float32)[:, None]
        y_pre = y_pre + Dv * u
        du = du + dy * Dv
        _add_relaxed(dD_ptr + d, tl.sum(dy * u, axis=1), mask=mask_d)
    if HAS_Z:
        dout = tl.load(dout_ptr + ptr2, mask=mask2, other=0.0).to(tl.float32)
        zz = tl.load(z_ptr + ptr2, mask=mask2, other=0.0).to(tl.float32)
        sig_z = tl.sigmoid(zz)
        dz = dout * y_pre * sig_z * (1.0 + zz * (1.0 - sig_z))
        tl.store(dz_ptr + ptr2, dz, mask=mask2)
    ddt = ddt_acc + u * gB_acc
    if SOFTPLUS:  # softplus' = the sigmoid of the step size before it
        ddt = ddt * tl.sigmoid(_step_size(tl.load(delta_ptr + ptr2, mask=mask2, other=0.0), bias, HAS_BIAS, False))
    ddt = tl.where(mask2, ddt, 0.0)
    tl.store(du_ptr + ptr2, du, mask=mask2)
    tl.store(ddelta_ptr + ptr2, ddt, mask=mask2)
    if HAS_BIAS:
        _add_relaxed(dbias_ptr + d, tl.sum(ddt, axis=1), mask=mask_d)


def _bwd_single_pass_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, starts_ptr,
                            dlast_ptr, du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dz_ptr, dbias_ptr,
                            dim, length, n_state, n_chunks, P, sbb, sbg, sbn, scb, scg, scn,
                            B_FIXED: tl.constexpr, C_FIXED: tl.constexpr, HAS_D: tl.constexpr,
                            HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                            HAS_DLAST: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
                            STAGES: tl.constexpr):
    """All gradients of one channel in one program, walking its chunks from the last to the first.

    The backward counterpart of ``_fwd_single_pass_kernel`` (the layout of mamba_ssm's CUDA backward: one block per
    channel, the adjoint carried from chunk to chunk, no carry pass and no combine). Per chunk of ``BLOCK_T`` steps
    the states and the adjoints of all ``N`` are ``(BLOCK_N, BLOCK_T)`` tiles from two associative scans: states
    from the saved chunk start (``starts: (B, D, nc, N)``), adjoints from the one carried out of the later chunk
    (the last chunk starts from ``dlast``). dB/dC are added atomically per channel (B * D * N * L adds, as
    mamba_ssm); dA, dD, ddelta_bias are summed in registers and added once. Grid: (batch, dim).
    """
    pid_b = tl.program_id(0)
    d = tl.program_id(1)
    grp, offs_n, mask_n, A2, row, bias = _channel_row(pid_b, d, dim, length, n_state, P, A_ptr, bias_ptr, HAS_BIAS,
                                                      BLOCK_N)
    steps = tl.arange(0, BLOCK_T)
    if HAS_D:
        Dv = tl.load(D_ptr + d).to(tl.float32)
    if B_FIXED:
        B_fix = tl.load(B_ptr + d * n_state + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
        dB_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    if C_FIXED:
        C_fix = tl.load(C_ptr + d * n_state + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
        dC_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    if HAS_DLAST:
        g_carry = tl.load(dlast_ptr + (pid_b * dim + d) * n_state + offs_n, mask=mask_n, other=0.0)
    else:
        g_carry = tl.zeros((BLOCK_N,), dtype=tl.float32)
    dA_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    dD_acc = tl.sum(tl.zeros((BLOCK_T,), dtype=tl.float32), axis=0)
    dbias_acc = tl.sum(tl.zeros((BLOCK_T,), dtype=tl.float32), axis=0)
    for i in tl.range(0, n_chunks, num_stages=STAGES):
        chunk = n_chunks - 1 - i
        offs_t = chunk * BLOCK_T + steps
        mask_t = offs_t < length
        # reversed order inside the chunk, for the adjoint's scan (flipped back after it, as in _bwd_chunk_kernel)
        offs_r = chunk * BLOCK_T + (BLOCK_T - 1 - steps)
        mask_r = offs_r < length
        mask_next = ((offs_r + 1) < length) & (steps > 0)  # the next step's delta; decay 1 past the chunk's end
        dt_pre = _step_size(tl.load(delta_ptr + row + offs_t, mask=mask_t, other=0.0), bias, HAS_BIAS, False)
        dt = tl.where(mask_t, _step_size(dt_pre, 0.0, False, SOFTPLUS), 0.0)
        dt_next = _step_size(tl.load(delta_ptr + row + offs_r + 1, mask=mask_next, other=0.0), bias, HAS_BIAS,
                             SOFTPLUS)
        dt_next = tl.where(mask_next, dt_next, 0.0)
        u = tl.load(u_ptr + row + offs_t, mask=mask_t, other=0.0).to(tl.float32)
        dout = tl.load(dout_ptr + row + offs_t, mask=mask_t, other=0.0).to(tl.float32)
        dy_r = tl.load(dout_ptr + row + offs_r, mask=mask_r, other=0.0).to(tl.float32)
        if HAS_Z:
            zz = tl.load(z_ptr + row + offs_t, mask=mask_t, other=0.0).to(tl.float32)
            sig_z = tl.sigmoid(zz)
            dy = dout * zz * sig_z
            z_r = tl.load(z_ptr + row + offs_r, mask=mask_r, other=0.0).to(tl.float32)
            dy_r = dy_r * z_r * tl.sigmoid(z_r)
        else:
            dy = dout
        mask_nt = mask_n[:, None] & mask_t[None, :]
        if B_FIXED:
            Bt = B_fix
        else:
            Bt = tl.load(B_ptr + pid_b * sbb + grp * sbg + offs_n[:, None] * sbn + offs_t[None, :], mask=mask_nt,
                         other=0.0).to(tl.float32)
        if C_FIXED:
            Ct = C_fix
            Ct_r = C_fix
        else:
            Ct = tl.load(C_ptr + pid_b * scb + grp * scg + offs_n[:, None] * scn + offs_t[None, :], mask=mask_nt,
                         other=0.0).to(tl.float32)
            Ct_r = tl.load(C_ptr + pid_b * scb + grp * scg + offs_n[:, None] * scn + offs_r[None, :],
                           mask=mask_n[:, None] & mask_r[None, :], other=0.0).to(tl.float32)
        first = steps[None, :] == 0
        a = tl.exp2(A2[:, None] * dt[None, :])
        a_next = tl.exp2(A2[:, None] * dt_next[None, :])
        dtu = dt * u
        x = Bt * dtu[None, :]
        h_start = tl.load(starts_ptr + ((pid_b * dim + d) * n_chunks + chunk) * n_state + offs_n, mask=mask_n,
                          other=0.0)
        h = _scan_from(a, x, h_start, first)
        _, g_r = tl.associative_scan((a_next, Ct_r * dy_r[None, :] + tl.where(first, g_carry[:, None], 0.0)), 1,
                                     _affine_combine)
        g = tl.flip(g_r, 1)
        g_carry = tl.sum(tl.where(first, a * g, 0.0), axis=1)  # the adjoint sent to the previous chunk's end
        gB = tl.sum(g * Bt, axis=0)
        w = g * (h - x)  # d loss / d log(a_t) = g_t a_t h_{t-1}, with a_t h_{t-1} = h_t - x_t
        ddt = tl.sum(w * A2[:, None], axis=0) * 0.6931471805599453 + u * gB
        du = dt * gB
        if HAS_D:
            du = du + dy * Dv
            dD_acc += tl.sum(dy * u, axis=0)
        if HAS_Z:
            y = tl.sum(h * Ct, axis=0)
            if HAS_D:
                y = y + Dv * u
            tl.store(dz_ptr + row + offs_t, dout * y * sig_z * (1.0 + zz * (1.0 - sig_z)), mask=mask_t)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(dt_pre)
        ddt = tl.where(mask_t, ddt, 0.0)
        tl.store(du_ptr + row + offs_t, du, mask=mask_t)
        tl.store(ddelta_ptr + row + offs_t, ddt, mask=mask_t)
        dbias_acc += tl.sum(ddt, axis=0)
        dA_acc += tl.sum(w * dt[None, :], axis=1)
        if B_FIXED:
            dB_acc += tl.sum(g * dtu[None, :], axis=1)
        else:
            _add_relaxed(dB_ptr + pid_b * sbb + grp * sbg + offs_n[:, None] * sbn + offs_t[None, :],
                          g * dtu[None, :], mask=mask_nt)
        if C_FIXED:
            dC_acc += tl.sum(h * dy[None, :], axis=1)
        else:
            _add_relaxed(dC_ptr + pid_b * scb + grp * scg + offs_n[:, None] * scn + offs_t[None, :],
                          h * dy[None, :], mask=mask_nt)
    _add_relaxed(dA_ptr + d * n_state + offs_n, dA_acc, mask=mask_n)
    if B_FIXED:
        _add_relaxed(dB_ptr + d * n_state + offs_n, dB_acc, mask=mask_n)
    if C_FIXED:
        _add_relaxed(dC_ptr + d * n_state + offs_n, dC_acc, mask=mask_n)
    if HAS_D:
        _add_relaxed(dD_ptr + d, dD_acc)
    if HAS_BIAS:
        _add_relaxed(dbias_ptr + d, dbias_acc)


@functools.lru_cache(maxsize=None)
def _kernels(interpret: bool) -> types.SimpleNamespace:
    """The kernels wrapped for Triton's CPU interpreter (``interpret=True``) or for GPU compilation.

    Each mode gets its own copies of the functions with their own globals, so the two never share state.
    """
    import triton
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    wrap = InterpretedFunction if interpret else JITFunction
    namespace = dict(globals(), tl=tl, triton=triton)
    for name in _HELPERS + _KERNELS:
        fn = globals()[name]
        copy = types.FunctionType(fn.__code__, namespace, name, fn.__defaults__, fn.__closure__)
        copy.__doc__, copy.__module__, copy.__qualname__ = fn.__doc__, fn.__module__, fn.__qualname__
        copy.__annotations__ = dict(fn.__annotations__)  # the JIT finds its tl.constexpr parameters here
        namespace[name] = wrap(copy)
    return types.SimpleNamespace(**{name: namespace[name] for name in _KERNELS})


def triton_available(u: torch.Tensor) -> bool:
    """True when Triton imports and can run on ``u``: CUDA tensors, or CPU tensors under Triton's interpreter.

    The interpreter needs ``TRITON_INTERPRET=1`` now *and* when ``triton`` was first imported in this process
    (Triton wraps its own standard library, ``tl.zeros``, ``tl.sigmoid``..., at import); CPU tensors are refused
    when Triton was imported in compiled mode, so ``backend="auto"`` never picks a backend that cannot run.
    """
    if u.is_cuda:
        return triton_mode() is not None
    return os.environ.get("TRITON_INTERPRET") == "1" and triton_mode() == "interpret"


@functools.lru_cache(maxsize=None)
def triton_mode() -> Optional[str]:
    """``"interpret"`` or ``"compile"``: how Triton was set up when first imported (fixed for the process);
    None when it does not import."""
    try:
        import triton.language as tl
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return None
    return "interpret" if isinstance(tl.standard.sigmoid, InterpretedFunction) else "compile"


def default_chunk_length(length: int) -> int:
    """Steps per chunk ``T``: a power of two, 64 for long sequences, at least 16 (the backward's time tile).

    64 keeps the backward's ``(BLOCK_D, T)`` tiles small in registers and gives ``L / 64`` programs per channel
    block, so even ``B * D = 48`` channels at ``L = 32768`` launch ~1500 programs.
    """
    return max(16, min(64, triton_next_power_of_2(length)))


def triton_next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 2 ** math.ceil(math.log2(n))


def _bc_layout(t: torch.Tensor) -> tuple[bool, int, int, int, int]:
    """``(fixed, groups, stride_batch, stride_group, stride_state)`` of a contiguous B or C (time stride 1)."""
    if t.dim() == 2:
        return True, 1, 0, 0, 0
    if t.dim() == 3:  # shared (B, N, L): every group reads group 0
        return False, 1, t.stride(0), 0, t.stride(1)
    return False, t.shape[1], t.stride(0), t.stride(1), t.stride(2)


class _Launch:
    """Grid and flags shared by the forward and the backward of one call."""

    def __init__(self, u, A, B, C, D, z, delta_bias, softplus, chunk_length, block_d, block_d_backward, forward,
                 block_t, num_warps, num_warps_backward, backward="chunk_parallel", block_d_carry=32,
                 num_warps_carry=None, num_stages=None, num_stages_serial=None):
        batch, self.dim, self.length = u.shape
        self.batch, self.n_state = batch, A.shape[1]
        self.B_fixed, g_b, *self.b_strides = _bc_layout(B)
        self.C_fixed, g_c, *self.c_strides = _bc_layout(C)
        self.groups = max(g_b, g_c)
        self.P = self.dim // self.groups
        self.T = chunk_length or default_chunk_length(self.length)
        if self.T & (self.T - 1):
            raise ValueError(f"selective_scan_triton: chunk_length must be a power of two, got {self.T}")
        self.n_chunks = -(-self.length // self.T)
        self.block_d, self.n_pblocks = self._channel_blocks(block_d)
        self.bwd_block_d, self.bwd_n_pblocks = self._channel_blocks(block_d_backward)
        self.carry_block_d, self.carry_n_pblocks = self._channel_blocks(block_d_carry)
        self.block_n = triton_next_power_of_2(self.n_state)
        # CARRY_ELEMENTS_PER_THREAD state elements per thread; at N = 16 and 32 channels: 1 warp
        self.num_warps_carry = num_warps_carry or max(1, min(8, self.carry_block_d * self.block_n
                                                             // (32 * CARRY_ELEMENTS_PER_THREAD)))
        self.flags = dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                          SOFTPLUS=softplus)
        self.kernels = _kernels(triton_mode() == "interpret")
        channels = batch * self.dim
        many = channels >= MANY_CHANNELS
        if forward == "auto":
            forward = "two_pass" if self.length > TWO_PASS_MIN_STEPS_PER_CHANNEL * channels else "single_pass"
        block_t = block_t or (128 if many else 256)
        num_warps = num_warps or (2 if many or forward == "two_pass" else 4)
        num_warps_backward = num_warps_backward or (2 if many else 4)
        if forward not in ("single_pass", "two_pass"):
            raise ValueError(f"selective_scan_triton: forward must be 'auto', 'single_pass' or 'two_pass', got "
                             f"{forward!r}")
        if block_t & (block_t - 1):
            raise ValueError(f"selective_scan_triton: block_t must be a power of two, got {block_t}")
        if backward not in ("chunk_parallel", "single_pass"):
            raise ValueError(f"selective_scan_triton: backward must be 'chunk_parallel' or 'single_pass', got "
                             f"{backward!r}")
        self.backward = backward
        self.forward = forward
        self.block_t = min(block_t, max(16, triton_next_power_of_2(self.length)))
        self.num_warps, self.num_warps_backward = num_warps, num_warps_backward
        for name, stages in (("num_stages", num_stages), ("num_stages_serial", num_stages_serial)):
            if stages is not None and (not isinstance(stages, int) or stages < 1):
                raise ValueError(f"selective_scan_triton: {name} must be a positive int, got {stages!r}")
        # software-pipelining depth: tile loops (single-pass forward and backward, the gradient kernel's loop over
        # states) and serial loops (the two-pass forward and the carry pass step by step, the chunk combine)
        self.stages = num_stages or DEFAULT_STAGES
        self.stages_serial = num_stages_serial or DEFAULT_STAGES_SERIAL

    def _channel_blocks(self, block_d: int) -> tuple[int, int]:
        """``(channels per program, programs per B/C group)``: ``block_d`` capped at the group's channels rounded
        up to a power of two."""
        block = min(block_d, triton_next_power_of_2(self.P))
        return block, -(-self.P // block)

    def grid(self, n_chunks: int, n_pblocks: Optional[int] = None) -> tuple[int, int, int]:
        return (self.batch, self.groups * (n_pblocks or self.n_pblocks), n_chunks)

    def combine(self, local, sumdelta, A, init, reverse: bool) -> torch.Tensor:
        """The chunk-boundary states ``(B, D, nc, N)`` of :func:`_chunk_combine_kernel`: tiles of up to
        ``COMBINE_BLOCK_C`` chunks by ``COMBINE_TILE // block_c`` (channel, state) pairs, 4 warps."""
        out = torch.empty_like(local)
        block_c = min(COMBINE_BLOCK_C, triton_next_power_of_2(max(2, self.n_chunks - 1)))
        block_p = max(1, COMBINE_TILE // block_c)
        self.kernels._chunk_combine_kernel[(self.batch, -(-self.dim * self.n_state // block_p))](
            local, sumdelta, A, init if init is not None else local, out, self.dim, self.n_state, self.n_chunks,
            REVERSE=reverse, HAS_INIT=init is not None, BLOCK_P=block_p, BLOCK_C=block_c,
            STAGES=self.stages_serial)
        return out


def _placeholder(t: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    return t if t is not None else like  # never read: the matching HAS_* flag is off


class _TritonScanFn(torch.autograd.Function):
    """``(out, last_state)`` of the selective scan; all inputs contiguous, in their own dtypes."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, options):
        launch = _Launch(u, A, B, C, D, z, delta_bias, softplus, **options)
        k, f32 = launch.kernels, dict(dtype=torch.float32, device=u.device)
        # the state entering every chunk (what the backward needs); chunk 0 starts from zeros
        states = torch.zeros(launch.batch, launch.dim, launch.n_chunks, launch.n_state, **f32)
        out = torch.empty_like(u)
        last = torch.empty(launch.batch, launch.dim, launch.n_state, **f32)
        args = (u, delta, A, B, C, _placeholder(D, u), _placeholder(z, u), _placeholder(delta_bias, u))
        if launch.forward == "single_pass":
            k._fwd_single_pass_kernel[(launch.batch, launch.dim)](
                *args, out, states, last, launch.dim, launch.length, launch.n_state, launch.n_chunks, launch.P,
                *launch.b_strides, *launch.c_strides, B_FIXED=launch.B_fixed, C_FIXED=launch.C_fixed,
                BLOCK_N=launch.block_n, BLOCK_T=launch.block_t, CHUNK=launch.T, STAGES=launch.stages,
                num_warps=launch.num_warps, **launch.flags)
        else:
            sumdelta = torch.empty(launch.batch, launch.dim, launch.n_chunks, **f32)
            common = (launch.dim, launch.length, launch.n_state, launch.n_chunks, launch.T, launch.P,
                      launch.n_pblocks, *launch.b_strides, *launch.c_strides)
            consts = dict(B_FIXED=launch.B_fixed, C_FIXED=launch.C_fixed, BLOCK_D=launch.block_d,
                          BLOCK_N=launch.block_n, STAGES=launch.stages_serial, **launch.flags)
            if launch.n_chunks > 1:  # pass 1: end states of every chunk but the last, from zero; combine: starts
                k._fwd_chunk_kernel[launch.grid(launch.n_chunks - 1)](*args, out, states, sumdelta, last, *common,
                                                                      OUTPUT=False, num_warps=launch.num_warps,
                                                                      **consts)
                states = launch.combine(states, sumdelta, A, None, reverse=False)
            k._fwd_chunk_kernel[launch.grid(launch.n_chunks)](*args, out, states, sumdelta, last, *common,
                                                              OUTPUT=True, num_warps=launch.num_warps, **consts)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
        ctx.launch = launch
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, starts = ctx.saved_tensors
        launch = ctx.launch
        k, f32 = launch.kernels, dict(dtype=torch.float32, device=u.device)
        dout = dout.contiguous() if dout is not None else torch.zeros_like(u)
        dlast = dlast.float().contiguous() if dlast is not None else None
        Dp, zp, biasp = _placeholder(D, u), _placeholder(z, u), _placeholder(delta_bias, u)
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dz = torch.empty_like(z) if z is not None else None
        dA, dB, dC = (torch.zeros(t.shape, **f32) for t in (A, B, C))
        dD = torch.zeros(launch.dim, **f32)
        dbias = torch.zeros(launch.dim, **f32)
        grads = (du, ddelta, dA, dB, dC, dD, _placeholder(dz, du), dbias)
        if launch.backward == "single_pass":
            k._bwd_single_pass_kernel[(launch.batch, launch.dim)](
                u, delta, A, B, C, Dp, zp, biasp, dout, starts, dlast if dlast is not None else starts, *grads,
                launch.dim, launch.length, launch.n_state, launch.n_chunks, launch.P, *launch.b_strides,
                *launch.c_strides, B_FIXED=launch.B_fixed, C_FIXED=launch.C_fixed, HAS_DLAST=dlast is not None,
                BLOCK_N=launch.block_n, BLOCK_T=launch.T, STAGES=launch.stages, num_warps=launch.num_warps_backward,
                **launch.flags)
        else:
            if launch.n_chunks > 1:
                local = torch.empty_like(starts)  # chunk 0 sends nothing: its slot stays unused
                sumdelta = torch.empty(launch.batch, launch.dim, launch.n_chunks, **f32)
                k._bwd_chunk_carry_kernel[launch.grid(launch.n_chunks - 1, launch.carry_n_pblocks)](
                    delta, A, C, zp, biasp, dout, local, sumdelta, launch.dim, launch.length, launch.n_state,
                    launch.n_chunks, launch.T, launch.P, launch.carry_n_pblocks, *launch.c_strides,
                    C_FIXED=launch.C_fixed, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                    SOFTPLUS=launch.flags["SOFTPLUS"], BLOCK_D=launch.carry_block_d, BLOCK_N=launch.block_n,
                    STAGES=launch.stages_serial, num_warps=launch.num_warps_carry)
                carries = launch.combine(local, sumdelta, A, dlast, reverse=True)
            else:
                carries = dlast[:, :, None] if dlast is not None else torch.zeros_like(starts)
            k._bwd_chunk_kernel[launch.grid(launch.n_chunks, launch.bwd_n_pblocks)](
                u, delta, A, B, C, Dp, zp, biasp, dout, starts, carries.contiguous(), *grads, launch.dim,
                launch.length, launch.n_state, launch.n_chunks, launch.P, launch.bwd_n_pblocks, *launch.b_strides,
                *launch.c_strides, B_FIXED=launch.B_fixed, C_FIXED=launch.C_fixed, BLOCK_D=launch.bwd_block_d,
                BLOCK_T=launch.T, STAGES=launch.stages, num_warps=launch.num_warps_backward, **launch.flags)
        return (du, ddelta, dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
                dD.to(D.dtype) if D is not None else None, dz,
                dbias.to(delta_bias.dtype) if delta_bias is not None else None, None, None)


def selective_scan_triton(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                          D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                          delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                          return_last_state: bool = False, chunk_length: Optional[int] = None, block_d: int = 16,
                          block_d_backward: int = 8, forward: str = "auto", block_t: Optional[int] = None,
                          num_warps: Optional[int] = None, num_warps_backward: Optional[int] = None,
                          backward: str = "chunk_parallel", block_d_carry: int = 32,
                          num_warps_carry: Optional[int] = None, num_stages: Optional[int] = None,
                          num_stages_serial: Optional[int] = None):
    """Fused selective scan (arguments and shapes as :func:`mambaseg.ops.selective_scan`).

    Args:
        chunk_length: steps per chunk ``T`` (a power of two); default :func:`default_chunk_length`.
        block_d: channels per program of the two-pass forward's sequential kernel, capped at the
            channels per B/C group rounded up to a power of two; the state tile is ``(block_d, N)``.
        block_d_backward: channels per program of the backward's gradient kernel, whose tiles are
            ``(block_d_backward, chunk_length)``: on sm_90, 8 x 64 takes 168 registers at 2 warps and 124 at 4,
            16 x 64 255 and 179, none spilling (``benchmarks/triton_sass.py``).
        forward: ``"single_pass"`` (one program per channel walks all of L, one exponential per (step, state)),
            ``"two_pass"`` (L split across programs; each chunk is scanned twice) or ``"auto"``: two-pass when
            ``L > TWO_PASS_MIN_STEPS_PER_CHANNEL * batch * dim`` (3D: few channels, long L), else single-pass.
        block_t: steps per tile of the single-pass kernel (a power of two); default 128 from ``MANY_CHANNELS``
            channels (batch * dim) on, else 256.
        num_warps, num_warps_backward: warps per program of the forward kernels and of the backward's gradient
            kernel; default 2 from ``MANY_CHANNELS`` channels on (and for the two-pass forward), else 4.
        backward: ``"chunk_parallel"`` (carry pass, combine, then one program per channel block and chunk) or
            ``"single_pass"`` (one program per channel walks its chunks backwards, carrying the adjoint; chunks of
            ``chunk_length`` steps are its tiles). The single pass is not yet timed on a GPU.
        block_d_carry, num_warps_carry: channels and warps per program of the chunk-parallel backward's carry pass
            (a step-by-step walk with the ``(block_d_carry, N)`` adjoint in registers). The default warps give each
            thread ``CARRY_ELEMENTS_PER_THREAD`` (16) state elements, over which the per-step loads and step sizes
            are shared (1 warp at N = 16, 4 at N = 64): compiled for sm_90 at N = 16 that is 9.6 instructions per
            (step, state) against 59.5 for the earlier 16 x 4 warps (``benchmarks/triton_sass.py``,
            results/triton_sass_sm90.md); not yet timed on a GPU.
        num_stages, num_stages_serial: software-pipelining depth of the tile loops (single-pass forward and
            backward, the gradient kernel's loop over states) and of the serial loops (two-pass forward and carry
            pass, step by step; the chunk combine); default ``DEFAULT_STAGES`` and ``DEFAULT_STAGES_SERIAL`` (1: no
            pipelining). Not yet timed on a GPU.
        The defaults are the fastest settings of an H200 sweep (``benchmarks/triton_tune.py``), except the carry
        pass's, chosen by the static cost model.

    Returns:
        ``out: (batch, dim, L)`` in the dtype of ``u``, and ``last_state: (batch, dim, N)`` (fp32) if asked.
    """
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    if not triton_available(u):
        raise RuntimeError(f"selective_scan_triton: cannot run on u on {u.device} (triton mode: {triton_mode()}): "
                           "it needs the triton package and CUDA tensors, or for CPU tensors Triton's interpreter, "
                           "TRITON_INTERPRET=1 set before triton is first imported in the process")
    tensors = [t.contiguous() if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)]
    options = dict(chunk_length=chunk_length, block_d=block_d, block_d_backward=block_d_backward, forward=forward,
                   block_t=block_t, num_warps=num_warps, num_warps_backward=num_warps_backward, backward=backward,
                   block_d_carry=block_d_carry, num_warps_carry=num_warps_carry, num_stages=num_stages,
                   num_stages_serial=num_stages_serial)
    out, last = _TritonScanFn.apply(*tensors, bool(delta_softplus), options)
    return (out, last) if return_last_state else out


_FP32_BUFFERS = ("state_ptr", "sumdelta_ptr", "last_ptr", "local_ptr", "starts_ptr", "carries_ptr", "init_ptr",
                 "dA_ptr", "dB_ptr", "dC_ptr", "dD_ptr", "dbias_ptr", "dlast_ptr")


def compile_for_gpu(capability: int = 90, io_dtype: str = "bf16") -> dict:
    """Compiles every kernel, in flag combinations that cover each code path, to a cubin for ``sm_<capability>``.

    Needs no GPU (Triton ships its compiler and ptxas), only Triton in compiled mode; a CI check that the kernels
    build for real hardware, which the interpreter cannot tell (loop-carried types, constexpr branches, atomics,
    software-pipelined loops: about half the variants set ``STAGES`` above 1).

    Args:
        capability: CUDA compute capability times ten (90: H100).
        io_dtype: Triton dtype of the tensors in the inputs' dtype (``"fp32"``, ``"bf16"``, ``"fp16"``) in the
            variants that use it; fp32 buffers (states, fp32 gradients) stay fp32.

    Returns:
        ``{variant name: compiled kernel}``.
    """
    if triton_mode() != "compile":
        raise RuntimeError(f"compile_for_gpu: needs triton imported in compiled mode, found {triton_mode()!r} "
                           "(unset TRITON_INTERPRET before the first import of triton)")
    k = _kernels(False)
    on = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True)
    off = dict.fromkeys(on, False)
    tiles = dict(BLOCK_D=16, BLOCK_N=16)
    variants = {
        "fwd_output_fixed_B": (k._fwd_chunk_kernel, io_dtype, dict(OUTPUT=True, B_FIXED=True, C_FIXED=False,
                                                                   STAGES=3, **tiles, **on)),
        "fwd_states_fixed_C": (k._fwd_chunk_kernel, "fp32", dict(OUTPUT=False, B_FIXED=False, C_FIXED=True,
                                                                 STAGES=1, **tiles, **off)),
        "fwd_single_pass": (k._fwd_single_pass_kernel, io_dtype, dict(B_FIXED=False, C_FIXED=False, BLOCK_N=16,
                                                                     BLOCK_T=128, CHUNK=64, STAGES=2, **on)),
        "fwd_single_pass_fixed": (k._fwd_single_pass_kernel, "fp32", dict(B_FIXED=True, C_FIXED=True, BLOCK_N=16,
                                                                          BLOCK_T=128, CHUNK=256, STAGES=1, **off)),
        "bwd_single_pass": (k._bwd_single_pass_kernel, io_dtype, dict(B_FIXED=False, C_FIXED=False,
                                                                     HAS_DLAST=True, BLOCK_N=16, BLOCK_T=64, STAGES=2,
                                                                     **on)),
        "bwd_single_pass_fixed": (k._bwd_single_pass_kernel, "fp32", dict(B_FIXED=True, C_FIXED=True,
                                                                          HAS_DLAST=False, BLOCK_N=16, BLOCK_T=64,
                                                                          STAGES=1, **off)),
        "combine_reverse": (k._chunk_combine_kernel, "fp32", dict(REVERSE=True, HAS_INIT=True, BLOCK_P=16,
                                                                  BLOCK_C=64, STAGES=4)),
        "combine_forward": (k._chunk_combine_kernel, "fp32", dict(REVERSE=False, HAS_INIT=False, BLOCK_P=8,
                                                                  BLOCK_C=128, STAGES=1)),
        "bwd_carry": (k._bwd_chunk_carry_kernel, io_dtype, dict(C_FIXED=False, HAS_Z=True, HAS_BIAS=True,
                                                                SOFTPLUS=True, STAGES=3, **tiles)),
        # the carry pass's default launch at N = 16: 1 warp (every other variant: 4)
        "bwd_carry_default_tile": (k._bwd_chunk_carry_kernel, io_dtype, dict(C_FIXED=True, HAS_Z=True, HAS_BIAS=False,
                                                                             SOFTPLUS=True, BLOCK_D=32, BLOCK_N=16,
                                                                             STAGES=1), 1),
        "bwd_fixed_C": (k._bwd_chunk_kernel, io_dtype, dict(B_FIXED=False, C_FIXED=True, BLOCK_D=8, BLOCK_T=64,
                                                            STAGES=2, **on)),
        "bwd_fixed_B_plain": (k._bwd_chunk_kernel, "fp32", dict(B_FIXED=True, C_FIXED=False, BLOCK_D=8, BLOCK_T=64,
                                                                STAGES=1, **off)),
    }
    compiled = {}
    for name, (kernel, dtype, constexprs, *num_warps) in variants.items():
        jit_constexprs = {p.name for p in kernel.params if p.is_constexpr}
        if jit_constexprs != set(constexprs):  # what a launch on a GPU compiles as constant must be these
            raise RuntimeError(f"compile_for_gpu: {name}: the JIT sees constexpr parameters {sorted(jit_constexprs)}, "
                               f"the variant sets {sorted(constexprs)}")
        names = kernel.arg_names
        signature = {n: "i32" for n in names}
        signature.update({n: f"*{'fp32' if n in _FP32_BUFFERS else dtype}" for n in names if n.endswith("_ptr")})
        signature.update(dict.fromkeys(constexprs, "constexpr"))
        compiled[name] = compile_cuda(kernel, signature, {(names.index(n),): v for n, v in constexprs.items()}, {},
                                      capability, num_warps[0] if num_warps else 4)
    return compiled


def compile_cuda(kernel, signature: dict, constants: dict, attrs: dict, capability: int, num_warps: int):
    """``kernel`` (a JIT-wrapped kernel of :func:`_kernels`) compiled for ``sm_<capability>`` without a GPU, with
    Triton's ``ASTSource`` arguments: ``signature`` (name -> type), ``constants`` and ``attrs`` keyed by
    ``(argument index,)``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    source = ASTSource(kernel, signature, constexprs=constants, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", capability, 32), options=dict(num_warps=num_warps))
