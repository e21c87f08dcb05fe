"""Public entry point of the selective scan (S6) and its backend registry.

``selective_scan`` has exactly the semantics of ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``
(Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", arXiv 2312.00752), so models
written against mamba_ssm run unchanged, on any device, without a CUDA build.

Backends:
    ``reference``  sequential recurrence, the specification (slow; for tests).
    ``chunked``    two-level chunked scan in pure PyTorch with a memory-lean custom backward (CPU and GPU).
    ``mamba_ssm``  mamba_ssm's CUDA kernel, when that package imports and the tensors are on CUDA.
    ``numba``      fused CPU kernels compiled at first use by Numba (a wheel; no C compiler), when it imports.
    ``triton``     fused GPU kernels written in Triton (compiled at first use), on CUDA when Triton imports; on CPU
                   only under Triton's interpreter (``TRITON_INTERPRET=1``, for tests).
    ``auto``       the fastest available for the given tensors (mamba_ssm, else triton on CUDA; numba on CPU; else
                   chunked);
                   ``reference`` while tracing or exporting to ONNX (the chunked backend's autograd Function is
                   not traceable; the exported graph unrolls L).

Example:
    >>> import torch
    >>> from mambaseg.ops import selective_scan
    >>> u, delta = torch.randn(2, 8, 100), torch.rand(2, 8, 100)
    >>> A, B, C = -torch.rand(8, 16), torch.randn(2, 16, 100), torch.randn(2, 16, 100)
    >>> selective_scan(u, delta, A, B, C, delta_softplus=True).shape
    torch.Size([2, 8, 100])
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
from typing import Callable, Iterator, Optional

import torch

from ._checks import check_scan_inputs
from ._chunked import selective_scan_chunked
from ._numba import numba_available, selective_scan_numba
from ._reference import selective_scan_reference
from ._triton import selective_scan_triton, triton_available

_BACKENDS: dict[str, Callable] = {}
_AVAILABLE: dict[str, Callable[[torch.Tensor], bool]] = {}
#: Order in which ``backend="auto"`` tries the backends.
AUTO_PREFERENCE = ("mamba_ssm", "triton", "numba", "chunked")
_AUTO_OVERRIDE: contextvars.ContextVar = contextvars.ContextVar("mambaseg_scan_backend", default=None)


def register_backend(name: str, fn: Callable, available: Callable[[torch.Tensor], bool] = lambda u: True) -> None:
    """Registers a selective-scan implementation.

    Args:
        name: backend name passed as ``selective_scan(..., backend=name)``.
        fn: callable with the signature of :func:`selective_scan` minus ``backend``.
        available: predicate on ``u`` telling whether the backend can run on these tensors.
    """
    _BACKENDS[name] = fn
    _AVAILABLE[name] = available


def list_backends(u: Optional[torch.Tensor] = None) -> list[str]:
    """Names of registered backends; with ``u`` given, only those that can run on it."""
    return [n for n in _BACKENDS if u is None or _AVAILABLE[n](u)]


@functools.lru_cache(maxsize=None)
def _import_mamba_ssm():
    try:
        return importlib.import_module("mamba_ssm.ops.selective_scan_interface").selective_scan_fn
    except Exception:  # a broken CUDA build raises ImportError, OSError or RuntimeError: all mean "not available"
        return None


def _mamba_ssm_available(u: torch.Tensor) -> bool:
    return u.is_cuda and _import_mamba_ssm() is not None


def _selective_scan_mamba_ssm(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                              return_last_state=False):
    fn = _import_mamba_ssm()
    if fn is None:
        raise RuntimeError("selective_scan: backend 'mamba_ssm' needs the mamba_ssm package with its CUDA build "
                           "(pip install mamba-ssm); use backend='chunked' instead, which needs nothing")
    return fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
              return_last_state=return_last_state)


@contextlib.contextmanager
def use_backend(backend) -> Iterator[None]:
    """Within the ``with`` block, calls with ``backend="auto"`` (every block's default) use ``backend``.

    Args:
        backend: a registered backend name, or a callable with the signature of :func:`selective_scan` minus
            ``backend`` (used, for example, to count FLOPs with a stand-in).

    Example: ``with use_backend("reference"): model(x)`` runs a whole model on the sequential specification.
    """
    if not callable(backend) and backend not in _BACKENDS and backend != "auto":
        raise ValueError(f"use_backend: unknown backend {backend!r}; choose one of {['auto', *_BACKENDS]}")
    token = _AUTO_OVERRIDE.set(None if backend == "auto" else backend)
    try:
        yield
    finally:
        _AUTO_OVERRIDE.reset(token)


register_backend("reference", selective_scan_reference)
register_backend("chunked", selective_scan_chunked)
register_backend("mamba_ssm", _selective_scan_mamba_ssm, _mamba_ssm_available)
register_backend("numba", selective_scan_numba, lambda u: u.device.type == "cpu" and numba_available())
register_backend("triton", selective_scan_triton, triton_available)


def resolve_backend(backend: str, u: torch.Tensor) -> str:
    """Maps ``"auto"`` to a concrete backend for ``u`` and checks that a named backend exists and can run."""
    if backend == "auto" and isinstance(_AUTO_OVERRIDE.get(), str):
        backend = _AUTO_OVERRIDE.get()
    if backend == "auto" and (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
        return "reference"  # traceable: plain tensor ops (the exported graph unrolls the L steps)
    if backend == "auto":
        return next(n for n in AUTO_PREFERENCE + tuple(_BACKENDS) if n in _BACKENDS and _AVAILABLE[n](u))
    if backend not in _BACKENDS:
        raise ValueError(f"selective_scan: unknown backend {backend!r}; choose one of {['auto', *_BACKENDS]}")
    if not _AVAILABLE[backend](u):
        raise RuntimeError(f"selective_scan: backend {backend!r} is not available for tensors on {u.device}; "
                           f"available here: {list_backends(u)}")
    return backend


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                   delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                   return_last_state: bool = False, backend: str = "auto"):
    """Selective scan ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = <h_t, C_t> + D u_t``.

    Args:
        u: input, ``(batch, dim, L)``.
        delta: step sizes, ``(batch, dim, L)``; ``delta_bias`` is added and softplus applied if asked.
        A: state matrix (diagonal, real), ``(dim, N)``.
        B: input matrix: fixed ``(dim, N)``, shared ``(batch, N, L)`` or grouped ``(batch, G, N, L)``
            (channel ``d`` uses group ``d // (dim // G)``).
        C: output matrix, same layouts as ``B``.
        D: skip weight, ``(dim,)``.
        z: gate, ``(batch, dim, L)``; the output is multiplied by ``silu(z)``.
        delta_bias: ``(dim,)``, added to ``delta`` before the softplus.
        delta_softplus: apply softplus to ``delta``.
        return_last_state: also return the final state ``(batch, dim, N)`` (fp32). Its gradient is propagated by
            the ``reference`` and ``chunked`` backends (mamba_ssm's CUDA op does not propagate it).
        backend: ``"auto"``, ``"reference"``, ``"chunked"``, ``"mamba_ssm"`` or any registered name.

    Returns:
        ``out: (batch, dim, L)`` in the dtype of ``u`` (accumulated in fp32), and the last state if asked.
    """
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    override = _AUTO_OVERRIDE.get()
    fn = override if backend == "auto" and callable(override) else _BACKENDS[resolve_backend(backend, u)]
    return fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
              return_last_state=return_last_state)
