"""Tests of VM-UNet (parameter counts vs the official JCruan519/VM-UNet code, tiny-variant behaviour)."""

import pytest
import torch
from torch import nn

from mambaseg.models import create_model, list_models, model_info
from mambaseg.models.vm_unet import VMUNet


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------- official configuration
def test_registered():
    assert {"vm_unet", "vm_unet_test"} <= set(list_models("vm_unet*"))
    info = model_info("vm_unet")
    assert (info.family, info.paper, info.spatial_dims) == ("vm_unet", "arXiv:2402.02491", (2,))


@pytest.mark.parametrize("num_classes, total", [(1, 27_427_561), (9, 27_427_761)])
def test_official_param_count(num_classes, total):
    m = create_model("vm_unet", in_channels=3, num_classes=num_classes)
    assert isinstance(m, VMUNet)
    assert _count(m) == total


def test_official_module_counts():
    m = create_model("vm_unet", in_channels=3, num_classes=1)
    assert _count(m.patch_embed) == 4_896
    assert _count(m.layers) == 13_747_584
    assert _count(m.layers_up) == 13_638_144
    assert _count(m.final_up) == 36_912
    assert _count(m.final_conv) == 25
    # decoder layout: no expanding in layers_up.0, expanding before the blocks elsewhere
    assert m.layers_up[0].upsample is None
    assert [len(s.blocks) for s in m.layers_up] == [2, 2, 2, 1]
    assert [s.blocks[0].ln_1.normalized_shape[0] for s in m.layers_up] == [768, 384, 192, 96]
    assert tuple(m.final_conv.weight.shape) == (1, 24, 1, 1)
    # drop-path schedules: encoder linspace(0, 0.2, 8), decoder linspace(0, 0.2, 7) reversed
    rates_enc = [b.drop_path.drop_prob for s in m.layers for b in s.blocks]
    rates_dec = [b.drop_path.drop_prob for s in m.layers_up for b in s.blocks]
    assert rates_enc == pytest.approx(torch.linspace(0, 0.2, 8).tolist())
    assert rates_dec == pytest.approx(torch.linspace(0, 0.2, 7).tolist()[::-1])


def test_spatial_dims_and_bad_depths():
    with pytest.raises(ValueError):
        VMUNet(1, 2, spatial_dims=3)
    with pytest.raises(ValueError):
        VMUNet(1, 2, depths=(1, 1), depths_decoder=(1, 1, 1))


# ----------------------------------------------------------------------------- tiny variant
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("hw", [(32, 32), (37, 45)])
def test_tiny_shapes(in_channels, hw):
    torch.manual_seed(0)
    m = create_model("vm_unet_test", in_channels=in_channels, num_classes=2).eval()
    with torch.no_grad():
        y = m(torch.randn(2, in_channels, *hw))
    assert y.shape == (2, 2, *hw)
    assert torch.isfinite(y).all()


def test_tiny_raster_scan():
    torch.manual_seed(0)
    m = create_model("vm_unet_test", in_channels=1, num_classes=1, scan="raster").eval()
    with torch.no_grad():
        y = m(torch.randn(1, 1, 37, 45))
    assert y.shape == (1, 1, 37, 45) and torch.isfinite(y).all()


def test_wrong_input_channels():
    m = create_model("vm_unet_test", in_channels=1, num_classes=1)
    with pytest.raises(ValueError):
        m(torch.randn(1, 3, 32, 32))
