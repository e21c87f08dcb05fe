"""Tests of Swin-UMamba / Swin-UMamba-D (parameter counts vs the official JiarunLiu/Swin-UMamba code,
output shapes, deep supervision, scan order plumbing)."""

import pytest
import torch
from torch import nn

from mambaseg.blocks import SS2D
from mambaseg.models import create_model, list_models, model_info
from mambaseg.models.swin_umamba import SwinUMamba, SwinUMambaD


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def full():
    torch.manual_seed(0)
    return create_model("swin_umamba", in_channels=1, num_classes=4)


@pytest.fixture(scope="module")
def full_d():
    torch.manual_seed(0)
    return create_model("swin_umamba_d", in_channels=1, num_classes=4)


def test_registered():
    assert {"swin_umamba", "swin_umamba_d", "swin_umamba_test", "swin_umamba_d_test"} <= set(
        list_models("swin_umamba*"))
    for name in ("swin_umamba", "swin_umamba_d"):
        info = model_info(name)
        assert (info.family, info.paper, info.spatial_dims) == ("swin_umamba", "arXiv:2402.03302", (2,))


# ----------------------------------------------------------------------------- SwinUMamba, official counts
SWIN_UMAMBA_LEVEL1 = {
    "stem": 2_496, "vssm_encoder": 22_136_736, "encoder1": 21_216, "encoder2": 129_024, "encoder3": 516_096,
    "encoder4": 2_064_384, "encoder5": 8_257_536, "decoder6": 19_464_192, "decoder5": 5_455_872,
    "decoder4": 1_363_968, "decoder3": 340_992, "decoder2": 85_248, "decoder1": 41_472, "out_layers": 2_896,
}
SWIN_UMAMBA_LEVEL2 = {
    "stem.0": 2_400, "stem.1": 96,
    "vssm_encoder.patch_embed": 18_720, "vssm_encoder.layers": 20_564_352, "vssm_encoder.downsamples": 1_553_664,
    "encoder1.layer": 21_216, "encoder2.layer": 129_024, "encoder3.layer": 516_096, "encoder4.layer": 2_064_384,
    "encoder5.layer": 8_257_536,
    "decoder6.transp_conv": 2_359_296, "decoder6.conv_block": 17_104_896,
    "decoder5.transp_conv": 1_179_648, "decoder5.conv_block": 4_276_224,
    "decoder4.transp_conv": 294_912, "decoder4.conv_block": 1_069_056,
    "decoder3.transp_conv": 73_728, "decoder3.conv_block": 267_264,
    "decoder2.transp_conv": 18_432, "decoder2.conv_block": 66_816,
    "decoder1.layer": 41_472,
    "out_layers.0": 196, "out_layers.1": 388, "out_layers.2": 772, "out_layers.3": 1_540,
}


def test_swin_umamba_official_param_count(full):
    assert isinstance(full, SwinUMamba)
    assert _count(full) == 59_882_128


def test_swin_umamba_official_breakdown(full):
    assert {n: _count(m) for n, m in full.named_children()} == SWIN_UMAMBA_LEVEL1
    got = {n: _count(m) for n, m in full.named_modules() if n.count(".") == 1}
    assert got == SWIN_UMAMBA_LEVEL2


def test_swin_umamba_layout(full):
    enc = full.vssm_encoder
    assert [len(s.blocks) for s in enc.layers] == [2, 2, 9, 2]
    assert [s.blocks[0].ln_1.normalized_shape[0] for s in enc.layers] == [96, 192, 384, 768]
    assert tuple(enc.patch_embed.proj.weight.shape) == (96, 48, 2, 2)
    rates = [b.drop_path.drop_prob for s in enc.layers for b in s.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.2, 15).tolist())
    ss = [m for m in full.modules() if isinstance(m, SS2D)]
    assert len(ss) == 15 and all((m.d_state, m.d_conv, m.expand) == (16, 3, 2) for m in ss)
    # MONAI parameter names (so an official state dict maps one to one)
    keys = set(full.state_dict())
    for k in ("encoder1.layer.conv1.conv.weight", "encoder1.layer.conv3.conv.weight",
              "decoder6.transp_conv.conv.weight", "decoder6.conv_block.conv2.conv.weight",
              "out_layers.3.conv.conv.bias", "vssm_encoder.downsamples.2.reduction.weight",
              "vssm_encoder.layers.2.blocks.8.self_attention.A_logs"):
        assert k in keys, k
    assert "decoder1.layer.conv3.conv.weight" not in keys  # equal widths: identity shortcut


def test_swin_umamba_shapes(full):
    full.eval()
    with torch.no_grad():
        out = full(torch.randn(1, 1, 64, 64))
    assert isinstance(out, list) and len(out) == 4
    assert [tuple(o.shape) for o in out] == [(1, 4, 64, 64), (1, 4, 32, 32), (1, 4, 16, 16), (1, 4, 8, 8)]
    assert all(torch.isfinite(o).all() for o in out)
    full.deep_supervision = False
    try:
        with torch.no_grad():
            y = full(torch.randn(1, 1, 64, 64))
        assert torch.is_tensor(y) and y.shape == (1, 4, 64, 64)
    finally:
        full.deep_supervision = True


# ----------------------------------------------------------------------------- SwinUMambaD, official counts
SWIN_UMAMBA_D_LEVEL2 = {
    "vssm_encoder.patch_embed": 1_824, "vssm_encoder.layers": 20_564_352, "vssm_encoder.downsamples": 1_553_664,
    "decoder.stages": 3_282_048, "decoder.expand_layers": 1_697_280, "decoder.seg_layers": 3_088,
    "decoder.concat_back_dim": 387_744,
}


def test_swin_umamba_d_official_param_count(full_d):
    assert isinstance(full_d, SwinUMambaD)
    assert _count(full_d) == 27_490_000


def test_swin_umamba_d_official_breakdown(full_d):
    assert {n: _count(m) for n, m in full_d.named_children()} == {"vssm_encoder": 22_119_840,
                                                                    "decoder": 5_370_160}
    got = {n: _count(m) for n, m in full_d.named_modules() if n.count(".") == 1}
    assert got == SWIN_UMAMBA_D_LEVEL2


def test_swin_umamba_d_layout(full_d):
    dec = full_d.decoder
    assert isinstance(dec.stages[-1], nn.Identity)
    assert [len(s.blocks) for s in dec.stages[:-1]] == [2, 2, 2]
    assert [s.blocks[0].ln_1.normalized_shape[0] for s in dec.stages[:-1]] == [384, 192, 96]
    rates = [b.drop_path.drop_prob for s in dec.stages[:-1] for b in s.blocks]
    assert rates == pytest.approx(torch.linspace(0.2, 0, 6).tolist())
    assert tuple(full_d.vssm_encoder.patch_embed.proj.weight.shape) == (96, 1, 4, 4)


def test_swin_umamba_d_shapes(full_d):
    full_d.eval()
    with torch.no_grad():
        out = full_d(torch.randn(1, 1, 64, 64))
    assert isinstance(out, list) and len(out) == 4
    assert [tuple(o.shape) for o in out] == [(1, 4, 64, 64), (1, 4, 16, 16), (1, 4, 8, 8), (1, 4, 4, 4)]
    full_d.deep_supervision = False
    try:
        assert full_d.decoder.deep_supervision is False
        with torch.no_grad():
            y = full_d(torch.randn(1, 1, 64, 64))
        assert torch.is_tensor(y) and y.shape == (1, 4, 64, 64)
    finally:
        full_d.deep_supervision = True


# ----------------------------------------------------------------------------- tiny variants
@pytest.mark.parametrize("name, strides", [("swin_umamba_test", (1, 2, 4, 8)), ("swin_umamba_d_test", (1, 4, 8, 16))])
@pytest.mark.parametrize("hw", [(32, 32), (37, 45)])
def test_tiny_deep_supervision_shapes(name, strides, hw):
    torch.manual_seed(0)
    m = create_model(name, in_channels=3, num_classes=2).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, *hw))
    assert len(out) == 4
    want = [(2, 2, -(-hw[0] // s), -(-hw[1] // s)) for s in strides]
    assert [tuple(o.shape) for o in out] == want


@pytest.mark.parametrize("name", ["swin_umamba_test", "swin_umamba_d_test"])
def test_scan_reaches_every_ss2d(name):
    m = create_model(name, in_channels=1, num_classes=2, scan="raster")
    ss = [mod for mod in m.modules() if isinstance(mod, SS2D)]
    assert ss and all(mod.scan == "raster" and mod.num_directions == 1 for mod in ss)
    with torch.no_grad():
        out = m.eval()(torch.randn(1, 1, 37, 45))
    assert out[0].shape == (1, 2, 37, 45) and torch.isfinite(out[0]).all()


def test_bad_arguments():
    with pytest.raises(ValueError):
        SwinUMamba(1, 2, spatial_dims=3)
    with pytest.raises(ValueError):
        SwinUMamba(1, 2, feat_size=(4, 8, 16, 32, 64), hidden_size=32)
    with pytest.raises(ValueError):
        SwinUMamba(1, 2, feat_size=(4, 8, 16, 33, 64))
    with pytest.raises(ValueError):
        SwinUMambaD(1, 2, spatial_dims=3)
    m = create_model("swin_umamba_test", in_channels=1, num_classes=2)
    with pytest.raises(ValueError):
        m(torch.randn(1, 3, 32, 32))
