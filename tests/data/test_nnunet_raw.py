"""nnU-Net v2 raw dataset reading: naming, channels, RGB PNG, regions, explicit dataset key."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mambaseg.data.io import ImageMeta, write_image
from mambaseg.data.nnunet_raw import (
    RawDataset,
    dataset_folder_name,
    generate_dataset_json,
    label_values,
)


def make_3d_dataset(root, n_cases=3, channels=2, shape=(4, 5, 6)):
    """A tiny valid 3-D dataset with oblique geometry; returns the folder."""
    folder = root / dataset_folder_name(7, "Tiny")
    meta = ImageMeta((2.0, 0.9, 0.8), (1.0, 2.0, 3.0), tuple(np.eye(3)[:, ::-1].ravel()))
    rng = np.random.default_rng(0)
    for i in range(n_cases):
        case = f"case_{i:03d}"
        for c in range(channels):
            write_image(rng.normal(size=shape).astype(np.float32), meta, folder / "imagesTr" / f"{case}_{c:04d}.nii.gz")
        lab = np.zeros(shape, np.uint8)
        lab[1:3, 1:3, 1:3] = 1
        lab[0, 0, 0] = 2
        write_image(lab, meta, folder / "labelsTr" / f"{case}.nii.gz", label=True)
    write_image(rng.normal(size=shape).astype(np.float32), meta, folder / "imagesTs" / "test_000_0000.nii.gz")
    write_image(rng.normal(size=shape).astype(np.float32), meta, folder / "imagesTs" / "test_000_0001.nii.gz")
    generate_dataset_json(folder, {i: f"MR{i}" for i in range(channels)}, {"background": 0, "a": 1, "b": 2},
                          n_cases, ".nii.gz", dataset_name=folder.name)
    return folder


def test_raw_dataset_reads_cases(tmp_path):
    folder = make_3d_dataset(tmp_path)
    ds = RawDataset(folder)
    assert ds.cases == ["case_000", "case_001", "case_002"] and ds.test_cases == ["test_000"]
    assert ds.channel_names == {"0": "MR0", "1": "MR1"} and ds.file_ending == ".nii.gz" and ds.num_channels == 2
    assert [f.name for f in ds.image_files("case_001")] == ["case_001_0000.nii.gz", "case_001_0001.nii.gz"]
    assert ds.label_file("case_001").name == "case_001.nii.gz"
    image, label, meta = ds.load_case("case_000")
    assert image.shape == (2, 4, 5, 6) and image.dtype == np.float32
    assert label.shape == (4, 5, 6) and label.dtype == np.uint8 and set(np.unique(label)) == {0, 1, 2}
    np.testing.assert_allclose(meta.spacing, (2.0, 0.9, 0.8), rtol=1e-6)  # NIfTI stores float32
    image, label, _ = ds.load_case("test_000", test=True)
    assert image.shape == (2, 4, 5, 6) and label is None
    with pytest.raises(KeyError, match="nope"):
        ds.image_files("nope")


def test_case_ids_may_end_in_digits(tmp_path):
    folder = tmp_path / "Dataset001_X"
    write_image(np.zeros((4, 4), np.uint8), None, folder / "imagesTr" / "ISIC_0000000_0000.png")
    write_image(np.zeros((4, 4), np.uint8), None, folder / "labelsTr" / "ISIC_0000000.png", label=True)
    generate_dataset_json(folder, {0: "grey"}, {"background": 0, "lesion": 1}, 1, ".png")
    assert RawDataset(folder).cases == ["ISIC_0000000"]


def test_rgb_png_is_one_file_three_channels(tmp_path):
    folder = tmp_path / "Dataset002_Rgb"
    rgb = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    write_image(rgb, None, folder / "imagesTr" / "a_0000.png")
    write_image(np.eye(8, 9, dtype=np.uint8), None, folder / "labelsTr" / "a.png", label=True)
    generate_dataset_json(folder, {0: "R", 1: "G", 2: "B"}, {"background": 0, "fg": 1}, 1, ".png")
    image, label, meta = RawDataset(folder).load_case("a")
    assert image.shape == (3, 8, 9) and label.shape == (8, 9) and meta.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(image[1], rgb[..., 1])


def test_regions_and_explicit_dataset_key(tmp_path):
    assert label_values({"background": 0, "whole": [1, 2, 3], "core": [2, 3], "et": 3}) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="regions_class_order"):
        generate_dataset_json(tmp_path, {0: "T1"}, {"background": 0, "whole": [1, 2]}, 1, ".nii.gz")
    folder = make_3d_dataset(tmp_path, n_cases=1, channels=1)
    dj = json.loads((folder / "dataset.json").read_text())
    dj["labels"] = {"background": 0, "whole": [1, 2], "b": 2}
    dj["regions_class_order"] = [1, 2]
    dj["dataset"] = {"x": {"images": ["imagesTr/case_000_0000.nii.gz"], "label": "labelsTr/case_000.nii.gz"}}
    (folder / "dataset.json").write_text(json.dumps(dj))
    ds = RawDataset(folder)
    assert ds.cases == ["x"] and ds.has_regions and ds.all_labels == [0, 1, 2]
    assert ds.load_case("x")[0].shape == (1, 4, 5, 6)


def test_missing_dataset_json_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        RawDataset(tmp_path)
    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0}}')
    with pytest.raises(ValueError, match="channel_names"):
        RawDataset(tmp_path)


def test_staged_dataset_folder_refuses_replaces_and_loses_nothing_on_error(tmp_path):
    from mambaseg.data.nnunet_raw import StagedDatasetFolder

    staged = StagedDatasetFolder(tmp_path, 7, "Toy")
    with staged as folder:
        assert folder.name == "Dataset007_Toy" and folder != staged.final and (folder / "imagesTr").is_dir()
        (folder / "imagesTr" / "a_0000.nii.gz").write_text("a")
        (folder / "dataset.json").write_text("{}")
        assert not staged.final.exists()  # nothing in place before the conversion finished
    final = staged.final
    assert final == tmp_path / "Dataset007_Toy" and (final / "imagesTr" / "a_0000.nii.gz").read_text() == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset007_Toy"]  # no staging folder left
    for held in ("dataset.json", "imagesTr/a_0000.nii.gz"):
        with pytest.raises(FileExistsError, match=held.split("/")[0]):
            StagedDatasetFolder(tmp_path, 7, "Toy")
    (final / "other.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="corrupt source"), StagedDatasetFolder(tmp_path, 7, "Toy", True) as folder:
        (folder / "imagesTr" / "b_0000.nii.gz").write_text("b")
        raise RuntimeError("corrupt source")
    assert sorted(p.name for p in (final / "imagesTr").iterdir()) == ["a_0000.nii.gz"]  # the old dataset stays
    assert (final / "dataset.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["Dataset007_Toy"]
    with StagedDatasetFolder(tmp_path, 7, "Toy", overwrite=True) as folder:
        (folder / "imagesTr" / "b_0000.nii.gz").write_text("b")
    assert sorted(p.name for p in final.iterdir()) == ["imagesTr", "labelsTr", "other.txt"]
    assert sorted(p.name for p in (final / "imagesTr").iterdir()) == ["b_0000.nii.gz"]


def test_load_case_names_the_file_of_a_missing_channel_or_a_label_on_another_grid(tmp_path):
    folder = make_3d_dataset(tmp_path)
    (folder / "imagesTr" / "case_001_0001.nii.gz").unlink()
    meta = ImageMeta((2.0, 0.9, 0.5), (1.0, 2.0, 3.0), tuple(np.eye(3)[:, ::-1].ravel()))
    write_image(np.zeros((4, 5, 6), np.uint8), meta, folder / "labelsTr" / "case_002.nii.gz", label=True)
    ds = RawDataset(folder)
    with pytest.raises(ValueError, match=r"case_001_0001\.nii\.gz.*2 channel"):
        ds.load_case("case_001")
    with pytest.raises(ValueError, match=r"case_002\.nii\.gz: label spacing .* != image spacing"):
        ds.load_case("case_002")
    assert ds.load_case("case_000")[1] is not None


def test_staged_dataset_folder_puts_the_old_dataset_back_when_the_swap_fails(tmp_path, monkeypatch):
    """A move that fails half-way (another file system, a locked file) restores the old items, loses nothing."""
    import shutil

    from mambaseg.data.nnunet_raw import StagedDatasetFolder

    with StagedDatasetFolder(tmp_path, 7, "Toy") as folder:
        (folder / "imagesTr" / "a_0000.nii.gz").write_text("old")
        (folder / "dataset.json").write_text("old")
    real_move, calls = shutil.move, []

    def failing_move(src, dst):
        calls.append(src)
        if "mambaseg-converting/Dataset007_Toy/dataset.json" in src.replace("\\", "/"):
            raise OSError("cross-device link")
        return real_move(src, dst)

    monkeypatch.setattr(shutil, "move", failing_move)
    with pytest.raises(OSError, match="cross-device"), StagedDatasetFolder(tmp_path, 7, "Toy", True) as folder:
        (folder / "imagesTr" / "b_0000.nii.gz").write_text("new")
        (folder / "dataset.json").write_text("new")
    final = tmp_path / "Dataset007_Toy"
    assert len(calls) > 3  # the old items went aside and the new images in before the failure
    assert [p.name for p in (final / "imagesTr").iterdir()] == ["a_0000.nii.gz"]
    assert (final / "dataset.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset007_Toy"]  # staging and aside removed
