"""Tests for mambaseg.ops.scan_orders."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from mambaseg.ops.scan_orders import get_scan_order, list_scan_orders

ORDERS_2D = ["raster", "bidirectional", "cross", "snake", "diagonal", "local"]
ORDERS_3D = ["tri", "six"]
EXPECTED_K = {"raster": 1, "bidirectional": 2, "cross": 4, "snake": 4, "diagonal": 4,
              "local": 4, "tri": 3, "six": 6}
SIZES = [1, 2, 3, 5, 8, 13]
B, C = 2, 3


def _orders_2d():
    """(id, order) pairs; local with a few windows incl. non-divisible ones."""
    out = [(n, get_scan_order(n)) for n in ORDERS_2D if n != "local"]
    out += [(f"local-w{w}", get_scan_order("local", window=w)) for w in (1, 2, 3, 7)]
    return out


def _shapes_2d():
    # all pairs would be 36 shapes; a deterministic subset still covers 1, odd, even
    return [(h, w) for h, w in itertools.product(SIZES, SIZES) if (h + w) % 2 == 0 or h == 1]


def _arange_tensor(shape, dtype=torch.float64):
    """(B, C, *shape) integer-valued tensor; every entry distinct per (b, c) token."""
    n = math.prod(shape)
    base = torch.arange(n, dtype=dtype).view(1, 1, *shape)
    offs = (torch.arange(B * C, dtype=dtype) * n).view(B, C, *([1] * len(shape)))
    return base + offs


def _check_roundtrip(order, shape):
    k, n = order.num_directions, math.prod(shape)
    x = _arange_tensor(shape)
    y = order.flatten(x)
    assert y.shape == (B, k, C, n)
    assert y.is_contiguous()
    # each direction is a permutation of the tokens of each (b, c) map
    flat = x.flatten(2)
    for d in range(k):
        assert torch.equal(y[:, d].sort(dim=-1).values, flat)
    # permutations() agrees with what flatten did
    perm = order.permutations(shape)
    assert perm.shape == (k, n) and perm.dtype == torch.long
    assert torch.equal(y[0, :, 0], flat[0, 0][perm])
    # merge is the exact adjoint/inverse: K * x
    xr = order.merge(y, shape)
    assert xr.shape == x.shape
    assert torch.equal(xr, k * x)
    # explicit torch.Size spatial shape works too
    assert torch.equal(order.merge(y, x.shape[2:]), k * x)


# ----------------------------------------------------------------- registry
def test_list_scan_orders():
    names = list_scan_orders()
    assert sorted(names) == sorted(ORDERS_2D + ORDERS_3D)
    for n in names:
        o = get_scan_order(n)
        assert o.num_directions == EXPECTED_K[n]
        assert o.spatial_dims == (3 if n in ORDERS_3D else 2)
        assert o.name == n


def test_unknown_name_raises():
    with pytest.raises(ValueError) as e:
        get_scan_order("zigzag9")
    msg = str(e.value)
    assert "name" in msg and "zigzag9" in msg
    for n in list_scan_orders():
        assert n in msg
    with pytest.raises(ValueError):
        get_scan_order(None)


def test_bad_options_raise():
    with pytest.raises(TypeError, match="window"):
        get_scan_order("cross", window=7)
    for bad in (0, -1, 2.0, "7", True):
        with pytest.raises(ValueError, match="window"):
            get_scan_order("local", window=bad)
    assert get_scan_order("local").window == 7


@pytest.mark.parametrize("name", ORDERS_2D)
def test_2d_order_rejects_5d_and_3d(name):
    o = get_scan_order(name)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        o.flatten(torch.zeros(1, 2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        o.flatten(torch.zeros(2, 3, 4))


@pytest.mark.parametrize("name", ORDERS_3D)
def test_3d_order_rejects_4d(name):
    with pytest.raises(ValueError, match=r"\(B, C, D, H, W\)"):
        get_scan_order(name).flatten(torch.zeros(1, 2, 3, 4))


def test_merge_shape_errors():
    o = get_scan_order("cross")
    y = torch.zeros(B, 4, C, 6)
    with pytest.raises(ValueError, match="K=4"):
        o.merge(torch.zeros(B, 2, C, 6), (2, 3))
    with pytest.raises(ValueError, match="L=8"):
        o.merge(y, (2, 4))
    with pytest.raises(ValueError, match="spatial_shape"):
        o.merge(y, (1, 2, 3))
    with pytest.raises(ValueError, match="spatial_shape"):
        get_scan_order("tri").merge(torch.zeros(B, 3, C, 6), (2, 3))


# ------------------------------------------------- permutation / round trip
@pytest.mark.parametrize("oid,order", _orders_2d(), ids=[i for i, _ in _orders_2d()])
def test_2d_roundtrip_all_sizes(oid, order):
    for shape in _shapes_2d():
        _check_roundtrip(order, shape)


@pytest.mark.parametrize("name", ORDERS_3D)
def test_3d_roundtrip_all_sizes(name):
    order = get_scan_order(name)
    for d in (1, 3, 4):
        for h, w in [(1, 1), (2, 3), (5, 2), (1, 8), (13, 1), (3, 3)]:
            _check_roundtrip(order, (d, h, w))


@pytest.mark.parametrize("name", ORDERS_2D + ORDERS_3D)
def test_adjoint_random(name):
    g = torch.Generator().manual_seed(0)
    order = get_scan_order(name, **({"window": 3} if name == "local" else {}))
    shapes = [(5, 8), (1, 13), (7, 7)] if order.spatial_dims == 2 else [(3, 5, 2), (4, 1, 3)]
    for shape in shapes:
        k, n = order.num_directions, math.prod(shape)
        x = torch.randn(B, C, *shape, generator=g, dtype=torch.float64)
        y = torch.randn(B, k, C, n, generator=g, dtype=torch.float64)
        lhs = (order.flatten(x) * y).sum()
        rhs = (x * order.merge(y, shape)).sum()
        assert torch.allclose(lhs, rhs, rtol=1e-5, atol=0)
        # float32 works as well
        lhs32 = (order.flatten(x.float()) * y.float()).sum()
        rhs32 = (x.float() * order.merge(y.float(), shape)).sum()
        assert torch.allclose(lhs32, rhs32, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ORDERS_2D + ORDERS_3D)
def test_gradients(name):
    order = get_scan_order(name, **({"window": 2} if name == "local" else {}))
    shape = (3, 5) if order.spatial_dims == 2 else (2, 3, 5)
    k = order.num_directions
    x = torch.randn(B, C, *shape, requires_grad=True)
    order.flatten(x).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, float(k)))
    y = torch.randn(B, k, C, math.prod(shape), requires_grad=True)
    order.merge(y, shape).sum().backward()
    assert torch.equal(y.grad, torch.ones_like(y))
    assert torch.autograd.gradcheck(
        lambda t: order.flatten(t), (x.detach().double().requires_grad_(),)
    )


def test_cache_built_in_inference_mode_still_trains():
    order = get_scan_order("cross")
    with torch.inference_mode():
        order.flatten(torch.randn(1, 2, 4, 6))
    x = torch.randn(1, 2, 4, 6, requires_grad=True)
    order.merge(order.flatten(x), (4, 6)).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 4.0))


def test_cache_reused_and_non_contiguous_input():
    order = get_scan_order("snake")
    assert order.permutations((4, 5)) is order.permutations((4, 5))
    x = _arange_tensor((5, 4)).transpose(2, 3)  # non-contiguous (B, C, 4, 5)
    assert torch.equal(order.merge(order.flatten(x), (4, 5)), 4 * x)
    assert torch.equal(order.flatten(x), order.flatten(x.contiguous()))


# ---------------------------------------------------------- hand-checked
def _dirs(name, shape, **opts):
    x = torch.arange(math.prod(shape), dtype=torch.float32).view(1, 1, *shape)
    return get_scan_order(name, **opts).flatten(x)[0, :, 0].long().tolist()


def test_cross_hand_2x3():
    assert _dirs("cross", (2, 3)) == [
        [0, 1, 2, 3, 4, 5],
        [0, 3, 1, 4, 2, 5],
        [5, 4, 3, 2, 1, 0],
        [5, 2, 4, 1, 3, 0],
    ]


def test_raster_bidirectional_hand_2x3():
    assert _dirs("raster", (2, 3)) == [[0, 1, 2, 3, 4, 5]]
    assert _dirs("bidirectional", (2, 3)) == [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]]


def test_snake_hand_3x3():
    # 0 1 2 / 3 4 5 / 6 7 8
    assert _dirs("snake", (3, 3)) == [
        [0, 1, 2, 5, 4, 3, 6, 7, 8],
        [0, 3, 6, 7, 4, 1, 2, 5, 8],
        [8, 7, 6, 3, 4, 5, 2, 1, 0],
        [8, 5, 2, 1, 4, 7, 6, 3, 0],
    ]


def test_snake_hand_2x3():
    # 0 1 2 / 3 4 5
    assert _dirs("snake", (2, 3))[:2] == [[0, 1, 2, 5, 4, 3], [0, 3, 4, 1, 2, 5]]


def test_diagonal_hand_2x3():
    # 0 1 2 / 3 4 5
    assert _dirs("diagonal", (2, 3)) == [
        [0, 1, 3, 2, 4, 5],
        [2, 1, 5, 0, 4, 3],
        [5, 4, 2, 3, 1, 0],
        [3, 4, 0, 5, 1, 2],
    ]


def test_local_hand_3x5_window2():
    #  0  1 |  2  3 |  4
    #  5  6 |  7  8 |  9
    # ------+-------+---
    # 10 11 | 12 13 | 14
    d = _dirs("local", (3, 5), window=2)
    assert d[0] == [0, 1, 5, 6, 2, 3, 7, 8, 4, 9, 10, 11, 12, 13, 14]
    assert d[1] == [0, 5, 1, 6, 10, 11, 2, 7, 3, 8, 12, 13, 4, 9, 14]
    assert d[2] == d[0][::-1] and d[3] == d[1][::-1]


def test_tri_hand_2x1x2():
    assert _dirs("tri", (2, 1, 2)) == [[0, 1, 2, 3], [3, 2, 1, 0], [0, 2, 1, 3]]


def test_six_hand_2x2x3():
    # index = d*6 + h*3 + w
    fw = [
        list(range(12)),
        [0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11],
        [0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11],
    ]
    assert _dirs("six", (2, 2, 3)) == fw + [f[::-1] for f in fw]


# --------------------------------------- independent reference formulations
def _vmamba_cross_scan(x):
    b, c, h, w = x.shape
    n = h * w
    x_hwwh = torch.stack(
        [x.reshape(b, -1, n), torch.transpose(x, dim0=2, dim1=3).contiguous().view(b, -1, n)],
        dim=1,
    ).view(b, 2, -1, n)
    return torch.cat([x_hwwh, torch.flip(x_hwwh, dims=[-1])], dim=1)


def _vmamba_cross_merge(out_y, h, w):
    b, k, c, n = out_y.shape
    inv_y = torch.flip(out_y[:, 2:4], dims=[-1]).view(b, 2, -1, n)
    wh_y = torch.transpose(out_y[:, 1].view(b, -1, w, h), dim0=2, dim1=3)
    wh_y = wh_y.contiguous().view(b, -1, n)
    invwh_y = torch.transpose(inv_y[:, 1].view(b, -1, w, h), dim0=2, dim1=3)
    invwh_y = invwh_y.contiguous().view(b, -1, n)
    return (out_y[:, 0] + inv_y[:, 0] + wh_y + invwh_y).view(b, c, h, w)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (5, 8), (13, 2), (7, 7)])
def test_cross_matches_vmamba_formula(shape):
    order = get_scan_order("cross")
    x = torch.randn(B, C, *shape)
    assert torch.equal(order.flatten(x), _vmamba_cross_scan(x))
    y = torch.randint(-50, 50, (B, 4, C, math.prod(shape))).float()
    assert torch.equal(order.merge(y, shape), _vmamba_cross_merge(y, *shape))


def test_bidirectional_matches_vim_formula():
    order = get_scan_order("bidirectional")
    x = torch.randn(B, C, 5, 3)
    xf = x.flatten(2)
    assert torch.equal(order.flatten(x), torch.stack([xf, xf.flip([-1])], dim=1))
    y = torch.randint(-50, 50, (B, 2, C, 15)).float()
    assert torch.equal(order.merge(y, (5, 3)), (y[:, 0] + y[:, 1].flip([-1])).view(B, C, 5, 3))


@pytest.mark.parametrize("shape", [(2, 1, 2), (3, 2, 5), (4, 3, 3), (1, 5, 2)])
def test_tri_matches_segmamba_formula(shape):
    d = shape[0]
    order = get_scan_order("tri")
    x = torch.randn(B, C, *shape)
    xz = x.reshape(B, C, -1)
    n = xz.shape[-1]
    xz_s = torch.stack(xz.chunk(d, dim=-1), dim=-1).flatten(-2)
    assert torch.equal(order.flatten(x), torch.stack([xz, xz.flip([-1]), xz_s], dim=1))
    y = torch.randint(-50, 50, (B, 3, C, n)).float()
    out_s = y[:, 2].reshape(B, C, n // d, d).permute(0, 1, 3, 2).flatten(-2)
    ref = (y[:, 0] + y[:, 1].flip([-1]) + out_s).view(B, C, *shape)
    assert torch.equal(order.merge(y, shape), ref)


def _localmamba_scan_indices(h, w, win, column_first):
    """LocalMamba's local_scan_bchw on an index grid, padding (-1) dropped."""
    x = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    hg, wg = math.ceil(h / win), math.ceil(w / win)
    x = F.pad(x, (0, wg * win - w, 0, hg * win - h), value=-1.0)
    if column_first:
        x = x.view(1, 1, hg, win, wg, win).permute(0, 1, 4, 2, 5, 3).reshape(-1)
    else:
        x = x.view(1, 1, hg, win, wg, win).permute(0, 1, 2, 4, 3, 5).reshape(-1)
    return x[x >= 0].long()


@pytest.mark.parametrize("shape", [(14, 14), (7, 7), (5, 9), (13, 2), (1, 8), (3, 3)])
@pytest.mark.parametrize("win", [2, 3, 7])
def test_local_matches_localmamba_formula(shape, win):
    perm = get_scan_order("local", window=win).permutations(shape)
    ref0 = _localmamba_scan_indices(*shape, win, column_first=False)
    ref1 = _localmamba_scan_indices(*shape, win, column_first=True)
    assert torch.equal(perm[0], ref0) and torch.equal(perm[1], ref1)
    assert torch.equal(perm[2], ref0.flip(0)) and torch.equal(perm[3], ref1.flip(0))


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (4, 7), (6, 2)])
def test_structural_identities(shape):
    h, w = shape
    x = torch.randn(1, 2, h, w)
    # local direction 1 is local direction 0 of the transposed image
    loc = get_scan_order("local", window=3)
    assert torch.equal(loc.flatten(x)[:, 1], loc.flatten(x.transpose(2, 3))[:, 0])
    # snake column scan is the row scan of the transpose
    sn = get_scan_order("snake")
    assert torch.equal(sn.flatten(x)[:, 1], sn.flatten(x.transpose(2, 3))[:, 0])
    # diagonal direction 1 is direction 0 of the horizontally mirrored image
    dg = get_scan_order("diagonal")
    assert torch.equal(dg.flatten(x)[:, 1], dg.flatten(x.flip(-1))[:, 0])
    # window >= image: local == cross
    big = get_scan_order("local", window=max(h, w))
    assert torch.equal(big.flatten(x), get_scan_order("cross").flatten(x))


def test_six_axis_orders():
    x = torch.randn(B, C, 3, 4, 5)
    y = get_scan_order("six").flatten(x)
    fw = [x.flatten(2), x.permute(0, 1, 2, 4, 3).flatten(2), x.permute(0, 1, 3, 4, 2).flatten(2)]
    for k in range(3):
        assert torch.equal(y[:, k], fw[k])
        assert torch.equal(y[:, k + 3], fw[k].flip(-1))
    assert torch.equal(y[:, 2], get_scan_order("tri").flatten(x)[:, 2])

