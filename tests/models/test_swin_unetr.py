"""SwinUNETR wrapper: it is MONAI's network (same parameters, same output at accepted sizes), pads any size to
MONAI's rule and crops back, and reaches every parameter with the gradient."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from mambaseg import create_model, model_info


def test_default_is_monai_swin_unetr_with_feature_size_48():
    from monai.networks.nets import SwinUNETR

    model = create_model("swin_unetr", in_channels=1, num_classes=14)
    direct = SwinUNETR(in_channels=1, out_channels=14, feature_size=48)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(model) == count(direct)
    assert [(n, p.shape) for n, p in model.net.named_parameters()] == [
        (n, p.shape) for n, p in direct.named_parameters()]
    assert model_info("swin_unetr").spatial_dims == (2, 3)


@pytest.mark.parametrize("dims, size", [(2, (64, 96)), (3, (64, 64, 64))])
def test_accepted_sizes_run_monai_unchanged(dims, size):
    torch.manual_seed(0)
    model = create_model("swin_unetr_test", in_channels=2, num_classes=3, spatial_dims=dims).eval()
    x = torch.randn(1, 2, *size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net(x), rtol=0, atol=0)


@pytest.mark.parametrize("dims, size, padded", [(2, (37, 45), (64, 64)), (2, (70, 64), (96, 64)),
                                                (3, (17, 20, 23), (64, 64, 64))])
def test_any_size_is_zero_padded_and_cropped_back(dims, size, padded):
    torch.manual_seed(0)
    model = create_model("swin_unetr_test", in_channels=1, num_classes=3, spatial_dims=dims).eval()
    assert model.padded_size(size) == padded
    x = torch.randn(2, 1, *size)
    pads = [p for s, t in zip(reversed(size), reversed(padded)) for p in (0, t - s)]
    with torch.no_grad():
        out = model(x)
        want = model.net(F.pad(x, pads))[(..., *(slice(0, s) for s in size))]
    assert out.shape == (2, 3, *size)
    torch.testing.assert_close(out, want, rtol=0, atol=0)


@pytest.mark.parametrize("dims, size", [(2, (33, 40)), (3, (20, 17, 9))])
def test_gradient_reaches_every_parameter(dims, size):
    torch.manual_seed(0)
    model = create_model("swin_unetr_test", in_channels=1, num_classes=3, spatial_dims=dims).train()
    model(torch.randn(1, 1, *size)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:5]


def test_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="multiple of 12"):
        create_model("swin_unetr_test", in_channels=1, num_classes=2, feature_size=16)
    with pytest.raises(ValueError, match="spatial_dims 2 or 3"):
        create_model("swin_unetr_test", in_channels=1, num_classes=2, spatial_dims=1)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "einops" else find_spec(name, *a))
    with pytest.raises(ImportError, match="einops"):
        create_model("swin_unetr_test", in_channels=1, num_classes=2)
