"""Converters into nnU-Net raw on small real subsets and synthetic MSD/ISIC layouts; results pass the check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mambaseg.data import (
    RawDataset,
    check_dataset,
    convert_acdc_h5,
    convert_folders_2d,
    convert_msd,
)
from mambaseg.data.convert import pair_images_and_masks
from mambaseg.data.io import ImageMeta, read_image, write_image


def _errors(folder):
    return [p for p in check_dataset(folder) if p.severity == "error"]


def test_kvasir_subset(shared_data, tmp_path):
    folder = convert_folders_2d(shared_data("kvasir_seg"), tmp_path, 501, "KvasirSEG", limit=4)
    assert folder.name == "Dataset501_KvasirSEG" and _errors(folder) == []
    ds = RawDataset(folder)
    assert len(ds.cases) == 4 and ds.channel_names == {"0": "R", "1": "G", "2": "B"} and ds.file_ending == ".png"
    image, label, _ = ds.load_case(ds.cases[0])
    assert image.shape[0] == 3 and image.shape[1:] == label.shape and set(np.unique(label)) == {0, 1}
    src_img, _ = read_image(shared_data("kvasir_seg") / "images" / f"{ds.cases[0]}.jpg")
    np.testing.assert_array_equal(image, np.moveaxis(src_img, -1, 0))  # pixels copied exactly (PNG is lossless)
    dj = json.loads((folder / "dataset.json").read_text())
    assert dj["labels"] == {"background": 0, "foreground": 1} and dj["mask_mapping"]["mode"] == "threshold"
    assert json.loads((folder / "splits.json").read_text()).keys() == {"train", "val", "test"}


def test_dsb2018_subset(shared_data, tmp_path):
    folder = convert_folders_2d(shared_data("dsb2018_96"), tmp_path, 502, "DSB2018", limit=6)
    assert _errors(folder) == []
    image, label, _ = RawDataset(folder).load_case(RawDataset(folder).cases[0])
    assert image.shape == (3, 96, 96) and label.shape == (96, 96) and label.max() == 1


def test_acdc_subset(shared_data, tmp_path):
    folder = convert_acdc_h5(shared_data("acdc_ssl4mis"), tmp_path, 27, "ACDC", limit=3)
    assert _errors(folder) == []
    ds = RawDataset(folder)
    assert len(ds.cases) == 3 and len(ds.test_cases) == 6  # 3 val + 3 test volumes
    image, label, meta = ds.load_case(ds.cases[0])
    assert image.shape == (1, 1, 256, 256) and label.shape == (1, 256, 256) and meta.spacing == (1.0, 1.0, 1.0)
    assert 0.0 <= image.min() and image.max() <= 1.0 and set(np.unique(label)) <= {0, 1, 2, 3}
    vol, vlab, _ = ds.load_case(ds.test_cases[0], test=True)
    assert vol.ndim == 4 and vol.shape[1:] == vlab.shape and vol.shape[1] > 1
    split = json.loads((folder / "splits.json").read_text())
    assert split["train"] == ds.cases and sorted(split["val"] + split["test"]) == ds.test_cases
    paper_val = (shared_data("acdc_ssl4mis") / "val.list").read_text().split()
    assert split["val"] == sorted(paper_val)[:3]


def _isic(tmp_path, n=3, mask_values=(0, 255)):
    src = tmp_path / "isic"
    rng = np.random.default_rng(0)
    for i in range(n):
        write_image(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8), None, src / f"ISIC_{i:07d}.jpg")
        mask = np.full((12, 10), mask_values[0], np.uint8)
        mask[3:7, 2:5] = mask_values[-1]
        if len(mask_values) > 2:
            mask[0, :] = mask_values[1]
        write_image(mask, None, src / f"ISIC_{i:07d}_segmentation.png")
    return src


def test_isic_flat_pairing_and_value_mapping(tmp_path):
    folder = convert_folders_2d(_isic(tmp_path), tmp_path / "raw", 503, "ISIC")
    ds = RawDataset(folder)
    assert ds.cases == ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"] and _errors(folder) == []
    assert set(np.unique(ds.load_case("ISIC_0000001")[1])) == {0, 1}
    folder = convert_folders_2d(_isic(tmp_path / "m", mask_values=(0, 128, 255)), tmp_path / "raw", 504, "Multi")
    ds = RawDataset(folder)
    assert ds.labels == {"background": 0, "class_1": 1, "class_2": 2} and _errors(folder) == []
    assert set(np.unique(ds.load_case("ISIC_0000000")[1])) == {0, 1, 2}


def test_unpaired_files_are_listed(tmp_path):
    src = _isic(tmp_path)
    (src / "ISIC_0000001_segmentation.png").unlink()
    write_image(np.zeros((4, 4), np.uint8), None, src / "ISIC_0000009_segmentation.png")
    with pytest.raises(ValueError, match=r"images without a mask: .*ISIC_0000001\.jpg.*masks without an image: "
                                         r".*ISIC_0000009_segmentation\.png"):
        pair_images_and_masks(src, src)


def test_msd_task(tmp_path):
    task = tmp_path / "Task05_Prostate"
    meta4 = ImageMeta((1.0, 3.6, 0.6, 0.6), (0.0, 10.0, -5.0, 2.0), tuple(np.eye(4).ravel()))
    rng = np.random.default_rng(0)
    for case in ("prostate_00", "prostate_01"):
        write_image(rng.integers(0, 500, (2, 4, 6, 5)).astype(np.int16), meta4, task / "imagesTr" / f"{case}.nii.gz")
        write_image(rng.integers(0, 3, (4, 6, 5)), meta4.subset((1, 2, 3)), task / "labelsTr" / f"{case}.nii.gz",
                    label=True)
    write_image(np.zeros((2, 4, 6, 5), np.int16), meta4, task / "imagesTs" / "prostate_09.nii.gz")
    (task / "imagesTr" / "._prostate_00.nii.gz").write_bytes(b"mac resource fork")
    (task / "dataset.json").write_text(json.dumps({
        "name": "PROSTATE", "modality": {"0": "T2", "1": "ADC"}, "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        "numTraining": 2, "numTest": 1, "tensorImageSize": "4D", "licence": "CC-BY-SA 4.0",
        "training": [{"image": "./imagesTr/prostate_00.nii.gz", "label": "./labelsTr/prostate_00.nii.gz"}],
        "test": ["./imagesTs/prostate_09.nii.gz"]}))
    folder = convert_msd(task, tmp_path / "raw")
    assert folder.name == "Dataset005_Prostate" and _errors(folder) == []
    dj = json.loads((folder / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "T2", "1": "ADC"} and dj["labels"] == {"background": 0, "PZ": 1, "TZ": 2}
    assert dj["numTraining"] == 2 and dj["file_ending"] == ".nii.gz" and "training" not in dj
    ds = RawDataset(folder)
    image, label, meta = ds.load_case("prostate_01")
    assert image.shape == (2, 4, 6, 5) and label.shape == (4, 6, 5)
    np.testing.assert_allclose(meta.spacing, (3.6, 0.6, 0.6), rtol=1e-6)
    assert meta.origin == (10.0, -5.0, 2.0) and ds.test_cases == ["prostate_09"]
