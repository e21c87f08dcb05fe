"""Numba kernels of the fused CPU selective scan (see :mod:`mambaseg.ops._numba` for the method).

Imported only when the ``numba`` backend runs, so that Numba stays optional. Compiled on first use and cached on
disk by Numba (``cache=True``), so later processes load the machine code instead of compiling it again.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_FAST = {"reassoc", "contract", "nsz", "arcp"}  # no nnan/ninf: NaN and inf must still propagate
_jit = numba.njit(parallel=True, fastmath=_FAST, cache=True, nogil=True)
_LOG2E, _LN2_HI, _LN2_LO = np.float32(1.4426950408889634), np.float32(0.693145751953125), np.float32(1.42860677e-06)
_C2, _C3, _C4, _C5, _C6 = (np.float32(1.0 / math.factorial(i)) for i in range(2, 7))
_LO, _HI, _HALF, _ONE = np.float32(-87.0), np.float32(88.0), np.float32(0.5), np.float32(1.0)
_THIRD, _QUARTER, _FIFTH, _SIXTH, _SEVENTH = (np.float32(1.0 / i) for i in range(3, 8))


@numba.njit(inline="always", fastmath=_FAST, cache=True)
def decays(dtv, A_row, out, bits, bits_f):
    """``out[n] = exp(dtv * A_row[n])`` for every state n (two loops that LLVM vectorises).

    ``exp(x) = 2**k * exp(r)`` with ``k = round(x / ln 2)``, ``|r| <= ln(2) / 2``: ``exp(r)`` by its degree-6 Taylor
    polynomial (relative error < 2e-7), ``2**k`` written straight into the exponent bits of ``bits``, which
    ``bits_f`` views as float32. ``x`` is clamped to [-87, 88] so that ``k + 127`` stays a normal exponent.
    """
    for n in range(A_row.shape[0]):
        x = dtv * A_row[n]
        x = _LO if x < _LO else (_HI if x > _HI else x)
        k = np.floor(x * _LOG2E + _HALF)
        r = x - k * _LN2_HI - k * _LN2_LO
        out[n] = _ONE + r * (_ONE + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * _C6)))))
        bits[n] = (np.int32(k) + np.int32(127)) << np.int32(23)
    for n in range(A_row.shape[0]):
        out[n] *= bits_f[n]


@numba.njit(inline="always", fastmath=_FAST, cache=True)
def scale_by_softplus_derivative(grad, act, tmp, bits, bits_f):
    """``grad[i] *= sigmoid(x_i) = 1 - exp(-act[i])`` where ``act = softplus(x)`` (vectorised, no scalar ``expm1``).

    Below 0.25 the alternating series ``1 - e^-s = s (1 - s/2 (1 - s/3 (...)))`` to ``s^7`` (truncation < 1e-9
    relative) avoids the cancellation of ``1 - exp(-s)``; above, ``exp(-s)`` from :func:`decays` (absolute error
    ~2e-7 on a result >= 0.22).
    """
    decays(np.float32(-1.0), act, tmp, bits, bits_f)
    for i in range(act.shape[0]):
        s = act[i]
        series = s * (_ONE - s * _HALF * (_ONE - s * _THIRD * (_ONE - s * _QUARTER * (
            _ONE - s * _FIFTH * (_ONE - s * _SIXTH * (_ONE - s * _SEVENTH))))))
        grad[i] *= series if s < _QUARTER else _ONE - tmp[i]


@numba.njit(inline="always", cache=True)
def unit_channels(unit, G, S, P):
    """(b, group, split, first channel, end channel) of a work unit."""
    b = unit // (G * S)
    g = (unit // S) % G
    s = unit % S
    width = (P + S - 1) // S
    d0 = g * P + s * width
    return b, g, s, d0, min(g * P + P, d0 + width)



@_jit
def forward(u, dt, A, Bm, Cm, Dskip, gB, gC, G, S, T, y, last, starts):
    """u, dt: (Bt, D, L); A: (D, N); Bm: (Bb, GB, Lb, N); Cm likewise; Dskip: (D,); gB/gC: channels per B/C group.

    Writes ``y = <h_t, C_t> + Dskip * u: (Bt, D, L)``, ``last: (Bt, D, N)`` and ``starts: (Bt, D, ceil(L / T), N)``.
    """
    batch, dim, L = u.shape
    N = A.shape[1]
    P = dim // G
    for unit in numba.prange(batch * G * S):
        b, g, s, d0, d1 = unit_channels(unit, G, S, P)
        bB, bC = b if Bm.shape[0] > 1 else 0, b if Cm.shape[0] > 1 else 0
        tB, tC = 1 if Bm.shape[2] > 1 else 0, 1 if Cm.shape[2] > 1 else 0
        h = np.empty(N, np.float32)
        a = np.empty(N, np.float32)
        bits = np.empty(N, np.int32)
        bits_f = bits.view(np.float32)
        for d in range(d0, d1):
            Bs, Cs, A_row = Bm[bB, d // gB], Cm[bC, d // gC], A[d]
            u_row, dt_row, y_row, starts_row = u[b, d], dt[b, d], y[b, d], starts[b, d]
            skip = Dskip[d]
            h[:] = 0.0
            for c in range((L + T - 1) // T):
                starts_row[c, :] = h
                for t in range(c * T, min(L, c * T + T)):
                    dtv = dt_row[t]
                    x = dtv * u_row[t]
                    decays(dtv, A_row, a, bits, bits_f)
                    tb, tc = t * tB, t * tC
                    acc = np.float32(0.0)
                    for n in range(N):
                        hn = a[n] * h[n] + x * Bs[tb, n]
                        h[n] = hn
                        acc += hn * Cs[tc, n]
                    y_row[t] = acc + skip * u_row[t]
            last[b, d, :] = h

@_jit
def backward(u, dt, A, Bm, Cm, Dskip, softplus, gB, gC, G, S, T, starts, dy, dlast, du, ddt, dA, dB, dC, dD):
    """Gradients. dA: (Bt, D, N) and dD: (Bt, D) per batch row; dB/dC: (Bt, S, G, Lb, N) partial sums per unit.

    With ``softplus``, ``dt`` holds ``softplus(x)`` and ``ddt`` receives the gradient with respect to ``x``:
    ``softplus'(x) = sigmoid(x) = 1 - exp(-softplus(x))``.
    """
    batch, dim, L = u.shape
    N = A.shape[1]
    P = dim // G
    for unit in numba.prange(batch * G * S):
        b, g, s, d0, d1 = unit_channels(unit, G, S, P)
        bB, bC = b if Bm.shape[0] > 1 else 0, b if Cm.shape[0] > 1 else 0
        tB, tC = 1 if Bm.shape[2] > 1 else 0, 1 if Cm.shape[2] > 1 else 0
        hs = np.empty((T + 1, N), np.float32)
        As = np.empty((T, N), np.float32)
        g_all = np.empty((d1 - d0, N), np.float32)  # per channel: d loss / d (state entering the current chunk)
        g_all[:] = dlast[b, d0:d1]
        dA_all = np.zeros((d1 - d0, N), np.float32)
        dD_all = np.zeros(d1 - d0, np.float32)
        bits = np.empty(max(N, T), np.int32)
        bits_f = bits.view(np.float32)
        sig_tmp = np.empty(T, np.float32)
        dBs, dCs = dB[b, s, g], dC[b, s, g]
        # chunks outermost: the chunk's rows of B, C, dB, dC stay in L1 while every channel of the unit passes
        for c in range((L + T - 1) // T - 1, -1, -1):
            t0 = c * T
            m = min(L, t0 + T) - t0
            for d in range(d0, d1):
                Bs, Cs, A_row = Bm[bB, d // gB], Cm[bC, d // gC], A[d]
                u_row, dt_row, dy_row, du_row, ddt_row = u[b, d], dt[b, d], dy[b, d], du[b, d], ddt[b, d]
                gst, dA_row = g_all[d - d0], dA_all[d - d0]
                skip, dskip = Dskip[d], np.float32(0.0)
                hs[0, :] = starts[b, d, c]
                for i in range(m):  # recompute this chunk's decays and states
                    dtv = dt_row[t0 + i]
                    x = dtv * u_row[t0 + i]
                    decays(dtv, A_row, As[i], bits, bits_f)
                    tb = (t0 + i) * tB
                    for n in range(N):
                        hs[i + 1, n] = As[i, n] * hs[i, n] + x * Bs[tb, n]
                for i in range(m - 1, -1, -1):
                    t = t0 + i
                    dtv, uv, dyv = dt_row[t], u_row[t], dy_row[t]
                    x = dtv * uv
                    tb, tc = t * tB, t * tC
                    s_gB = np.float32(0.0)
                    s_wA = np.float32(0.0)
                    for n in range(N):
                        dCs[tc, n] += dyv * hs[i + 1, n]
                        gn = gst[n] + dyv * Cs[tc, n]  # d loss / d h_t
                        dBs[tb, n] += gn * x
                        s_gB += gn * Bs[tb, n]
                        a_n = As[i, n]
                        w = gn * a_n * hs[i, n]  # d loss / d (delta_t A_n)
                        s_wA += w * A_row[n]
                        dA_row[n] += w * dtv
                        gst[n] = gn * a_n  # d loss / d h_{t-1}, before that step's own output term
                    du_row[t] = dtv * s_gB + dyv * skip
                    ddt_row[t] = uv * s_gB + s_wA
                    dskip += dyv * uv
                if softplus:  # d loss / d (pre-softplus delta), for the whole chunk at once
                    scale_by_softplus_derivative(ddt_row[t0:t0 + m], dt_row[t0:t0 + m], sig_tmp[:m], bits[:m],
                                                 bits_f[:m])
                dD_all[d - d0] += dskip
        dA[b, d0:d1] = dA_all
        dD[b, d0:d1] = dD_all

