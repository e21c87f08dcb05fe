"""FLOP counting includes the selective scan exactly once; use_backend routes "auto" calls."""

import pytest
import torch

from mambaseg.benchmark import count_flops, count_parameters
from mambaseg.blocks import Mamba
from mambaseg.ops import selective_scan, use_backend
from mambaseg.ops.selective_scan import resolve_backend


def test_mamba_block_flops_by_hand():
    torch.manual_seed(0)
    d_model, d_state, length = 16, 4, 10
    block = Mamba(d_model, d_state=d_state)  # d_inner 32, dt_rank 1, d_conv 4
    di, r = 32, 1

    class Wrap(torch.nn.Module):  # count_flops feeds a (1, C, L)-shaped zero tensor; Mamba takes (B, L, C)
        def __init__(self):
            super().__init__()
            self.block = block

        def forward(self, x):
            return self.block(x.transpose(1, 2))

    flops = count_flops(Wrap(), (1, d_model, length))
    linear = 2 * length * (d_model * 2 * di + di * (r + 2 * d_state) + r * di + di * d_model)
    conv = 2 * di * (length + 3) * 4  # depthwise, padded by d_conv - 1 = 3 then truncated
    scan = 9 * di * length * d_state + 2 * di * length  # recurrence + D skip + z gate
    assert flops == {"total": linear + conv + scan, "scan": scan, "other": linear + conv}
    assert count_parameters(Mamba(16)) == 3360  # the official mamba_ssm Mamba(d_model=16)


def test_use_backend_routes_auto_and_restores():
    u = torch.zeros(1, 2, 3)
    default = resolve_backend("auto", u)
    assert default in ("numba", "chunked")
    with use_backend("reference"):
        assert resolve_backend("auto", u) == "reference"
        assert resolve_backend("chunked", u) == "chunked"  # an explicit backend is left alone
    assert resolve_backend("auto", u) == default
    with pytest.raises(ValueError, match="unknown backend"):
        with use_backend("nope"):
            pass
    x = torch.randn(1, 2, 5)
    with use_backend("reference"):
        out = selective_scan(x, x.abs(), -torch.ones(2, 3), torch.randn(1, 3, 5), torch.randn(1, 3, 5))
    assert out.shape == x.shape
