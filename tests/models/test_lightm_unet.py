"""Tests of LightM-UNet (parameter counts vs the official MrBlankness/LightM-UNet code,
tiny-variant behaviour in 2D and 3D)."""

import pytest
import torch
from torch import nn

from mambaseg.models import create_model, list_models, model_info
from mambaseg.models.lightm_unet import LightMambaLayer, LightMUNet, ResMambaBlock, ResUpBlock


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------- official configuration
def test_registered():
    assert {"lightm_unet", "lightm_unet_test"} <= set(list_models("lightm_unet*"))
    info = model_info("lightm_unet")
    assert (info.family, info.paper, info.spatial_dims) == ("lightm_unet", "arXiv:2403.05246", (2, 3))


def test_official_2d_counts():
    m = create_model("lightm_unet", in_channels=1, num_classes=4)
    assert isinstance(m, LightMUNet) and m.spatial_dims == 2
    assert _count(m) == 5_011_749
    assert _count(m.convInit) == 41
    assert _count(m.down_layers) == 4_944_021
    assert _count(m.up_layers) == 24_419
    assert _count(m.up_samples) == 43_008
    assert _count(m.conv_final) == 260
    # last encoder level: MambaLayer(128 -> 256) + pool, then 4 ResMambaBlocks (8 MambaLayers of 256)
    assert _count(m.down_layers[3]) == 4_186_377
    assert isinstance(m.down_layers[3][0][1], nn.MaxPool2d)
    assert [len(d) - 1 for d in m.down_layers] == [1, 2, 2, 4]
    assert _count(m.down_layers[3][1].conv1) == 504_065
    assert [isinstance(u[0], ResUpBlock) for u in m.up_layers] == [True] * 3
    assert m.up_samples[0][1].mode == "bilinear" and m.up_samples[0][0].bias is None
    assert isinstance(m.down_layers[1][1], ResMambaBlock)


@pytest.mark.parametrize("num_classes, total, up_layers, conv_final", [(3, 5_015_766, 28_451, 227),
                                                                       (4, 5_015_799, 28_451, 260)])
def test_official_3d_counts(num_classes, total, up_layers, conv_final):
    m = create_model("lightm_unet", in_channels=1, num_classes=num_classes, spatial_dims=3)
    assert _count(m) == total
    assert _count(m.convInit) == 59
    assert _count(m.down_layers) == 4_944_021
    assert _count(m.up_layers) == up_layers
    assert _count(m.up_samples) == 43_008
    assert _count(m.conv_final) == conv_final
    assert m.up_samples[0][1].mode == "trilinear"


def test_mamba_layer_structure():
    layer = LightMambaLayer(16, 32, d_state=4)
    assert layer.skip_scale.shape == (1,) and float(layer.skip_scale.detach()) == 1.0
    x = torch.randn(2, 16, 3, 5)
    y = layer(x)
    assert y.shape == (2, 32, 3, 5)
    # row-major tokens, shared LayerNorm before and after the scaled skip, then the projection
    t = x.flatten(2).transpose(1, 2)
    ref = layer.proj(layer.norm(layer.mamba(layer.norm(t)) + layer.skip_scale * t))
    torch.testing.assert_close(y, ref.transpose(1, 2).reshape(2, 32, 3, 5))


@pytest.mark.parametrize("kwargs", [dict(spatial_dims=1), dict(blocks_up=(1,)), dict(upsample_mode="pixelshuffle")])
def test_invalid_args(kwargs):
    with pytest.raises(ValueError):
        create_model("lightm_unet_test", in_channels=1, num_classes=2, **kwargs)


# ----------------------------------------------------------------------------- tiny variant behaviour
_SHAPES = {2: (1, 1, 37, 45), 3: (1, 1, 17, 20, 23)}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_tiny_forward_backward(spatial_dims):
    torch.manual_seed(0)
    m = create_model("lightm_unet_test", in_channels=1, num_classes=3, spatial_dims=spatial_dims)
    x = torch.randn(*_SHAPES[spatial_dims])
    y = m(x)
    assert y.shape == (1, 3, *x.shape[2:])
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_tiny_eval_deterministic(spatial_dims):
    torch.manual_seed(0)
    m = create_model("lightm_unet_test", in_channels=1, num_classes=2, spatial_dims=spatial_dims,
                     dropout_prob=0.2).eval()
    x = torch.randn(*_SHAPES[spatial_dims])
    with torch.no_grad():
        a, b = m(x), m(x)
    assert torch.equal(a, b)


def test_wrong_input_rank():
    m = create_model("lightm_unet_test", in_channels=1, num_classes=2)
    with pytest.raises(ValueError):
        m(torch.randn(1, 1, 8, 8, 8))
