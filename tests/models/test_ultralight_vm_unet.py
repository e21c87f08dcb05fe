"""Tests of UltraLight VM-UNet (parameter counts vs the official wurenkai/UltraLight-VM-UNet code,
PVM layer behaviour, tiny-variant behaviour)."""

import pytest
import torch
from torch import nn

from mambaseg.models import create_model, list_models, model_info
from mambaseg.models.ultralight_vm_unet import PVMLayer, UltraLightVMUNet


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


OFFICIAL_MODULE_COUNTS = {
    "encoder1": 224, "encoder2": 1_168, "encoder3": 3_480, "encoder4": 1_749, "encoder5": 2_945,
    "encoder6": 5_465, "scab": 16_614, "decoder1": 6_609, "decoder2": 3_897, "decoder3": 2_153,
    "decoder4": 3_472, "decoder5": 1_160, "ebn1": 16, "ebn2": 32, "ebn3": 48, "ebn4": 64, "ebn5": 96,
    "dbn1": 96, "dbn2": 64, "dbn3": 48, "dbn4": 32, "dbn5": 16, "final": 9,
}


def test_registered():
    assert {"ultralight_vm_unet", "ultralight_vm_unet_test"} <= set(list_models("ultralight_vm_unet*"))
    info = model_info("ultralight_vm_unet")
    assert (info.family, info.paper, info.spatial_dims) == ("ultralight_vm_unet", "arXiv:2403.20035", (2,))


def test_official_param_counts():
    m = create_model("ultralight_vm_unet", in_channels=3, num_classes=1)
    assert isinstance(m, UltraLightVMUNet)
    assert _count(m) == 49_457
    counts = {name: _count(mod) for name, mod in m.named_children()}
    assert counts == OFFICIAL_MODULE_COUNTS
    # one shared Mamba(C/4) per PVM layer
    assert m.encoder4[0].mamba.d_model == 6 and _count(m.encoder4[0].mamba) == 900


def test_pvm_layer_shared_mamba_and_formula():
    torch.manual_seed(0)
    layer = PVMLayer(8, 12, d_state=4).eval()
    assert _count(layer) == _count(layer.mamba) + 2 * 8 + 8 * 12 + 12 + 1
    x = torch.randn(2, 8, 3, 5)
    with torch.no_grad():
        y = layer(x)
        tokens = layer.norm(x.flatten(2).transpose(1, 2))
        groups = [layer.mamba(g) + layer.skip_scale * g for g in tokens.split(2, dim=2)]
        ref = layer.proj(layer.norm(torch.cat(groups, 2))).transpose(1, 2).reshape(2, 12, 3, 5)
    assert y.shape == (2, 12, 3, 5)
    torch.testing.assert_close(y, ref)
    # float16 inputs are computed in float32 (official casting)
    with torch.no_grad():
        assert layer(x.half()).dtype == torch.float32
    with pytest.raises(ValueError):
        PVMLayer(6, 8)


def test_bad_args():
    with pytest.raises(ValueError):
        UltraLightVMUNet(1, 1, spatial_dims=3)
    with pytest.raises(ValueError):
        UltraLightVMUNet(1, 1, c_list=(4, 8, 8, 8, 8))
    with pytest.raises(ValueError):
        UltraLightVMUNet(1, 1, c_list=(4, 8, 8, 6, 8, 8))


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("hw", [(32, 32), (37, 45)])
def test_tiny_shapes(in_channels, hw):
    torch.manual_seed(0)
    m = create_model("ultralight_vm_unet_test", in_channels=in_channels, num_classes=2).eval()
    with torch.no_grad():
        y = m(torch.randn(2, in_channels, *hw))
    assert y.shape == (2, 2, *hw)
    assert torch.isfinite(y).all()


def test_tiny_logits_not_sigmoid():
    torch.manual_seed(0)
    m = create_model("ultralight_vm_unet_test", in_channels=1, num_classes=1).eval()
    with torch.no_grad():
        y = m(3 * torch.randn(1, 1, 32, 32))
    assert (y < 0).any()  # raw logits


@pytest.mark.parametrize("split_att, bridge", [("fc", True), ("conv", True), ("fc", False)])
def test_tiny_gradients(split_att, bridge):
    torch.manual_seed(0)
    m = create_model("ultralight_vm_unet_test", in_channels=3, num_classes=2, split_att=split_att,
                     bridge=bridge).train()
    assert hasattr(m, "scab") == bridge
    y = m(torch.randn(2, 3, 37, 45))
    y.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_wrong_input_channels():
    m = create_model("ultralight_vm_unet_test", in_channels=1, num_classes=1)
    with pytest.raises(ValueError):
        m(torch.randn(1, 3, 32, 32))
