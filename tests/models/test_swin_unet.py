"""Swin-UNet (arXiv:2105.05537), the Transformer baseline of Mamba-UNet.

Official parameter count: HuCaoFighting/Swin-Unet (1c8b3e8) ``SwinTransformerSys`` with the ACDC
config (``swin_tiny_patch4_window7_224_lite.yaml``: img 224, patch 4, embed 96, depths [2,2,2,2],
heads [3,6,12,24], window 7; decoder depths = encoder depths, since ``depths_decoder`` is unused
by the official class), in_chans 3, num_classes 4: 27,168,420. Obtained by instantiating a faithful
scratch transcription of the official module tree (never committed) and comparing every state-dict
key and shape with ours (equal, ``relative_position_index``/``attn_mask`` buffers equal in value);
cross-checked by hand: a Swin block of width C with h heads and window 7 has
``12 C^2 + 13 C + 169 h`` parameters (2 LayerNorms 4C, qkv 3C^2+3C, proj C^2+C, MLP 8C^2+5C,
bias table 169h).
"""

from __future__ import annotations

import pytest
import torch

from mambaseg import create_model
from mambaseg.blocks.swin import (
    SwinTransformerBlock,
    relative_position_index,
    shifted_window_mask,
)
from mambaseg.models.swin_unet import SwinUNet


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def block_params(c: int, h: int, ws: int = 7) -> int:
    return 12 * c * c + 13 * c + (2 * ws - 1) ** 2 * h


# ---------------------------------------------------------------- official count

def build_on_meta(name, **kwargs):
    """Structure only (no memory, no init): enough for parameter counts and shapes."""
    with torch.device("meta"):
        return create_model(name, **kwargs)


@pytest.fixture(scope="module")
def acdc():
    return build_on_meta("swin_unet", in_channels=3, num_classes=4)


def test_official_parameter_count(acdc):
    assert n_params(acdc) == 27_168_420


@pytest.mark.parametrize("name, count", [
    ("patch_embed", 4_896),
    ("layers.0", 299_190),
    ("layers.1", 1_188_204),
    ("layers.2", 4_735_704),
    ("layers.3", 14_183_856),
    ("layers_up.0", 1_180_416),
    ("layers_up.1", 3_848_280),
    ("layers_up.2", 965_676),
    ("layers_up.3", 224_694),
    ("concat_back_dim", 387_744),
    ("norm", 1_536),
    ("norm_up", 192),
    ("up", 147_648),
    ("output", 384),
    ("layers.0.blocks.0", 112_347),
    ("layers.3.blocks.0", 7_091_928),
])
def test_module_parameter_counts(acdc, name, count):
    assert n_params(acdc.get_submodule(name)) == count


def test_block_count_formula(acdc):
    for i, (c, h) in enumerate(zip((96, 192, 384, 768), (3, 6, 12, 24))):
        for b in range(2):
            assert n_params(acdc.layers[i].blocks[b]) == block_params(c, h)


def test_one_channel_has_no_repetition():
    model = build_on_meta("swin_unet", in_channels=1, num_classes=4)
    assert n_params(model) == 27_168_420 - 2 * 96 * 16  # no 1 -> 3 repeat: fewer patch_embed.proj weights


def test_official_window_rule_and_buffers(acdc):
    # Grids 56/28/14/7 at 224: the 7x7 bottleneck has window 7 and no shift (official rule).
    shifts = [[blk.shift_size for blk in layer.blocks] for layer in acdc.layers]
    assert shifts == [[0, 3], [0, 3], [0, 3], [0, 0]]
    assert all(blk.window_size == 7 for layer in acdc.layers for blk in layer.blocks)
    sd = acdc.state_dict()
    assert sd["layers.0.blocks.0.attn.relative_position_bias_table"].shape == (169, 3)
    assert "layers.0.blocks.0.attn_mask" not in sd and "layers.3.blocks.1.attn_mask" not in sd
    assert sd["layers.0.blocks.1.attn_mask"].shape == (64, 49, 49)
    assert sd["layers_up.3.blocks.1.attn_mask"].shape == (64, 49, 49)
    # Values: the precomputed masks are the official ones (checked on a real, small-width model at 224).
    torch.manual_seed(0)
    real = create_model("swin_unet_test", in_channels=1, num_classes=2, depths=(2, 2, 2, 2), window_size=7)
    assert torch.equal(real.layers[1].blocks[1].attn_mask, shifted_window_mask(28, 28, 7, 3))
    assert torch.equal(real.layers[0].blocks[0].attn.relative_position_index, relative_position_index((7, 7)))


# ---------------------------------------------------------------- relative position index

def test_relative_position_index_layout():
    ws = (3, 4)
    idx = relative_position_index(ws)
    assert idx.shape == (12, 12)
    for i in range(12):
        for j in range(12):
            dy, dx = i // 4 - j // 4, i % 4 - j % 4
            assert idx[i, j] == (dy + ws[0] - 1) * (2 * ws[1] - 1) + (dx + ws[1] - 1)
    assert idx.max() == (2 * 3 - 1) * (2 * 4 - 1) - 1


# ---------------------------------------------------------------- shifted-window mask

def brute_force_mask(hp, wp, ws, s, h, w):
    """Token pairs of each window of the rolled grid, judged in original coordinates: allowed iff both
    lie in the same shifted window of the (non-cyclic) image, i.e. ``floor((y - s) / ws)`` and
    ``floor((x - s) / ws)`` agree, and the key is a real (not padded) token."""
    nwh, nww, n = hp // ws, wp // ws, ws * ws
    mask = torch.zeros(nwh * nww, n, n)
    for wy in range(nwh):
        for wx in range(nww):
            coords = []
            for p in range(n):
                ry, rx = wy * ws + p // ws, wx * ws + p % ws  # rolled coordinates
                coords.append(((ry + s) % hp, (rx + s) % wp))  # original coordinates
            for p, (yi, xi) in enumerate(coords):
                for q, (yj, xj) in enumerate(coords):
                    same = (yi - s) // ws == (yj - s) // ws and (xi - s) // ws == (xj - s) // ws
                    if not same or yj >= h or xj >= w:
                        mask[wy * nww + wx, p, q] = -100.0
    return mask


@pytest.mark.parametrize("hp, wp, ws, s, h, w", [
    (8, 12, 4, 2, 8, 12),    # shift only
    (6, 9, 3, 1, 6, 9),      # odd window
    (8, 8, 4, 2, 5, 7),      # shift + padding
    (8, 12, 4, 0, 6, 9),     # padding only
])
def test_shifted_window_mask_matches_brute_force(hp, wp, ws, s, h, w):
    got = shifted_window_mask(hp, wp, ws, s, valid_hw=(h, w))
    assert torch.equal(got, brute_force_mask(hp, wp, ws, s, h, w))


def test_mask_none_without_shift_or_padding():
    assert shifted_window_mask(8, 8, 4, 0) is None


def test_shifted_regions_do_not_mix():
    # Last window of the rolled 8x8 grid (ws 4, shift 2): its top-left token came from original (6, 6) and its
    # bottom-right one from (1, 1): different regions, so they must not attend to each other.
    mask = shifted_window_mask(8, 8, 4, 2)
    assert mask[-1, 0, 15] == -100.0 and mask[-1, 15, 0] == -100.0
    assert mask[0].eq(0).all()  # first window is one region


# ---------------------------------------------------------------- block padding

@pytest.mark.parametrize("shift", [0, 2])
def test_block_padding_is_masked(shift):
    torch.manual_seed(0)
    blk = SwinTransformerBlock(8, 2, window_size=4, shift_size=shift).eval()
    x = torch.randn(1, 5, 5, 8)
    with torch.no_grad():
        full = blk(x)
        if shift == 0:
            # Window [0:4, 0:4] is all real; window (1, 1) holds only token (4, 4): both equal the cropped inputs.
            torch.testing.assert_close(full[:, :4, :4], blk(x[:, :4, :4]))
            torch.testing.assert_close(full[:, 4:, 4:], blk(x[:, 4:, 4:]))
    assert full.shape == x.shape and torch.isfinite(full).all()


def test_block_at_built_resolution_uses_buffer():
    blk = SwinTransformerBlock(8, 2, window_size=4, shift_size=2, input_resolution=(8, 8))
    assert blk._mask_for(8, 8, 8, 8, "cpu") is blk.attn_mask
    assert torch.equal(blk._mask_for(6, 8, 8, 8, "cpu"), shifted_window_mask(8, 8, 4, 2, valid_hw=(6, 8)))
    small = SwinTransformerBlock(8, 2, window_size=4, shift_size=2, input_resolution=(3, 5))
    assert (small.window_size, small.shift_size) == (3, 0)


# ---------------------------------------------------------------- tiny variant

TINY = [{}, {"depths": (2, 2, 2, 2)}]  # the registered tiny variant, and one with shifted blocks


@pytest.mark.parametrize("kw", TINY, ids=["depth1", "depth2"])
@pytest.mark.parametrize("size", [(32, 32), (37, 45)])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_tiny_shapes(kw, size, in_channels):
    torch.manual_seed(0)
    model = create_model("swin_unet_test", in_channels=in_channels, num_classes=4, **kw).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, *size))
    assert out.shape == (2, 4, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kw", TINY, ids=["depth1", "depth2"])
def test_tiny_gradients_and_determinism(kw):
    torch.manual_seed(0)
    model = create_model("swin_unet_test", in_channels=1, num_classes=4, **kw).train()
    model(torch.randn(2, 1, 37, 45)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_tiny_at_img_size_has_no_padding():
    model = create_model("swin_unet_test", in_channels=1, num_classes=2, depths=(2, 2, 2, 2), img_size=64).eval()
    assert [blk.shift_size for blk in model.layers[0].blocks] == [0, 2]
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 2, 64, 64)


def test_rejects_3d_and_bad_heads():
    with pytest.raises(ValueError):
        SwinUNet(1, 2, spatial_dims=3)
    with pytest.raises(ValueError):
        create_model("swin_unet_test", in_channels=1, num_classes=2, num_heads=(5, 1, 2, 2))
