"""SegMamba: official parameter counts, the input-size rule, padding/cropping, gradients, and the tri-oriented
Mamba mixer against a slow reference that runs the three token orders one by one on the sequential scan."""

from __future__ import annotations

import importlib
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from mambaseg import create_model, model_info
from mambaseg.layers import layout
from mambaseg.models.segmamba import (
    TriOrientedMamba,
    from_inter_slice,
    segmamba_padded_size,
    to_inter_slice,
    tri_merge,
    tri_orient,
)
from mambaseg.ops import selective_scan
from mambaseg.ops.scan_orders import get_scan_order

# reference/official_params.md: ge-xing/SegMamba @ cff35970e0c5, SegMamba(in_chans=4, out_chans=4)
OFFICIAL_TOTAL = 67_416_196
OFFICIAL_TOP = {"vit": 15_718_080, "encoder1": 67_584, "encoder2": 377_856, "encoder3": 1_511_424,
                "encoder4": 6_045_696, "encoder5": 24_182_784, "decoder5": 14_598_144, "decoder4": 3_649_536,
                "decoder3": 912_384, "decoder2": 228_096, "decoder1": 124_416, "out": 196}
OFFICIAL_LEVEL2 = {"vit.downsample_layers": 840_720, "vit.stages": 3_121_920, "vit.gscs": 10_969_920,
                   "vit.mlps": 785_520, "decoder5.transp_conv": 2_359_296, "decoder5.conv_block": 12_238_848,
                   "decoder2.transp_conv": 36_864, "decoder2.conv_block": 191_232, "out.conv": 196}
OFFICIAL_V3_MAMBA = {48: 31_392, 96: 93_888, 192: 312_192, 384: 1_122_048}
OFFICIAL_SLICES = (64, 32, 16, 8)
segmamba_module = importlib.import_module("mambaseg.models.segmamba")  # the package exports a same-named factory


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_official_parameter_counts():
    model = create_model("segmamba", in_channels=4, num_classes=4)
    assert count(model) == OFFICIAL_TOTAL
    assert {name: count(child) for name, child in model.named_children()} == OFFICIAL_TOP
    modules = dict(model.named_modules())
    assert {name: count(modules[name]) for name in OFFICIAL_LEVEL2} == OFFICIAL_LEVEL2
    assert model_info("segmamba").spatial_dims == (3,)


@pytest.mark.parametrize("width, expected", sorted(OFFICIAL_V3_MAMBA.items()))
def test_v3_mamba_parameter_count(width, expected):
    assert count(TriOrientedMamba(width)) == expected


def accepted_by_official(size, slices=OFFICIAL_SLICES):
    """The official code runs iff every axis divides by 16 and stage i's token count by slices[i]."""
    return all(s % 16 == 0 for s in size) and all(
        math.prod(s // 2 ** (i + 1) for s in size) % ns == 0 for i, ns in enumerate(slices))


@pytest.mark.parametrize("size", [(32, 32, 32), (64, 64, 64), (128, 128, 128), (64, 32, 32), (96, 64, 48)])
def test_accepted_sizes_are_not_padded(size):
    assert accepted_by_official(size)
    assert segmamba_padded_size(size) == size


@pytest.mark.parametrize("size", [(17, 20, 23), (16, 16, 16), (80, 80, 80), (1, 1, 1), (33, 7, 50)])
def test_padded_size_is_the_smallest_accepted_one(size):
    got = segmamba_padded_size(size)
    assert accepted_by_official(got) and all(g >= s for g, s in zip(got, size))
    grids = [range(math.ceil(s / 16) * 16, math.ceil(s / 16) * 16 + 16 * 8, 16) for s in size]  # brute force
    smallest = min(math.prod(c) for c in itertools.product(*grids) if accepted_by_official(c))
    assert math.prod(got) == smallest


def test_without_fixed_slices_only_the_stride_rule_remains():
    assert segmamba_padded_size((16, 16, 16), None) == (16, 16, 16)
    assert segmamba_padded_size((17, 20, 23), None) == (32, 32, 32)


@pytest.mark.parametrize("size", [(17, 20, 23), (32, 32, 32), (16, 16, 16)])
def test_tiny_forward_shape(size):
    torch.manual_seed(0)
    model = create_model("segmamba_test", in_channels=2, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 2, *size))
    assert out.shape == (1, 3, *size) and torch.isfinite(out).all()


def test_odd_input_equals_cropped_output_of_zero_padded_input():
    torch.manual_seed(0)
    model = create_model("segmamba_test", in_channels=1, num_classes=2).eval()
    x = torch.randn(1, 1, 17, 20, 23)
    padded = F.pad(x, (0, 32 - 23, 0, 32 - 20, 0, 32 - 17))  # zeros at the end of each axis, up to 32^3
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., :17, :20, :23], rtol=0, atol=0)


def test_gradient_reaches_every_parameter_of_the_tiny_variant():
    torch.manual_seed(0)
    model = create_model("segmamba_test", in_channels=1, num_classes=3).train()
    model(torch.randn(2, 1, 17, 20, 23)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "mamba" in n), "a dead mixer weight"


def test_eval_is_deterministic_and_rejects_wrong_layout():
    torch.manual_seed(0)
    model = create_model("segmamba_test", in_channels=1, num_classes=3).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="3D only"):
        create_model("segmamba_test", in_channels=1, num_classes=3, spatial_dims=2)


# ----------------------------------------------------------------------------- the tri-oriented mixer
def test_inter_slice_order_is_segmamba_chunk_stack_flatten():
    seq = torch.arange(2 * 3 * 24).view(2, 3, 24)
    official = torch.stack(seq.chunk(4, dim=-1), dim=-1).flatten(-2)  # the patched mamba's inter-slice order
    assert torch.equal(to_inter_slice(seq, 4), official)
    assert torch.equal(from_inter_slice(to_inter_slice(seq, 4), 4), seq)


def test_inter_slice_with_depth_slices_is_the_tri_scan_order():
    d, h, w = 3, 4, 5
    perm = get_scan_order("tri").permutations((d, h, w))[2]
    assert torch.equal(to_inter_slice(torch.arange(d * h * w), d), perm)


@pytest.fixture(params=[7, 1 << 18], ids=["slabs-of-7", "default-slabs"])
def tile(request, monkeypatch):
    """Slab size of the cache-sized copies: 7 elements forces many slabs with a ragged last one."""
    monkeypatch.setattr(layout, "SLAB_ELEMENTS", request.param)
    return request.param


def test_tri_orient_and_merge_equal_their_view_definitions(tile):
    xz = torch.randn(2, 24, 5)  # (B, L, C), odd C
    t = xz.transpose(1, 2)
    assert torch.equal(tri_orient(xz, 4), torch.stack((t, t.flip(-1), to_inter_slice(t, 4)), dim=1))
    y = torch.randn(2, 3, 5, 24)
    want = (y[:, 0] + y[:, 1].flip(-1) + from_inter_slice(y[:, 2], 4)).transpose(1, 2)
    assert torch.equal(tri_merge(y, 4), want)
    assert torch.equal(tri_merge(y.transpose(2, 3).contiguous().transpose(2, 3), 4), want)  # any strides


def test_tri_orient_and_merge_gradients_are_each_others_adjoint(tile):
    xz = torch.randn(2, 24, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 3, 24, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: segmamba_module._TriOrder.apply(v, 6, False), (xz,))
    assert torch.autograd.gradcheck(lambda v: segmamba_module._TriOrder.apply(v, 6, True), (y,))
    with torch.no_grad():  # <orient(x), y> == <x, merge(y)>: one is the other's transpose
        torch.testing.assert_close((tri_orient(xz, 6) * y).sum(), (xz * tri_merge(y, 6)).sum(), rtol=1e-12, atol=0)


def test_mixer_traces_through_plain_view_ops():
    """Export (tracing) takes the plain stack/flip path instead of the custom autograd Functions."""
    mixer, tokens = random_mixer("reference").eval(), torch.randn(1, 24, 8)
    with torch.no_grad():
        traced = torch.jit.trace(mixer, (tokens,))
        torch.testing.assert_close(traced(tokens), mixer(tokens), rtol=1e-6, atol=1e-6)
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert "aten::stack" in kinds and "prim::PythonOp" not in kinds  # a custom autograd Function is a PythonOp


def inter_slice_permutation(length, nslices):
    """Position p*nslices + s holds token s*(L/nslices) + p, written as a plain loop."""
    chunk = length // nslices
    return torch.tensor([s * chunk + p for p in range(chunk) for s in range(nslices)])


def reference_mixer(mixer, tokens, nslices):
    """Three separate scans on the sequential ``reference`` backend, one per token order, outputs summed."""
    b, length, _ = tokens.shape
    perms = [torch.arange(length), torch.arange(length - 1, -1, -1), inter_slice_permutation(length, nslices)]
    xz = mixer.in_proj(tokens)  # (B, L, 2 di)
    total = 0
    for k, perm in enumerate(perms):
        p = mixer.direction_parameters(k)
        x, z = xz[:, perm].transpose(1, 2).chunk(2, dim=1)  # (B, di, L) in scan order
        x = F.silu(p["conv1d"](x)[..., :length])
        dt, bm, cm = torch.split(p["x_proj"](x.transpose(1, 2)), [mixer.dt_rank, mixer.d_state, mixer.d_state], -1)
        delta = (dt @ p["dt_proj"].weight.T).transpose(1, 2)
        y = selective_scan(x, delta, -torch.exp(p["A_log"]), bm.transpose(1, 2), cm.transpose(1, 2), p["D"], z=z,
                           delta_bias=p["dt_proj"].bias, delta_softplus=True, backend="reference")
        total = total + y[..., torch.argsort(perm)]  # back to token order
    return mixer.out_proj(total.transpose(1, 2))


def random_mixer(backend):
    torch.manual_seed(0)
    mixer = TriOrientedMamba(8, nslices=4, d_state=4, backend=backend)
    with torch.no_grad():  # make every direction's parameters distinct, so a swapped direction shows
        for p in mixer.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return mixer


@pytest.mark.parametrize("backend, rtol, atol", [("reference", 1e-5, 1e-5), ("auto", 6e-4, 2e-3)])
def test_mixer_matches_three_separate_reference_scans(backend, rtol, atol, tile):
    """Tolerances: 1e-5 on the same sequential scan (only the summation order differs); mamba_ssm's fp32
    selective-scan tolerances (out rtol 6e-4, atol 2e-3; inputs 2x) for the default backend."""
    mixer = random_mixer(backend)
    tokens = torch.randn(2, 24, 8, requires_grad=True)
    got = mixer(tokens)
    want = reference_mixer(mixer, tokens, 4)
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    grad_out = torch.randn_like(got)
    (g_got,) = torch.autograd.grad(got, tokens, grad_out)
    (g_want,) = torch.autograd.grad(want, tokens, grad_out)
    torch.testing.assert_close(g_got, g_want, rtol=2 * rtol, atol=2 * atol)


def test_mixer_directions_matter():
    mixer, tokens = random_mixer("reference"), torch.randn(1, 24, 8)
    swapped = random_mixer("reference")
    with torch.no_grad():
        swapped.A_b_log.copy_(mixer.A_s_log)
        swapped.A_s_log.copy_(mixer.A_b_log)
    assert not torch.allclose(mixer(tokens), swapped(tokens), atol=1e-4)


def test_mixer_rejects_token_counts_not_divisible_by_nslices():
    with pytest.raises(ValueError, match="divisible by nslices=4"):
        TriOrientedMamba(8, nslices=4, d_state=4)(torch.randn(1, 10, 8))


def test_initialisation_follows_the_patched_mamba():
    mixer = TriOrientedMamba(32)
    step = F.softplus(mixer.dt_proj.bias)
    assert step.min() >= 1e-4 and step.max() <= 0.1 + 1e-6  # mamba's dt init on the forward direction only
    a_expected = torch.log(torch.arange(1, 17, dtype=torch.float32)).expand(64, 16)
    for name in ("A_log", "A_b_log", "A_s_log"):
        torch.testing.assert_close(getattr(mixer, name), a_expected)
    bound = 1 / math.sqrt(mixer.dt_rank)  # nn.Linear default for dt_proj_b / dt_proj_s
    assert mixer.dt_proj_b.bias.abs().max() <= bound and mixer.dt_proj_s.bias.abs().max() <= bound
