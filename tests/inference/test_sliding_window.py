"""Sliding-window inference and mirroring TTA: nnU-Net's Gaussian and tiling, equivalence with whole-image
prediction for translation-equivariant functions, 2D and 3D, images smaller than the patch."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mambaseg.inference import (
    compute_gaussian,
    compute_steps_for_sliding_window,
    predict_with_tta,
    sliding_window_inference,
)


def _nnunet_gaussian(tile_size, sigma_scale=1.0 / 8):
    """Transcription of nnU-Net v2 compute_gaussian (float64, no dtype/device cast)."""
    ndimage = pytest.importorskip("scipy.ndimage")
    tmp = np.zeros(tile_size)
    tmp[tuple(i // 2 for i in tile_size)] = 1
    g = ndimage.gaussian_filter(tmp, [i * sigma_scale for i in tile_size], 0, mode="constant", cval=0)
    g = g / g.max()
    g[g == 0] = g[g != 0].min()
    return torch.from_numpy(g)


def _nnunet_steps(image_size, tile_size, tile_step_size):
    """Transcription of nnU-Net v2 compute_steps_for_sliding_window."""
    target = [i * tile_step_size for i in tile_size]
    num_steps = [int(np.ceil((i - k) / j)) + 1 for i, j, k in zip(image_size, target, tile_size)]
    steps = []
    for dim in range(len(tile_size)):
        max_step = image_size[dim] - tile_size[dim]
        actual = max_step / (num_steps[dim] - 1) if num_steps[dim] > 1 else 99999999999
        steps.append([int(np.round(actual * i)) for i in range(num_steps[dim])])
    return steps


@pytest.mark.parametrize("patch", [(32, 24), (8, 12, 10), (5, 7), (1, 16, 16), (64, 64, 64)])
def test_gaussian_matches_nnunet(patch):
    ours = compute_gaussian(patch, dtype=torch.float64)
    torch.testing.assert_close(ours, _nnunet_gaussian(patch), rtol=1e-10, atol=1e-12)
    assert ours.max() == 1.0 and ours[tuple(p // 2 for p in patch)] == 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gaussian_weights_never_zero(dtype):
    for patch in [(128, 128, 128), (2, 3), (1, 1), (192, 160)]:
        g = compute_gaussian(patch, dtype=dtype)
        assert g.dtype == dtype and bool((g > 0).all())


@pytest.mark.parametrize("size,patch,step", [((110,), (64,), 0.5), ((64,), (64,), 0.5), ((300, 37), (64, 16), 0.5),
                                             ((97, 201, 50), (32, 48, 50), 0.33), ((65,), (64,), 1.0)])
def test_steps_match_nnunet_and_cover(size, patch, step):
    steps = compute_steps_for_sliding_window(size, patch, step)
    assert steps == _nnunet_steps(size, patch, step)
    for s, p, st in zip(size, patch, steps):
        assert st[0] == 0 and st[-1] == s - p
        assert all(0 < b - a <= math.ceil(p * step) for a, b in itertools.pairwise(st))
    assert compute_steps_for_sliding_window((110,), (64,), 0.5) == [[0, 23, 46]]  # nnU-Net's docstring example


def _conv(in_ch, out_ch, k, dims, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn((out_ch, in_ch) + (k,) * dims, generator=g)
    b = torch.randn(out_ch, generator=g)
    op = F.conv2d if dims == 2 else F.conv3d
    return lambda x: op(x, w, b, padding=k // 2)


@pytest.mark.parametrize("gaussian", [True, False])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_1x1_conv_equals_whole_image_2d(gaussian, batch_size):
    fn = _conv(3, 4, 1, 2)
    image = torch.randn(2, 3, 37, 50)
    out = sliding_window_inference(fn, image, (16, 20), overlap=0.5, gaussian=gaussian, batch_size=batch_size)
    assert out.shape == (2, 4, 37, 50) and out.dtype == torch.float32
    torch.testing.assert_close(out, fn(image), rtol=1e-5, atol=1e-5)


def test_1x1_conv_equals_whole_image_3d():
    fn = _conv(2, 3, 1, 3)
    image = torch.randn(1, 2, 20, 17, 23)
    out = sliding_window_inference(fn, image, (8, 8, 8), overlap=0.25, num_classes=3)
    torch.testing.assert_close(out, fn(image), rtol=1e-5, atol=1e-5)


def test_identity_recovers_image():
    image = torch.randn(1, 2, 45, 33)
    out = sliding_window_inference(lambda x: x, image, 16, overlap=0.5)
    torch.testing.assert_close(out, image, rtol=1e-6, atol=1e-6)


def test_3x3_conv_equals_whole_image_away_from_tile_borders():
    """Zero padding differs only on tile edges inside the image: everywhere else the blend is exact."""
    fn = _conv(1, 2, 3, 2)
    size, patch = (40, 29), (16, 12)
    image = torch.randn(1, 1, *size)
    out = sliding_window_inference(fn, image, patch, overlap=0.5)
    bad = torch.zeros(size, dtype=torch.bool)
    steps = compute_steps_for_sliding_window(size, patch, 0.5)
    for sy, sx in itertools.product(*steps):
        # a tile's zero padding differs from the image only on tile edges that are not image edges
        edge = torch.zeros(size, dtype=torch.bool)
        if sy > 0:
            edge[sy, sx:sx + patch[1]] = True
        if sy + patch[0] < size[0]:
            edge[sy + patch[0] - 1, sx:sx + patch[1]] = True
        if sx > 0:
            edge[sy:sy + patch[0], sx] = True
        if sx + patch[1] < size[1]:
            edge[sy:sy + patch[0], sx + patch[1] - 1] = True
        bad |= edge
    good = ~bad
    assert good.float().mean() > 0.5
    torch.testing.assert_close(out[..., good], fn(image)[..., good], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[..., bad], fn(image)[..., bad], atol=1e-3)  # the check is not vacuous


@pytest.mark.parametrize("size", [(10, 7), (10, 40), (16, 3)])
def test_image_smaller_than_patch(size):
    fn = _conv(1, 2, 1, 2)
    image = torch.randn(2, 1, *size)
    out = sliding_window_inference(fn, image, (16, 16))
    assert out.shape == (2, 2, *size)
    torch.testing.assert_close(out, fn(image), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sliding_window_inference(lambda x: x, image, (16, 16)), image)


def test_image_smaller_than_patch_3d_padding_is_centred():
    image = torch.randn(1, 1, 5, 6, 7)
    seen = []

    def fn(x):
        seen.append(x)
        return x

    out = sliding_window_inference(fn, image, (8, 8, 8))
    assert len(seen) == 1
    # acvl_utils.pad_nd_image: pad below = diff // 2, the odd voxel above
    torch.testing.assert_close(seen[0][0, 0, 1:6, 1:7, 0:7], image[0, 0])
    torch.testing.assert_close(out, image)


def test_uniform_weights_cover_every_voxel():
    image = torch.zeros(1, 1, 51, 38, 9)
    counts = sliding_window_inference(lambda x: torch.ones_like(x), image, (16, 16, 4), overlap=0.5, gaussian=False)
    assert torch.equal(counts, torch.ones_like(counts))


def test_list_output_uses_first_and_checks():
    fn = _conv(1, 2, 1, 2)
    image = torch.randn(1, 1, 20, 20)
    out = sliding_window_inference(lambda x: [fn(x), fn(x)[..., ::2, ::2]], image, (8, 8))
    torch.testing.assert_close(out, fn(image), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="num_classes"):
        sliding_window_inference(fn, image, (8, 8), num_classes=3)
    with pytest.raises(ValueError):
        sliding_window_inference(lambda x: x[..., :4, :4], image, (8, 8))


def test_tta_flip_equivariant_equals_plain():
    # a conv with a mirror-symmetric kernel is flip-equivariant (zero padding is symmetric too)
    k = torch.randn(3, 2, 3, 3, 3)
    k = (k + k.flip(2) + k.flip(3) + k.flip(4) + k.flip(2, 3) + k.flip(2, 4) + k.flip(3, 4) + k.flip(2, 3, 4)) / 8

    def fn(x):
        return F.conv3d(x, k, padding=1)

    image = torch.randn(1, 2, 7, 8, 9)
    torch.testing.assert_close(predict_with_tta(fn, image, (0, 1, 2)), fn(image), rtol=1e-5, atol=1e-5)


def test_tta_averages_all_mirrorings():
    calls = []

    def fn(x):  # not flip-equivariant
        calls.append(1)
        return torch.cumsum(x, dim=-1)

    image = torch.randn(1, 1, 5, 6)
    out = predict_with_tta(fn, image, (0, 1))
    assert len(calls) == 4
    ref = (fn(image) + fn(image.flip(2)).flip(2) + fn(image.flip(3)).flip(3) + fn(image.flip(2, 3)).flip(2, 3)) / 4
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(predict_with_tta(fn, image, None), fn(image))
    with pytest.raises(ValueError):
        predict_with_tta(fn, image, (2,))


def test_tta_inside_sliding_window():
    fn = _conv(1, 2, 1, 2)
    image = torch.randn(1, 1, 30, 21)
    out = sliding_window_inference(lambda x: predict_with_tta(fn, x, (0, 1)), image, (16, 16))
    torch.testing.assert_close(out, fn(image), rtol=1e-5, atol=1e-5)
