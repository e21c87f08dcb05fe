"""Tests of U-Mamba Enc (``umamba_enc``).

Parameter counts are pinned against the official network (bowang-lab/U-Mamba
``UMambaEnc_2d.py``, 2D, 1 -> 4 classes, input 256x256); forward/backward only on the tiny
variant (patch tokens only, or a channel-token layer with a small ``input_size``).
"""

import pytest
import torch
from torch import nn

from mambaseg.blocks import MambaLayer
from mambaseg.models import create_model, list_models, model_info
from mambaseg.models.umamba_enc import ChannelTokenMambaLayer, UMambaEnc, UNetResDecoderAllSkips


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _tiny(dims, **kw):
    torch.manual_seed(0)
    kwargs = dict(in_channels=1, num_classes=3, spatial_dims=dims)
    kwargs.update(kw)
    return create_model("umamba_enc_test", **kwargs)


def test_registered():
    for name in ("umamba_enc", "umamba_enc_test"):
        assert name in list_models()
        assert model_info(name).spatial_dims == (2, 3)
        assert model_info(name).paper == "arXiv:2401.04722"


# ----------------------------------------------------------------------------- counts
def test_count_2d_default_matches_official():
    m = create_model("umamba_enc", in_channels=1, num_classes=4)
    assert isinstance(m, UMambaEnc) and m.deep_supervision
    assert m.input_size == (256, 256)
    assert m.encoder.output_channels == [32, 64, 128, 256, 512, 512, 512]
    assert _count(m.encoder.stem) == 28_384
    assert _count(m.encoder.mamba_layers) == 568_384
    assert _count(m.encoder.stages) == 16_438_880
    assert _count(m.encoder) == 17_035_648
    assert _count(m.decoder.stages) == 28_648_992
    assert _count(m.decoder.upsample_layers) == 699_872
    assert _count(m.decoder.seg_layers) == 6_040
    assert _count(m.decoder) == 29_354_904
    assert _count(m) == 46_390_552
    # Mamba layers after stages 0, 2, 4, 6; the last two scan over channels (16x16, 4x4 maps)
    layers = m.encoder.mamba_layers
    assert [s for s, lay in enumerate(layers) if not isinstance(lay, nn.Identity)] == [0, 2, 4, 6]
    assert [_count(layers[s]) for s in (0, 2, 4, 6)] == [9_984, 116_736, 438_272, 3_392]
    assert [layers[s].dim for s in (0, 2, 4, 6)] == [32, 128, 256, 16]
    assert m.encoder.channel_token == [False, False, False, False, True, False, True]
    assert type(layers[0]) is MambaLayer and isinstance(layers[4], ChannelTokenMambaLayer)


def test_3d_default_follows_official_3d_file():
    m = create_model("umamba_enc", in_channels=1, num_classes=2, spatial_dims=3)
    assert m.input_size == (128, 128, 128)
    assert m.encoder.output_channels == [32, 64, 128, 256, 320, 320]
    assert isinstance(m.encoder.stages[0][0].conv1, nn.Conv3d)
    # a Mamba layer after every stage; the 4x4x4 bottleneck (64 <= 320) uses channel tokens
    assert [lay.dim for lay in m.encoder.mamba_layers] == [32, 64, 128, 256, 320, 64]
    assert m.encoder.channel_token == [False] * 5 + [True]
    # the full-resolution decoder stage also concatenates the stage-0 skip
    assert isinstance(m.decoder, UNetResDecoderAllSkips)
    assert m.decoder.stages[-1][0].conv1.in_channels == 64


def test_input_size_changes_the_architecture():
    a = create_model("umamba_enc", in_channels=1, num_classes=4, input_size=(512, 512))
    assert a.encoder.channel_token == [False] * 6 + [True]  # 32x32 = 1024 > 512 at stage 4
    b = UMambaEnc(in_channels=1, num_classes=4, input_size=None)  # create_model drops None kwargs
    assert b.encoder.channel_token == [False] * 7
    assert _count(b) == 46_390_552 - 438_272 - 3_392 + _count(MambaLayer(512)) * 2


# ----------------------------------------------------------------------------- tiny variant
@pytest.mark.parametrize("dims, size", [(2, (19, 22)), (3, (9, 6, 11))])
def test_tiny_shapes_grads_determinism(dims, size):
    m = _tiny(dims).train()
    assert m.deep_supervision and not any(m.encoder.channel_token)
    x = torch.randn(2, 1, *size)
    out = m(x)
    assert isinstance(out, list) and len(out) == 2
    assert out[0].shape == (2, 3, *size)  # highest resolution first
    assert out[1].shape == (2, 3, *[(s + 1) // 2 for s in size])
    sum(o.square().mean() for o in out).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    m.eval()
    m.deep_supervision = False
    with torch.no_grad():
        y1, y2 = m(x), m(x)
    assert y1.shape == (2, 3, *size) and torch.isfinite(y1).all()
    assert torch.equal(y1, y2)


def test_tiny_mamba_stage_pattern():
    # the tiny variant keeps only the bottleneck layer (fast ONNX export); the official pattern is the default
    assert [isinstance(lay, nn.Identity) for lay in _tiny(2).encoder.mamba_layers] == [True, True, False]
    m3 = UMambaEnc(1, 3, spatial_dims=3, input_size=None, features_per_stage=(4, 8, 16), d_state=4)
    assert not any(isinstance(lay, nn.Identity) for lay in m3.encoder.mamba_layers)  # 3D: every stage
    m2 = UMambaEnc(1, 3, spatial_dims=2, input_size=None, features_per_stage=(4, 8, 16), d_state=4)
    assert [isinstance(lay, nn.Identity) for lay in m2.encoder.mamba_layers] == [False, True, False]  # 2D: alternate
    out = m2(torch.randn(1, 1, 9, 10))
    assert out[0].shape == (1, 3, 9, 10)


@pytest.mark.parametrize("dims, input_size, ok_sizes, bad_size", [
    (2, (16, 16), [(16, 16), (13, 15)], (32, 32)),
    (3, (8, 8, 8), [(8, 8, 8), (7, 8, 5)], (8, 8, 16)),
])
def test_channel_token_mode(dims, input_size, ok_sizes, bad_size):
    m = _tiny(dims, input_size=input_size)
    assert m.encoder.channel_token == [False, False, True]  # 4x4 = 16 (2x2x2 = 8) <= 16 channels
    layer = m.encoder.mamba_layers[2]
    assert isinstance(layer, ChannelTokenMambaLayer) and layer.dim == (16 if dims == 2 else 8)
    for size in ok_sizes:
        out = m(torch.randn(1, 1, *size))
        assert out[0].shape == (1, 3, *size)
    sum(o.square().mean() for o in out).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    with pytest.raises(ValueError, match=r"input_size=\(" + ", ".join(map(str, input_size)) + r"\)"):
        m(torch.randn(1, 1, *bad_size))


def test_channel_token_layer_scans_over_channels():
    torch.manual_seed(0)
    layer = ChannelTokenMambaLayer(12, d_state=4).eval()
    x = torch.randn(1, 5, 3, 4)
    with torch.no_grad():
        y = layer(x)
        want = layer.mamba(layer.norm(x.flatten(2))).reshape(x.shape)
        x2 = x.clone()
        x2[:, 0] += torch.randn(3, 4)  # (a constant shift would be removed by the LayerNorm)
        y2 = layer(x2)
    assert torch.equal(y, want)
    assert not torch.allclose(y2[:, 4], y[:, 4])  # channel 0 reaches later channels (causal scan)
    with pytest.raises(ValueError, match="12 spatial positions"):
        layer(torch.randn(1, 5, 4, 4))
