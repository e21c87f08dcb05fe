"""Tests of the nnU-Net plain U-Net (``unet``) and U-Mamba Bot (``umamba_bot``).

Parameter counts are pinned against the official networks (DNA ``PlainConvUNet``;
bowang-lab/U-Mamba ``UMambaBot_2d.py``); forward/backward only on tiny variants.
"""

import pytest
import torch
from torch import nn

from mambaseg.models import create_model, list_models, model_info
from mambaseg.models.umamba import UMambaBot
from mambaseg.models.unet import UNet


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registered():
    for name in ("unet", "unet_test", "umamba_bot", "umamba_bot_test"):
        assert name in list_models()
        assert model_info(name).spatial_dims == (2, 3)


# ----------------------------------------------------------------------------- counts
def test_unet_count_2d_default():
    m = create_model("unet", in_channels=1, num_classes=4, deep_supervision=True)
    assert isinstance(m, UNet)
    assert m.encoder.output_channels == [32, 64, 128, 256, 512, 512, 512]
    # DNA PlainConvUNet (conv bias, affine InstanceNorm, 2 convs per stage, transposed convs)
    assert _count(m.encoder) == 14_158_944
    assert _count(m.decoder.transpconvs) == 2_794_976
    assert _count(m.decoder.stages) == 16_514_880
    assert _count(m.decoder.seg_layers) == 6_040
    assert _count(m) == 33_474_840


def test_unet_3d_default_features():
    m = create_model("unet", in_channels=1, num_classes=2, spatial_dims=3)
    assert m.encoder.output_channels == [32, 64, 128, 256, 320, 320]
    assert isinstance(m.encoder.stages[0].convs[0].conv, nn.Conv3d)


def test_umamba_bot_count_and_split():
    m = create_model("umamba_bot", in_channels=1, num_classes=4)
    assert isinstance(m, UMambaBot) and m.deep_supervision
    assert _count(m.encoder.stem) == 28_384
    assert _count(m.encoder.stages) == 16_438_880
    assert _count(m.encoder) == 16_467_264
    assert _count(m.mamba_layer) == 1_695_744
    assert _count(m.decoder.stages) == 28_648_992
    assert _count(m.decoder.upsample_layers) == 699_872
    assert _count(m.decoder.seg_layers) == 6_040
    assert _count(m.decoder) == 29_354_904
    assert _count(m) == 47_517_912
    # the residual U-Net around the Mamba layer
    assert _count(m) - _count(m.mamba_layer) == 45_822_168


def test_umamba_bot_3d_builds():
    m = create_model("umamba_bot", in_channels=1, num_classes=3, spatial_dims=3)
    assert m.encoder.output_channels == [32, 64, 128, 256, 320, 320]
    assert m.mamba_layer.dim == 320
    assert len(m.decoder.seg_layers) == 5


# ----------------------------------------------------------------------------- forward/backward
SHAPES = {2: (1, 1, 37, 45), 3: (1, 1, 17, 20, 23)}


def _levels(spatial, n):
    out, cur = [], list(spatial)
    for _ in range(n):
        out.append(tuple(cur))
        cur = [-(-c // 2) for c in cur]
    return out


@pytest.mark.parametrize("name", ["unet_test", "umamba_bot_test"])
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("ds", [False, True])
def test_forward_backward(name, dims, ds):
    torch.manual_seed(0)
    m = create_model(name, in_channels=1, num_classes=3, spatial_dims=dims, deep_supervision=ds)
    x = torch.randn(SHAPES[dims])
    spatial = SHAPES[dims][2:]
    out = m(x)
    if ds:
        assert isinstance(out, list) and len(out) == 2  # 3 stages -> 2 decoder levels
        for o, s in zip(out, _levels(spatial, 2)):
            assert o.shape == (1, 3, *s)
        loss = sum(o.square().mean() for o in out)
    else:
        assert torch.is_tensor(out) and out.shape == (1, 3, *spatial)
        loss = out.square().mean()
    loss.backward()
    last_seg = f"decoder.seg_layers.{len(m.decoder.seg_layers) - 1}."
    for pname, p in m.named_parameters():
        if not ds and pname.startswith("decoder.seg_layers.") and not pname.startswith(last_seg):
            assert p.grad is None, pname  # lower-resolution heads unused without deep supervision (as DNA)
            continue
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    m.eval()
    with torch.no_grad():
        a, b = m(x), m(x)
    if ds:
        assert isinstance(a, list) and all(torch.equal(u, v) for u, v in zip(a, b))  # DS list in eval too (as DNA)
    else:
        assert torch.equal(a, b)


def test_umamba_deep_supervision_levels_2d_default_strides():
    # 3 stages, divisible input: no padding, levels exactly halve
    m = create_model("umamba_bot_test", in_channels=2, num_classes=4, features_per_stage=(4, 8, 16, 16))
    out = m(torch.randn(2, 2, 16, 24))
    assert [tuple(o.shape) for o in out] == [(2, 4, 16, 24), (2, 4, 8, 12), (2, 4, 4, 6)]
    m.deep_supervision = False
    assert m(torch.randn(2, 2, 16, 24)).shape == (2, 4, 16, 24)
