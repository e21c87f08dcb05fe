"""Slab-wise layout changes (mambaseg.layers.layout) against the plain PyTorch expressions they replace."""

from __future__ import annotations

import pytest
import torch

from mambaseg.layers import copy_in_slabs_, layout, transpose_contiguous


@pytest.fixture(params=[5, 1 << 18], ids=["slabs-of-5", "default-slabs"])
def slab(request, monkeypatch):
    """Slab size: 5 elements forces many slabs with a ragged last one; the default leaves small tensors whole."""
    monkeypatch.setattr(layout, "SLAB_ELEMENTS", request.param)
    return request.param


@pytest.mark.parametrize("shape", [(2, 23, 3), (1, 7, 1), (2, 3, 11, 4), (0, 5, 3)])
def test_transpose_contiguous_equals_the_plain_expression(slab, shape):
    x = torch.randn(shape)
    for src in (x, x[..., ::2, :]):  # contiguous and strided inputs
        got = transpose_contiguous(src)
        assert got.is_contiguous() and torch.equal(got, src.transpose(-1, -2).contiguous())


def test_transpose_contiguous_gradient(slab):
    x = torch.randn(2, 13, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(transpose_contiguous, (x,))
    grad = torch.randn(2, 3, 13, dtype=torch.float64)
    (got,) = torch.autograd.grad(transpose_contiguous(x), x, grad)
    assert torch.equal(got, grad.transpose(1, 2))


def test_copy_in_slabs_writes_every_element_once(slab):
    dst = torch.zeros(2, 6, 17)
    src = torch.arange(2 * 17 * 6, dtype=torch.float32).view(2, 17, 6).transpose(1, 2)
    assert copy_in_slabs_(dst, src, dim=2) is dst and torch.equal(dst, src)
    dst = torch.zeros(2, 17, 6).transpose(1, 2)  # strided destination, contiguous source, slabs along dim 1
    assert torch.equal(copy_in_slabs_(dst, src.contiguous(), dim=1), src)
    dst = torch.zeros(2, 6, 17)  # an explicit slab width that does not divide the axis (ragged last slab)
    assert torch.equal(copy_in_slabs_(dst, src, dim=2, width=5), src)


def test_tracing_records_the_plain_expression():
    x = torch.randn(2, 9, 4)
    traced = torch.jit.trace(transpose_contiguous, (x,))
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert "prim::PythonOp" not in kinds and torch.equal(traced(x), x.transpose(1, 2).contiguous())


@pytest.mark.parametrize("shape, axis", [((1, 50, 3), 2), ((1, 3, 50), 1), ((2, 4, 7, 5), 3)])
def test_transpose_cuts_slabs_along_the_long_axis(monkeypatch, shape, axis):
    """Slabs along the long axis copy long runs; along the short one they degrade to column-by-column copies."""
    seen = []

    def spy(dst, src, dim):
        seen.append(dim)
        return dst.copy_(src)

    monkeypatch.setattr(layout, "copy_in_slabs_", spy)
    x = torch.randn(shape)
    assert torch.equal(transpose_contiguous(x), x.transpose(-1, -2).contiguous()) and seen == [axis]
