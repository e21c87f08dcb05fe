"""Tests of the model registry and of Mamba-UNet (parameter counts vs the official code)."""

import pytest
import torch
from torch import nn

from mambaseg.models import MambaUNet, _registry, create_model, list_models, model_info, register_model


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture
def temp_names():
    added = []
    yield added
    for name in added:
        _registry._REGISTRY.pop(name, None)


# ----------------------------------------------------------------------------- registry
def test_register_create_list(temp_names):
    @register_model
    def _tmp_bare_model(**kwargs):
        return nn.Linear(kwargs.get("n", 2), 3)

    @register_model(family="tmp", paper="arXiv:0000.00000", spatial_dims=(2, 3), default_cfg={"n": 2})
    def _tmp_called_model(n=2, bias=True):
        return nn.Linear(n, 3, bias=bias)

    temp_names += ["_tmp_bare_model", "_tmp_called_model"]
    assert "_tmp_bare_model" in list_models() and "_tmp_called_model" in list_models()
    assert list_models() == sorted(list_models())
    assert list_models("_tmp_*") == ["_tmp_bare_model", "_tmp_called_model"]
    m = create_model("_tmp_called_model", n=5, bias=None)  # None-valued kwargs dropped
    assert isinstance(m, nn.Linear) and m.in_features == 5 and m.bias is not None
    info = model_info("_tmp_called_model")
    expected = ("tmp", "arXiv:0000.00000", (2, 3), {"n": 2})
    assert (info.family, info.paper, info.spatial_dims, info.default_cfg) == expected
    assert model_info("_tmp_bare_model").family == "_tmp_bare_model"


def test_duplicate_name_raises(temp_names):
    @register_model
    def _tmp_dup_model():
        return nn.Identity()

    temp_names.append("_tmp_dup_model")
    with pytest.raises(ValueError, match="already registered"):
        register_model(_tmp_dup_model)


def test_unknown_name_suggests_close_match():
    with pytest.raises(ValueError) as e:
        create_model("mamba_unnet", in_channels=1, num_classes=2)
    assert "'mamba_unet'" in str(e.value) and "mamba_unet_test" in str(e.value)
    with pytest.raises(ValueError):
        model_info("no_such_model")


def test_mamba_unet_registered_with_metadata():
    assert {"mamba_unet", "mamba_unet_test"} <= set(list_models("mamba_unet*"))
    info = model_info("mamba_unet")
    assert info.family == "mamba_unet" and info.paper == "arXiv:2402.05079" and info.spatial_dims == (2,)
    assert info.default_cfg["embed_dim"] == 96 and tuple(info.default_cfg["depths"]) == (2, 2, 2, 2)


# ----------------------------------------------------------------------------- official counts
def test_mamba_unet_official_parameter_counts():
    m = create_model("mamba_unet", in_channels=3, num_classes=4)
    assert isinstance(m, MambaUNet)
    assert _count(m) == 19_121_664
    assert _count(m.patch_embed) == 4_896 and _count(m.patch_embed.proj) == 4_704
    assert [_count(l) for l in m.layers] == [285_312, 976_128, 3_574_272, 8_911_872]
    assert _count(m.layers) == 13_747_584
    assert [_count(l) for l in m.layers_up] == [1_180_416, 2_686_848, 753_600, 210_816]
    assert _count(m.layers_up) == 4_831_680
    assert [_count(l) for l in m.concat_back_dim] == [0, 295_296, 73_920, 18_528]
    assert _count(m.concat_back_dim) == 387_744
    assert (_count(m.norm), _count(m.norm_up)) == (1_536, 192)
    assert _count(m.up) == 147_648 and _count(m.up.expand) == 147_456
    assert _count(m.output) == 384
    # drop-path schedule: linspace(0, 0.2, 8) over the encoder; decoder stages reuse their level's rates
    rates = [b.drop_path.drop_prob for l in m.layers for b in l.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.2, 8).tolist())
    up_rates = [b.drop_path.drop_prob for l in list(m.layers_up)[1:] for b in l.blocks]
    assert up_rates == pytest.approx(rates[4:6] + rates[2:4] + rates[0:2])


def test_spatial_dims_3_rejected():
    with pytest.raises(ValueError, match="2D"):
        create_model("mamba_unet_test", in_channels=1, num_classes=2, spatial_dims=3)


# ----------------------------------------------------------------------------- tiny variant
@pytest.mark.parametrize("in_channels,size", [(1, (32, 32)), (3, (64, 64)), (1, (37, 45))])
def test_tiny_output_shape(in_channels, size):
    torch.manual_seed(0)
    m = create_model("mamba_unet_test", in_channels=in_channels, num_classes=3)
    y = m(torch.randn(2, in_channels, *size))
    assert y.shape == (2, 3, *size) and torch.isfinite(y).all()


def test_tiny_raster_scan():
    torch.manual_seed(0)
    m = create_model("mamba_unet_test", in_channels=1, num_classes=2, scan="raster")
    scans = {mod.scan for mod in m.modules() if hasattr(mod, "scan_order")}
    assert scans == {"raster"}
    assert m(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_wrong_input_channels_raises():
    m = create_model("mamba_unet_test", in_channels=1, num_classes=2)
    with pytest.raises(ValueError):
        m(torch.randn(1, 3, 32, 32))
