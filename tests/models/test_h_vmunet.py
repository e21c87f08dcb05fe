"""Tests of H-vmunet (parameter counts vs the official wurenkai/H-vmunet code, H-SS2D pieces,
tiny-variant behaviour)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mambaseg.models import create_model, list_models, model_info
from mambaseg.models.h_vmunet import HSS2D, HVMUNet, LayerNormChannelsFirst, LocalSS2D


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


OFFICIAL_MODULE_COUNTS = {
    "encoder1": 224, "encoder2": 1_168, "encoder3": 54_040, "encoder4": 158_168, "encoder5": 528_088,
    "encoder6": 1_564_696, "scab": 61_854, "decoder1": 4_641_840, "decoder2": 1_427_056, "decoder3": 405_200,
    "decoder4": 128_128, "decoder5": 1_160, "ebn1": 16, "ebn2": 32, "ebn3": 64, "ebn4": 128, "ebn5": 256,
    "dbn1": 256, "dbn2": 128, "dbn3": 64, "dbn4": 32, "dbn5": 16, "final": 9,
}


def test_registered():
    assert {"h_vmunet", "h_vmunet_test"} <= set(list_models("h_vmunet*"))
    info = model_info("h_vmunet")
    assert (info.family, info.paper, info.spatial_dims) == ("h_vmunet", "arXiv:2403.13642", (2,))


def test_official_param_counts():
    m = create_model("h_vmunet", in_channels=3, num_classes=1)
    assert isinstance(m, HVMUNet)
    assert _count(m) == 8_972_623
    assert {name: _count(mod) for name, mod in m.named_children()} == OFFICIAL_MODULE_COUNTS
    # orders 2, 3, 4, 5 in the encoder, 5, 4, 3, 2 in the decoder
    orders = [getattr(m, n)[0].H_SS2D.order for n in
              ("encoder3", "encoder4", "encoder5", "encoder6", "decoder1", "decoder2", "decoder3", "decoder4")]
    assert orders == [2, 3, 4, 5, 5, 4, 3, 2]
    assert m.encoder6[0].H_SS2D.dims == [8, 16, 32, 64, 128]
    assert tuple(m.encoder5[0].H_SS2D.dwconv.complex_weight.shape) == (60, 24, 13, 2)
    # drop path: linspace(0, 0.4, 8); decoder1 uses dp_rates[6] for both blocks
    dpr = torch.linspace(0, 0.4, 8).tolist()

    def rates(name):
        return [getattr(b.drop_path, "drop_prob", 0.0) for b in getattr(m, name)[:-1]]

    assert rates("encoder3") + rates("encoder4") + rates("encoder5") + rates("encoder6") == pytest.approx(dpr)
    assert rates("decoder1") == pytest.approx([dpr[6]] * 2)
    assert rates("decoder2") == pytest.approx(dpr[4:6])
    assert rates("decoder4") == pytest.approx(dpr[0:2])


def test_layernorm_channels_first():
    ln = LayerNormChannelsFirst(6)
    nn.init.normal_(ln.weight)
    nn.init.normal_(ln.bias)
    x = torch.randn(2, 6, 3, 4)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6,), ln.weight, ln.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), ref)


def test_local_ss2d_interleaves():
    torch.manual_seed(0)
    m = LocalSS2D(8, d_state=4).eval()
    x = torch.randn(1, 8, 5, 6)
    with torch.no_grad():
        y = m(x)
        xn = m.pre_norm(x)
        a = m.dw(xn[:, :4])
        b = m.SS2D(xn[:, 4:].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        z = torch.empty_like(x)
        z[:, 0::2], z[:, 1::2] = a, b
    torch.testing.assert_close(y, m.post_norm(z))


def test_hss2d_shapes_and_checks():
    torch.manual_seed(0)
    m = HSS2D(16, order=3, d_state=4)
    assert m.dims == [4, 8, 16] and hasattr(m, "ss2d_2") and not hasattr(m, "ss2d_3")
    assert m(torch.randn(1, 16, 5, 7)).shape == (1, 16, 5, 7)
    with pytest.raises(ValueError):
        HSS2D(16, order=5)


def test_bad_args():
    with pytest.raises(ValueError):
        HVMUNet(1, 1, spatial_dims=3)
    with pytest.raises(ValueError):
        HVMUNet(1, 1, c_list=(8, 16, 32, 64, 128))
    with pytest.raises(ValueError):
        HVMUNet(1, 1, c_list=(4, 8, 8, 16, 16, 32))  # c4 = 16 cannot hold order 5


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("hw", [(32, 32), (37, 45)])
def test_tiny_shapes(in_channels, hw):
    torch.manual_seed(0)
    m = create_model("h_vmunet_test", in_channels=in_channels, num_classes=2).eval()
    with torch.no_grad():
        y = m(torch.randn(1, in_channels, *hw))
    assert y.shape == (1, 2, *hw)
    assert torch.isfinite(y).all()


def test_wrong_input_channels():
    m = create_model("h_vmunet_test", in_channels=1, num_classes=1)
    with pytest.raises(ValueError):
        m(torch.randn(1, 3, 32, 32))
