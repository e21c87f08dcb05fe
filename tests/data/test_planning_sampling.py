"""Planning rules, nnU-Net-style patch sampling and seeded augmentation (real Kvasir-SEG / ACDC data + synthetic 3D)."""

from __future__ import annotations

import numpy as np
import pytest

from mambaseg.data.augmentation import Augmenter
from mambaseg.data.io import ImageMeta, write_image
from mambaseg.data.nnunet_raw import RawDataset, generate_dataset_json
from mambaseg.data.plan import Plan
from mambaseg.data.planning import VOXELS_3D_PER_GB, fingerprint, make_plan, normalization_for
from mambaseg.data.sampling import CaseStore, PatchSampler, crop_with_padding


@pytest.fixture(scope="module")
def kvasir(tmp_path_factory, shared_data) -> RawDataset:
    from mambaseg.data.convert import convert_folders_2d

    src = shared_data("kvasir_seg")
    return RawDataset(convert_folders_2d(src, tmp_path_factory.mktemp("raw"), 1, "Kvasir", limit=12))


@pytest.fixture(scope="module")
def acdc(tmp_path_factory, shared_data) -> RawDataset:
    from mambaseg.data.convert import convert_acdc_h5

    src = shared_data("acdc_ssl4mis")
    return RawDataset(convert_acdc_h5(src, tmp_path_factory.mktemp("raw"), 27, "ACDC", limit=3))


@pytest.fixture(scope="module")
def ct3d(tmp_path_factory) -> RawDataset:
    """Synthetic 3-case CT volume dataset (spacing 2.5 x 1 x 1 mm, one case at 3 mm) with a blob label."""
    root = tmp_path_factory.mktemp("ct") / "Dataset900_Blob"
    rng = np.random.default_rng(0)
    for i, (shape, sz) in enumerate([((40, 96, 100), 2.5), ((44, 90, 96), 2.5), ((30, 100, 100), 3.0)]):
        img = rng.normal(0, 100, shape).astype(np.float32)
        lab = np.zeros(shape, np.uint8)
        lab[10:20, 30:50, 30:60] = 1
        lab[12:16, 60:70, 60:70] = 2
        img[lab > 0] += 400
        meta = ImageMeta((sz, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
        write_image(img, meta, root / "imagesTr" / f"case{i}_0000.nii.gz")
        write_image(lab, meta, root / "labelsTr" / f"case{i}.nii.gz", label=True)
    generate_dataset_json(root, {0: "CT"}, {"background": 0, "a": 1, "b": 2}, 3, ".nii.gz")
    return RawDataset(root)


# ------------------------------------------------------------------------------------------------ planning
def test_plan_2d_natural_images(kvasir):
    plan = make_plan(kvasir, "unet_test", cases=kvasir.cases)
    assert plan.spatial_dims == 2 and plan.slice_axis is None and plan.target_spacing is None
    assert plan.normalization == ["rgb"] * 3 and plan.num_classes == 2
    assert all(p % 32 == 0 and 32 <= p <= 512 for p in plan.patch_size)
    assert plan.batch_size >= 2
    assert {"patch_size", "batch_size", "normalization", "target_spacing"} <= set(plan.extra["rules"])
    fixed = make_plan(kvasir, "unet_test", cases=kvasir.cases, patch_size=[64, 64], batch_size=3)
    assert fixed.patch_size == [64, 64] and fixed.batch_size == 3 and fixed.extra["rules"]["patch_size"] == "given"


def test_plan_2d_model_on_single_slice_volumes(acdc):
    plan = make_plan(acdc, "mamba_unet_test", cases=acdc.cases)
    assert plan.spatial_dims == 2 and plan.slice_axis == 0 and plan.normalization == ["zscore"]
    assert plan.num_classes == 4 and len(plan.patch_size) == 2


def test_plan_3d_ct_rules(ct3d):
    fp = fingerprint(ct3d, ct3d.cases)
    assert fp == fingerprint(ct3d, ct3d.cases)  # seeded sample
    assert fp["intensity"][0]["n_samples"] > 0 and fp["intensity"][0]["mean"] > 200
    plan = make_plan(ct3d, "unet_test", cases=ct3d.cases, fingerprint_data=fp)
    assert plan.spatial_dims == 3 and plan.slice_axis is None and plan.batch_size == 2
    assert plan.normalization == ["ct"] and set(plan.intensity_stats[0]) >= {"mean", "std", "percentile_00_5"}
    assert plan.target_spacing == [2.5, 1.0, 1.0]
    assert plan.patch_size == [48, 96, 128]  # median (40, 96, 100) rounded up to 16 / 32 / 32
    small = make_plan(ct3d, "unet_test", cases=ct3d.cases, fingerprint_data=fp, memory_budget_gb=0.1)
    assert np.prod(small.patch_size) <= VOXELS_3D_PER_GB * 0.1
    assert all(p % 16 == 0 for p in small.patch_size)
    sliced = make_plan(ct3d, "mamba_unet_test", cases=ct3d.cases, fingerprint_data=fp)
    # in-plane already at the median spacing: nothing to resample
    assert sliced.spatial_dims == 2 and sliced.slice_axis == 0 and sliced.target_spacing is None


def test_plan_errors(kvasir):
    with pytest.raises(ValueError, match="Did you mean"):
        make_plan(kvasir, "unet_tset", cases=kvasir.cases)
    with pytest.raises(ValueError, match="3D model cannot train on 2D images"):
        make_plan(kvasir, "unet_test", cases=kvasir.cases, spatial_dims=3)


# ------------------------------------------------------------------------------------------------ sampling
class _Store:
    def __init__(self, items):
        self.items = items

    def get(self, case):
        return self.items[case]


def _plan(patch, batch, dims=2, slice_axis=None, k=2):
    return Plan(spatial_dims=dims, channel_names=["x"], normalization=["none"], labels={"bg": 0, "fg": 1},
                num_classes=k, patch_size=list(patch), batch_size=batch, slice_axis=slice_axis)


def test_foreground_oversampling_rate(kvasir, tmp_path):
    plan = make_plan(kvasir, "unet_test", cases=kvasir.cases, patch_size=[64, 64], batch_size=3)
    store = CaseStore(kvasir, plan, tmp_path / "pre")
    sampler = PatchSampler(store, kvasir.cases, plan, seed=0)
    assert [sampler.force_foreground(i) for i in range(3)] == [False, False, True]
    sampler.batch_size = 24
    assert sum(sampler.force_foreground(i) for i in range(24)) == 8  # nnU-Net: round(24 * 0.67) = 16 free
    sampler.batch_size = 3
    forced = [bool((sampler.batch(i)[1][2] > 0).any()) for i in range(30)]
    assert all(forced)
    free = np.mean([float((sampler.batch(i)[1][:2] > 0).float().mean()) for i in range(30)])
    assert free < 1.0
    assert sorted(p.name for p in (tmp_path / "pre").iterdir())[:1] and (tmp_path / "pre" / "plan.json").is_file()
    assert len(list((tmp_path / "pre").glob("*_seg.npy"))) == len(kvasir.cases)


def test_padding_and_2d_on_3d():
    img = np.arange(120, dtype=np.float32).reshape(1, 10, 12)
    lab = np.zeros((10, 12), np.uint8)
    lab[4, 5] = 1
    s = PatchSampler(_Store({"a": (img, lab)}), ["a"], _plan((32, 32), 2), seed=1)
    x, y = s.batch(0)
    assert x.shape == (2, 1, 32, 32) and y.shape == (2, 32, 32) and int(y[1].sum()) == 1
    a, _ = crop_with_padding(img, lab, [-3, -2], [16, 16])
    assert a.shape == (1, 16, 16) and a[0, 3, 2] == img[0, 0, 0] and a[0, 0, 0] == 0
    vol = np.zeros((1, 6, 20, 20), np.float32)
    seg = np.zeros((6, 20, 20), np.uint8)
    seg[4, 10, 10] = 1
    s3 = PatchSampler(_Store({"v": (vol, seg)}), ["v"], _plan((16, 16), 2, slice_axis=0), seed=0)
    x, y = s3.batch(5)
    assert x.shape == (2, 1, 16, 16) and int(y[1].sum()) == 1


def test_sampler_determinism_and_state():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(1, 40, 40)).astype(np.float32)
    lab = (img[0] > 1).astype(np.uint8)
    mk = lambda: PatchSampler(_Store({"a": (img, lab), "b": (img[:, ::-1].copy(), lab[::-1].copy())}), ["a", "b"],
                              _plan((32, 32), 2), seed=7, augment=Augmenter(2))
    s1, s2 = mk(), mk()
    b1 = [s1.next_batch() for _ in range(4)]
    s2.load_state_dict({"seed": 7, "position": 2})
    assert s1.state_dict() == {"seed": 7, "position": 4}
    for i in (2, 3):
        x, y = s2.next_batch()
        assert np.array_equal(x.numpy(), b1[i][0].numpy()) and np.array_equal(y.numpy(), b1[i][1].numpy())


def test_augmentation_determinism():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(2, 48, 40)).astype(np.float32)
    lab = np.zeros((48, 40), np.uint8)
    lab[10:30, 5:25] = 1
    lab[30:40, 20:35] = 2
    aug = Augmenter(2)
    outs = [aug(img, lab, np.random.default_rng(s)) for s in (11, 11, 12)]
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])
    changed = [not np.array_equal(aug(img, lab, np.random.default_rng(s))[0], img) for s in range(20)]
    assert any(changed)
    for x, y in outs:
        assert x.shape == img.shape and x.dtype == np.float32 and y.dtype == np.uint8
        assert set(np.unique(y)) <= {0, 1, 2}
    aug3 = Augmenter(3)
    v = rng.normal(size=(1, 12, 16, 16)).astype(np.float32)
    x3, y3 = aug3(v, (v[0] > 0).astype(np.uint8), np.random.default_rng(0))
    assert x3.shape == v.shape and y3.shape == v.shape[1:]


@pytest.mark.parametrize("names, ending, expected", [
    (["CT"], ".nii.gz", ["ct"]),
    (["noNorm", "NONORM"], ".nii.gz", ["none", "none"]),  # nnU-Net v2 names select the scheme, any case
    (["zscore", "rgb_to_0_1"], ".nii.gz", ["zscore", "rgb"]),
    (["FLAIR", "T1c"], ".nii.gz", ["zscore", "zscore"]),
    (["R", "G", "B"], ".nii.gz", ["rgb"] * 3),
    (["a", "b", "c"], ".png", ["rgb"] * 3),
])
def test_normalization_for_channel_names(names, ending, expected):
    assert normalization_for(names, ending) == expected
