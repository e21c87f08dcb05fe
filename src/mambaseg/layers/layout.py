"""Cache-friendly layout changes between token-major ``(B, L, C)`` and channel-major ``(B, C, L)`` tensors.

Mamba blocks switch layouts around every scan: ``in_proj`` gives ``(B, L, 2 d_inner)``, the causal convolution and
the scan want ``(B, d_inner, L)``. PyTorch's CPU copy of such a transposed view walks one side of the whole tensor
with a large stride; for 3D feature maps (L = 10^5-10^6 tokens) the token-major to channel-major copy ran 5.5x
slower than the same copy done in cache-sized slabs (``benchmarks/results/layout.md``), and its time grew faster
than the tensor. The helpers here do those copies slab by slab on the CPU and plainly elsewhere (GPU copies have
no such problem).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["copy_in_slabs_", "plain_layout_ops", "transpose_contiguous"]

#: Elements per batch item of one slab: 1 MiB of fp32, so that a strided slab copy stays in the L2 cache.
SLAB_ELEMENTS = 1 << 18


def copy_in_slabs_(dst: Tensor, src: Tensor, dim: int, width: int | None = None) -> Tensor:
    """``dst.copy_(src)`` done in slabs along ``dim`` of about :data:`SLAB_ELEMENTS` elements per batch item.

    Args:
        dst: Destination, any strides; ``dim`` must not be 0 (the batch axis).
        src: Source of ``dst``'s shape, any strides.
        dim: Axis to cut into slabs.
        width: Indices of ``dim`` per slab, instead of the :data:`SLAB_ELEMENTS` rule.

    Returns:
        ``dst``. On non-CPU devices, or when one slab holds everything, a single ``copy_``.
    """
    n = dst.shape[dim]
    step = width or max(1, SLAB_ELEMENTS // max(1, dst.numel() // max(1, dst.shape[0] * n)))
    if dst.device.type != "cpu" or step >= n:
        return dst.copy_(src)
    for start in range(0, n, step):
        width = min(step, n - start)
        dst.narrow(dim, start, width).copy_(src.narrow(dim, start, width))
    return dst


def plain_layout_ops() -> bool:
    """True while tracing, exporting (TorchScript or dynamo ONNX) or compiling: then the plain view expressions
    are recorded instead of the slab loops (one graph node each, which exporters and compilers handle well)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def _transpose_contiguous(x: Tensor) -> Tensor:
    out = x.new_empty(*x.shape[:-2], x.shape[-1], x.shape[-2])
    # slabs cut the long axis: each slab is a few long runs on one side and many short ones on the other
    long_axis = out.dim() - 1 if out.shape[-1] >= out.shape[-2] else out.dim() - 2
    return copy_in_slabs_(out, x.transpose(-1, -2), dim=long_axis)


class _TransposeContiguous(torch.autograd.Function):
    """``x.transpose(-1, -2).contiguous()`` in slabs; the backward is the same operation on the gradient."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return _transpose_contiguous(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return _transpose_contiguous(grad)


def transpose_contiguous(x: Tensor) -> Tensor:
    """``x.transpose(-1, -2).contiguous()``, e.g. ``(B, L, C) -> (B, C, L)``, with slab-wise copies on the CPU.

    Values are exactly those of the plain expression. Differentiable (the backward transposes the gradient the
    same way). While tracing, exporting or compiling (:func:`plain_layout_ops`), the plain expression is used.

    Args:
        x: ``(..., M, K)``.

    Returns:
        Contiguous ``(..., K, M)``.
    """
    if x.dim() < 3 or plain_layout_ops():
        return x.transpose(-1, -2).contiguous()
    return _TransposeContiguous.apply(x)
