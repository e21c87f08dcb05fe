"""Tests of the Mamba / U-Mamba / VMamba blocks (parameter counts, shapes, gradients, reference equality)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mambaseg.blocks import SS2D, Mamba, MambaLayer, VSSBlock
from mambaseg.layers import DropPath, drop_path
from mambaseg.ops import selective_scan

# Official parameter counts (constructing the official classes on CPU).
MAMBA_COUNTS = {2: 252, 4: 552, 6: 900, 8: 1_296, 12: 2_232, 16: 3_360, 32: 9_920, 48: 19_680, 64: 32_640,
                96: 68_160, 128: 116_480, 192: 251_520, 256: 437_760, 384: 963_840, 512: 1_694_720}
SS2D_COUNTS = {96: 105_216, 192: 339_456, 384: 1_195_008, 768: 4_454_400}
VSS_COUNTS = {96: 105_408, 192: 339_840, 384: 1_195_776, 768: 4_455_936}
HVMUNET_SS2D_COUNTS = {4: 1_856, 8: 3_904, 16: 8_576, 32: 20_736, 64: 55_808, 128: 168_960, 256: 567_296}


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def assert_finite_grads(m: torch.nn.Module) -> None:
    for name, p in m.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ----------------------------------------------------------------------------------------------- counts / layout
@pytest.mark.parametrize("d,count", sorted(MAMBA_COUNTS.items()))
def test_mamba_param_count(d, count):
    assert n_params(Mamba(d_model=d)) == count


def test_umamba_bot_layer_param_count():
    assert n_params(MambaLayer(512)) == 1_024 + 1_694_720


@pytest.mark.parametrize("d", sorted(SS2D_COUNTS))
def test_ss2d_vssblock_param_count(d):
    assert n_params(SS2D(d_model=d)) == SS2D_COUNTS[d]
    assert n_params(VSSBlock(hidden_dim=d)) == VSS_COUNTS[d]


@pytest.mark.parametrize("d,count", sorted(HVMUNET_SS2D_COUNTS.items()))
def test_ss2d_hvmunet_param_count(d, count):
    assert n_params(SS2D(d_model=d, dropout=0, d_state=16)) == count


def test_state_dict_names_match_official():
    assert set(Mamba(16).state_dict()) == {
        "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias",
        "A_log", "D", "out_proj.weight"}
    ss2d_keys = {"in_proj.weight", "conv2d.weight", "conv2d.bias", "x_proj_weight", "dt_projs_weight",
                 "dt_projs_bias", "A_logs", "Ds", "out_norm.weight", "out_norm.bias", "out_proj.weight"}
    assert set(SS2D(16).state_dict()) == ss2d_keys
    assert set(VSSBlock(16).state_dict()) == {"ln_1.weight", "ln_1.bias"} | {"self_attention." + k for k in ss2d_keys}
    assert set(MambaLayer(16).state_dict()) == {"norm.weight", "norm.bias"} | {
        "mamba." + k for k in Mamba(16).state_dict()}


def test_mamba_initialisation():
    m = Mamba(32, dt_min=1e-3, dt_max=0.1)
    assert m.dt_rank == 2 and m.d_inner == 64
    assert m.dt_proj.weight.abs().max() <= m.dt_rank ** -0.5
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert torch.equal(m.A_log, torch.log(torch.arange(1, 17, dtype=torch.float32)).expand(64, 16))
    assert m.A_log.dtype == torch.float32 and torch.equal(m.D, torch.ones(64))
    assert m.A_log._no_weight_decay and m.D._no_weight_decay
    c = Mamba(32, dt_init="constant")
    assert torch.allclose(c.dt_proj.weight, torch.full_like(c.dt_proj.weight, 2 ** -0.5))
    s = SS2D(16)
    assert s.A_logs._no_weight_decay and s.Ds._no_weight_decay
    assert s.A_logs.shape == (4 * 32, 16) and s.Ds.shape == (128,)
    assert s.dt_projs_weight.abs().max() <= 1.0  # dt_rank = 1
    dt = F.softplus(s.dt_projs_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert not torch.equal(s.x_proj_weight[0], s.x_proj_weight[1])  # independent per-direction inits


# ----------------------------------------------------------------------------------------------- Mamba
def mamba_slow_reference(m: Mamba, u: torch.Tensor) -> torch.Tensor:
    """mamba_ssm's non-fused forward written out explicitly, with the sequential reference scan."""
    bsz, L, _ = u.shape
    xz = torch.einsum("ed,bld->bel", m.in_proj.weight, u)  # (B, 2*d_inner, L)
    x, z = xz[:, : m.d_inner], xz[:, m.d_inner:]
    x = F.conv1d(F.pad(x, (m.d_conv - 1, 0)), m.conv1d.weight, m.conv1d.bias, groups=m.d_inner)
    x = x * torch.sigmoid(x)
    x_dbl = torch.einsum("cd,bdl->bcl", m.x_proj.weight, x)
    dt = torch.einsum("dr,brl->bdl", m.dt_proj.weight, x_dbl[:, : m.dt_rank])
    b = x_dbl[:, m.dt_rank: m.dt_rank + m.d_state]
    c = x_dbl[:, m.dt_rank + m.d_state:]
    y = selective_scan(x, dt, -torch.exp(m.A_log), b, c, m.D, z=z, delta_bias=m.dt_proj.bias,
                       delta_softplus=True, backend="reference")
    return torch.einsum("md,bdl->blm", m.out_proj.weight, y)


def test_mamba_forward_backward_and_reference():
    m = Mamba(16)
    u = torch.randn(2, 20, 16, requires_grad=True)
    out = m(u)
    assert out.shape == (2, 20, 16)
    out.square().sum().backward()
    assert_finite_grads(m)
    assert torch.isfinite(u.grad).all()
    with torch.no_grad():
        ref = mamba_slow_reference(m, u)
        assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
        m.backend = "reference"
        assert torch.allclose(m(u), ref, atol=1e-5, rtol=1e-5)


def test_mamba_is_causal():
    m = Mamba(16).eval()
    u = torch.randn(1, 12, 16)
    t = 6
    u2 = u.clone()
    u2[:, t] += torch.randn(16)
    with torch.no_grad():
        y1, y2 = m(u), m(u2)
        assert torch.allclose(y1[:, :t], y2[:, :t], atol=1e-6, rtol=0)
        assert not torch.allclose(y1[:, t], y2[:, t])
        # the truncated depthwise conv alone is causal too
        x = torch.randn(1, m.d_inner, 12)
        assert m.conv1d(x).shape[-1] == 12 + m.d_conv - 1  # padded both sides, truncated to L in forward
        x2 = x.clone()
        x2[..., t] += 1.0
        c1, c2 = m.conv1d(x)[..., :12], m.conv1d(x2)[..., :12]
        assert torch.equal(c1[..., :t], c2[..., :t]) and not torch.equal(c1[..., t], c2[..., t])


def test_mamba_options():
    m = Mamba(8, d_state=4, d_conv=3, expand=1, dt_rank=3, conv_bias=False, bias=True)
    assert m.conv1d.bias is None and m.in_proj.bias is not None and m.out_proj.bias is not None
    assert m.x_proj.weight.shape == (3 + 8, 8) and m.dt_proj.weight.shape == (8, 3)
    assert m(torch.randn(1, 5, 8)).shape == (1, 5, 8)
    with pytest.raises(NotImplementedError):
        Mamba(8, dt_init="bogus")


# ----------------------------------------------------------------------------------------------- MambaLayer
@pytest.mark.parametrize("shape", [(2, 8, 5, 7), (1, 8, 3, 4, 5)])
def test_mamba_layer_nd(shape):
    layer = MambaLayer(8)
    x = torch.randn(*shape, requires_grad=True)
    out = layer(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert_finite_grads(layer)
    # equals LayerNorm + Mamba on the flattened tokens, no residual
    with torch.no_grad():
        tokens = x.flatten(2).transpose(1, 2)
        ref = layer.mamba(layer.norm(tokens)).transpose(1, 2).reshape(shape)
        assert torch.allclose(out, ref, atol=1e-6)


def test_mamba_layer_half_input_runs_in_fp32():
    layer = MambaLayer(8)
    x = torch.randn(1, 8, 4, 4)
    out = layer(x.to(torch.bfloat16))
    assert out.dtype == torch.float32
    assert torch.allclose(out, layer(x.to(torch.bfloat16).float()))
    with pytest.raises(ValueError):
        layer(torch.randn(1, 4, 4, 4))


# ----------------------------------------------------------------------------------------------- SS2D / VSSBlock
def ss2d_vmamba_reference(m: SS2D, x: torch.Tensor) -> torch.Tensor:
    """VMamba v0 SS2D forward written the official way (stack/transpose/flip), reference scan."""
    bsz, H, W, _ = x.shape
    L, K, d = H * W, 4, m.d_inner
    xz = x @ m.in_proj.weight.t()
    xi, z = xz[..., :d], xz[..., d:]
    xi = F.silu(m.conv2d(xi.permute(0, 3, 1, 2)))  # (B, d, H, W)
    x_hwwh = torch.stack([xi.reshape(bsz, d, L), xi.transpose(2, 3).reshape(bsz, d, L)], dim=1)
    xs = torch.cat([x_hwwh, torch.flip(x_hwwh, dims=[-1])], dim=1)  # (B, 4, d, L)
    x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, m.x_proj_weight)
    dts, bs, cs = torch.split(x_dbl, [m.dt_rank, m.d_state, m.d_state], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, m.dt_projs_weight)
    out_y = selective_scan(xs.reshape(bsz, K * d, L), dts.reshape(bsz, K * d, L),
                           -torch.exp(m.A_logs).view(-1, m.d_state), bs, cs, m.Ds.view(-1),
                           delta_bias=m.dt_projs_bias.view(-1), delta_softplus=True,
                           backend="reference").view(bsz, K, d, L)
    inv_y = torch.flip(out_y[:, 2:4], dims=[-1])
    wh_y = out_y[:, 1].view(bsz, d, W, H).transpose(2, 3).reshape(bsz, d, L)
    invwh_y = inv_y[:, 1].view(bsz, d, W, H).transpose(2, 3).reshape(bsz, d, L)
    y = out_y[:, 0] + inv_y[:, 0] + wh_y + invwh_y
    y = m.out_norm(y.transpose(1, 2).reshape(bsz, H, W, d))
    return (y * F.silu(z)) @ m.out_proj.weight.t()


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_ss2d_cross_equals_vmamba_formulation(backend):
    m = SS2D(16, backend=backend)
    x = torch.randn(2, 5, 7, 16)
    with torch.no_grad():
        assert torch.allclose(m(x), ss2d_vmamba_reference(m, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scan,k", [("cross", 4), ("raster", 1), ("bidirectional", 2), ("snake", 4),
                                    ("diagonal", 4)])
def test_ss2d_scan_orders_forward_backward(scan, k):
    m = SS2D(16, scan=scan)
    d = m.d_inner
    assert m.num_directions == k
    assert m.x_proj_weight.shape == (k, m.dt_rank + 2 * m.d_state, d)
    assert m.dt_projs_weight.shape == (k, d, m.dt_rank) and m.dt_projs_bias.shape == (k, d)
    assert m.A_logs.shape == (k * d, m.d_state) and m.Ds.shape == (k * d,)
    x = torch.randn(2, 5, 7, 16, requires_grad=True)
    out = m(x)
    assert out.shape == (2, 5, 7, 16)
    out.square().sum().backward()
    assert_finite_grads(m)
    assert torch.isfinite(x.grad).all()


def test_ss2d_rejects_3d_order_and_bad_input():
    with pytest.raises(ValueError):
        SS2D(8, scan="tri")
    with pytest.raises(ValueError):
        SS2D(8)(torch.randn(1, 8, 4, 4)[..., :3])


def test_vssblock_forward_backward():
    blk = VSSBlock(hidden_dim=16, drop_path=0.1, attn_drop_rate=0.1, d_state=8)
    assert blk.self_attention.d_state == 8
    x = torch.randn(2, 5, 7, 16, requires_grad=True)
    out = blk(x)
    assert out.shape == x.shape
    out.square().sum().backward()
    assert_finite_grads(blk)
    blk.eval()
    with torch.no_grad():
        ref = x + blk.self_attention(blk.ln_1(x))
        assert torch.allclose(blk(x), ref, atol=1e-6)
    raster = VSSBlock(hidden_dim=16, scan="raster")
    assert raster.self_attention.num_directions == 1 and raster(x).shape == x.shape


def test_drop_path():
    x = torch.ones(64, 3, 2)
    assert torch.equal(drop_path(x, 0.5, training=False), x)
    y = drop_path(x, 0.5, training=True)
    per_sample = y.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 2).all(1)).all()
    assert 0 < (per_sample[:, 0] == 0).sum() < 64
    assert torch.equal(drop_path(x, 1.0, training=True), torch.zeros_like(x))
    m = DropPath(0.3).eval()
    assert torch.equal(m(x), x) and "0.3" in repr(m)
    assert math.isclose(DropPath().drop_prob, 0.0)
