"""Tests of mambaseg.data.preprocessing: normalisation, resampling to the plan's spacing, and its inverse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mambaseg.data.io import ImageMeta
from mambaseg.data.plan import Plan
from mambaseg.data.preprocessing import (
    compute_new_shape,
    normalize,
    preprocess_image,
    preprocess_label,
    revert_probabilities,
    separate_z_axis,
)


def _plan(norm=("zscore",), target_spacing=None, spatial_dims=3, stats=None, slice_axis=None):
    return Plan(spatial_dims=spatial_dims, channel_names=[f"c{i}" for i in range(len(norm))],
                normalization=list(norm), labels={"background": 0, "fg": 1}, num_classes=2,
                patch_size=[8] * spatial_dims, batch_size=2, intensity_stats=stats or [],
                target_spacing=target_spacing, slice_axis=slice_axis)


def _meta(spacing):
    m = ImageMeta.identity(len(spacing))
    m.spacing = tuple(float(s) for s in spacing)
    return m


def test_normalize_schemes():
    rng = np.random.default_rng(0)
    img = rng.normal(100, 20, size=(4, 5, 6, 7)).astype(np.float32)
    stats = [{}, {"mean": 90.0, "std": 10.0, "percentile_00_5": 60.0, "percentile_99_5": 120.0}, {}, {}]
    plan = _plan(("zscore", "ct", "rgb", "none"), stats=stats)
    out = normalize(img, plan)
    assert out.dtype == np.float32 and out.shape == img.shape
    np.testing.assert_allclose(out[0], (img[0] - img[0].mean()) / img[0].std(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[1], (np.clip(img[1], 60, 120) - 90) / 10, rtol=1e-5)
    np.testing.assert_allclose(out[2], img[2] / 255, rtol=1e-6)
    np.testing.assert_array_equal(out[3], img[3])
    assert not np.shares_memory(out, img)


def test_normalize_constant_image_and_errors():
    out = normalize(np.full((1, 4, 4), 7.0, np.float32), _plan(spatial_dims=2))
    np.testing.assert_array_equal(out, 0.0)  # std clamped to 1e-8, no division by zero
    bad = np.zeros((1, 4, 4), np.float32)
    bad[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"case7.*NaN in channel 0"):
        normalize(bad, _plan(spatial_dims=2), name="case7")
    with pytest.raises(ValueError, match="2 channels"):
        normalize(np.zeros((1, 4, 4), np.float32), _plan(("zscore", "zscore"), spatial_dims=2))
    with pytest.raises(ValueError, match="intensity_stats"):
        normalize(np.zeros((1, 4, 4), np.float32), _plan(("ct",), spatial_dims=2))


def test_no_resampling_is_identity_and_properties_jsonable():
    img = np.random.default_rng(1).normal(size=(1, 6, 7, 8)).astype(np.float32)
    meta = _meta((2.0, 1.0, 1.0))
    data, props = preprocess_image(img, meta, _plan())
    assert data.shape == img.shape
    assert props["original_shape"] == [6, 7, 8] == props["resampled_shape"]
    json.dumps(props)
    probs = torch.rand(2, 6, 7, 8)
    assert revert_probabilities(probs, props, _plan()) is probs


def test_resample_shape_and_round_trip():
    z, y, x = np.meshgrid(np.arange(10), np.arange(12), np.arange(14), indexing="ij")
    img = (0.5 * z + 0.2 * y - 0.1 * x).astype(np.float32)[None]
    meta = _meta((2.0, 1.0, 1.0))
    plan = _plan(("none",), target_spacing=[1.0, 2.0, 2.0])
    data, props = preprocess_image(img, meta, plan)
    assert data.shape == (1, 20, 6, 7)
    assert props["resampled_shape"] == [20, 6, 7] and props["separate_z_axis"] is None
    # half-voxel alignment: output voxel (10, 3, 3) samples source (4.75, 6.5, 6.5) of the linear ramp
    assert float(data[0, 10, 3, 3]) == pytest.approx(0.5 * 4.75 + 0.2 * 6.5 - 0.1 * 6.5, abs=2e-3)
    back = revert_probabilities(torch.from_numpy(data), props, plan)
    assert back.shape == (1, 10, 12, 14)
    np.testing.assert_allclose(back[0, 2:-2, 2:-2, 2:-2].numpy(), img[0, 2:-2, 2:-2, 2:-2], atol=0.15)


def test_label_resampling_nearest_keeps_values():
    lab = np.zeros((4, 6, 6), np.uint8)
    lab[1:3, 2:4, 2:4] = 3
    lab[0, 0, 0] = 1
    meta = _meta((2.0, 1.0, 1.0))
    plan = _plan(target_spacing=[1.0, 1.0, 1.0])
    out = preprocess_label(lab, meta, plan)
    assert out.shape == (8, 6, 6) and out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 1, 3}
    np.testing.assert_array_equal(out[::2], lab)  # integer zoom: every source slice repeated
    img, _ = preprocess_image(lab[None].astype(np.float32), meta, _plan(("none",), target_spacing=[1.0, 1.0, 1.0]))
    assert img.shape[1:] == out.shape


def test_separate_z_rule():
    assert separate_z_axis((5.0, 1.0, 1.0)) == 0
    assert separate_z_axis((1.0, 1.0, 3.5)) == 2
    assert separate_z_axis((2.0, 1.0, 1.0)) is None
    assert separate_z_axis((1.0, 1.0, 1.0), (4.0, 1.0, 1.0)) == 0
    assert separate_z_axis((5.0, 5.0, 1.0)) is None  # two axes share the largest spacing: nnU-Net v2 does not separate
    assert compute_new_shape((10, 20, 30), (5.0, 1.0, 1.0), (2.5, 0.5, 2.0)) == [20, 40, 15]


def test_anisotropic_resampling_uses_nearest_along_z_and_reverts():
    rng = np.random.default_rng(2)
    img = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    meta = _meta((5.0, 1.0, 1.0))
    plan = _plan(("none",), target_spacing=[2.5, 1.0, 1.0])
    data, props = preprocess_image(img, meta, plan)
    assert props["separate_z_axis"] == 0 and data.shape == (1, 6, 8, 8)
    # in-plane unchanged, z by nearest neighbour: each slice exactly repeated
    np.testing.assert_allclose(data[0, ::2], img[0], atol=1e-5)
    np.testing.assert_allclose(data[0, 1::2], img[0], atol=1e-5)
    back = revert_probabilities(torch.from_numpy(data), props, plan)
    assert back.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(back.numpy(), img, atol=1e-5)


def test_2d_plan_on_3d_image_keeps_slice_spacing():
    img = np.zeros((1, 5, 8, 8), np.float32)
    plan = _plan(("none",), target_spacing=[0.5, 0.5], spatial_dims=2, slice_axis=0)
    data, props = preprocess_image(img, _meta((3.0, 1.0, 1.0)), plan)
    assert data.shape == (1, 5, 16, 16) and props["target_spacing"] == [3.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="target_spacing"):
        preprocess_image(np.zeros((1, 8, 8), np.float32), _meta((1.0, 1.0)), _plan(target_spacing=[1.0, 1, 1]))
