"""``convert_case_folders`` (one folder per case, BraTS-like) and the ``brats2015_deepmedic`` preset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mambaseg.cli.main import main as cli_main
from mambaseg.data import RawDataset, check_dataset
from mambaseg.data.convert_cases import convert_brats2015_deepmedic, convert_case_folders
from mambaseg.data.io import ImageMeta, read_image, write_image

SHAPE = (5, 7, 6)  # (z, y, x)


def _meta(origin=(4.0, -20.0, 10.5), spacing=(2.5, 0.8, 0.7)) -> ImageMeta:
    c, s = math.cos(math.radians(20)), math.sin(math.radians(20))
    direction = (1.0, 0.0, 0.0, 0.0, c, -s, 0.0, s, c)  # a rotation in the (y, x) plane
    return ImageMeta(spacing, origin, direction)


def _write_case(folder: Path, seed: int, *, label_dtype=np.uint8, meta: ImageMeta | None = None,
                label_meta: ImageMeta | None = None, skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """A case folder with ``t1.nii.gz``, ``t2.nii.gz`` (float32) and ``seg.nii.gz``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    meta = meta or _meta()
    arrays = {"t1": rng.normal(size=SHAPE).astype(np.float32),
              "t2": rng.normal(loc=5.0, size=SHAPE).astype(np.float32),
              "seg": rng.integers(0, 3, SHAPE).astype(label_dtype)}
    for stem, arr in arrays.items():
        if stem in skip:
            continue
        if stem == "seg" and np.dtype(label_dtype).kind == "f":
            import SimpleITK as sitk  # write_image(label=True) would make it integer; keep the float on disk

            img = sitk.GetImageFromArray(arr)
            m = label_meta or meta
            img.SetSpacing(m.itk_spacing), img.SetOrigin(m.itk_origin), img.SetDirection(m.itk_direction)
            folder.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(img, str(folder / "seg.nii.gz"))
        else:
            write_image(arr, label_meta if stem == "seg" and label_meta else meta, folder / f"{stem}.nii.gz")
    return arrays


@pytest.fixture()
def source(tmp_path) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """train/{a,b}, validation/c, test/d case folders."""
    src = tmp_path / "src"
    arrays = {}
    for i, rel in enumerate(("train/case_a", "train/case_b", "validation/case_c", "test/case_d")):
        arrays[rel.split("/")[1]] = _write_case(src / rel, i)
    (src / "README.txt").write_text("not a case")
    return src, arrays


def test_layout_dataset_json_and_splits(source, tmp_path):
    src, _ = source
    folder = convert_case_folders(src, tmp_path / "raw", 7, "Toy", {"T1": "t1", "T2": "t2"}, "seg",
                                  labels={"background": 0, "liver": 1, "tumour": 2})
    assert folder == tmp_path / "raw" / "Dataset007_Toy"
    names = {sub: sorted(p.name for p in (folder / sub).iterdir())
             for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
    assert names["imagesTr"] == [f"case_{c}_{k:04d}.nii.gz" for c in "abc" for k in range(2)]
    assert names["labelsTr"] == [f"case_{c}.nii.gz" for c in "abc"]
    assert names["imagesTs"] == ["case_d_0000.nii.gz", "case_d_0001.nii.gz"]
    assert names["labelsTs"] == ["case_d.nii.gz"]
    dj = json.loads((folder / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "T1", "1": "T2"} and dj["numTraining"] == 3
    assert dj["labels"] == {"background": 0, "liver": 1, "tumour": 2} and dj["file_ending"] == ".nii.gz"
    assert json.loads((folder / "splits.json").read_text()) == {"train": ["case_a", "case_b"], "val": ["case_c"],
                                                               "test": ["case_d"]}
    raw = RawDataset(folder)
    assert raw.cases == ["case_a", "case_b", "case_c"] and raw.test_cases == ["case_d"]
    assert check_dataset(folder) == []


def test_channel_order_follows_the_mapping_and_files_are_linked(source, tmp_path):
    src, arrays = source
    folder = convert_case_folders(src, tmp_path / "raw", 8, "Toy", {"T2": "t2", "T1": "t1"}, "seg")
    dj = json.loads((folder / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "T2", "1": "T1"}
    assert dj["labels"] == {"background": 0, "label_1": 1, "label_2": 2}  # from the values found
    image, label, _ = RawDataset(folder).load_case("case_b")
    np.testing.assert_array_equal(image[0], arrays["case_b"]["t2"])
    np.testing.assert_array_equal(image[1], arrays["case_b"]["t1"])
    np.testing.assert_array_equal(label, arrays["case_b"]["seg"])
    first = folder / "imagesTr" / "case_b_0000.nii.gz"
    assert first.is_symlink() and first.resolve() == (src / "train" / "case_b" / "t2.nii.gz").resolve()
    copied = convert_case_folders(src, tmp_path / "copy", 8, "Toy", {"T2": "t2", "T1": "t1"}, "seg", link="copy")
    f = copied / "imagesTr" / "case_b_0000.nii.gz"
    assert not f.is_symlink() and f.read_bytes() == (src / "train" / "case_b" / "t2.nii.gz").read_bytes()


def test_geometry_kept_and_float_labels_become_integers(tmp_path):
    src = tmp_path / "src"
    meta = _meta(origin=(-3.0, 12.25, 40.0), spacing=(3.0, 0.9, 0.9))
    arrays = _write_case(src / "only", 0, label_dtype=np.float32, meta=meta)
    folder = convert_case_folders(src, tmp_path / "raw", 9, "Toy", {"A": "t1", "B": "t2"}, "seg")
    assert not (folder / "splits.json").exists() and not (folder / "imagesTs").exists()  # no split folders
    label_file = folder / "labelsTr" / "only.nii.gz"
    assert not label_file.is_symlink()  # float32 on disk: rewritten
    for f, expected in ((folder / "imagesTr" / "only_0001.nii.gz", arrays["t2"]), (label_file, arrays["seg"])):
        arr, m = read_image(f)
        np.testing.assert_array_equal(arr, expected)
        np.testing.assert_allclose(m.spacing, meta.spacing, rtol=1e-6)
        np.testing.assert_allclose(m.origin, meta.origin, atol=1e-5)
        np.testing.assert_allclose(m.direction, meta.direction, atol=1e-6)
    assert read_image(label_file)[0].dtype == np.uint8
    assert check_dataset(folder) == []


def test_normalization_names_written_as_channel_names(source, tmp_path):
    src, _ = source
    folder = convert_case_folders(src, tmp_path / "raw", 10, "Toy", {"FLAIR": "t1", "T1c": "t2"}, "seg",
                                  normalization=["noNorm", "zscore"], reference="toy data")
    dj = json.loads((folder / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "noNorm", "1": "zscore"}  # how nnU-Net v2 picks normalisation
    assert dj["channel_modalities"] == {"0": "FLAIR", "1": "T1c"} and dj["reference"] == "toy data"
    with pytest.raises(ValueError, match=r"normalization must give one of .*per channel"):
        convert_case_folders(src, tmp_path / "raw2", 10, "Toy", {"FLAIR": "t1", "T1c": "t2"}, "seg",
                             normalization=["brainZ", "zscore"])


def test_glob_patterns_and_limit(source, tmp_path):
    src, _ = source
    folder = convert_case_folders(src, tmp_path / "raw", 11, "Toy", {"T1": "t1*", "T2": "*2.nii.gz"}, "se?",
                                  limit=1)
    assert RawDataset(folder).cases == ["case_a", "case_c"]  # first case of train and of val
    assert RawDataset(folder).test_cases == ["case_d"]


def test_missing_file_lists_case_and_file(source, tmp_path):
    src, _ = source
    (src / "train" / "case_b" / "t2.nii.gz").unlink()
    (src / "test" / "case_d" / "seg.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"2 missing.*case_b .*T2 't2'.*case_d .*label 'seg'"):
        convert_case_folders(src, tmp_path / "raw", 12, "Toy", {"T1": "t1", "T2": "t2"}, "seg")
    assert not (tmp_path / "raw").exists()  # nothing written before every case is validated


def test_geometry_mismatch_names_the_file(tmp_path):
    src = tmp_path / "src"
    _write_case(src / "ok", 0)
    _write_case(src / "shifted", 1, label_meta=_meta(origin=(4.0, -20.0, 12.5)))
    with pytest.raises(ValueError, match=r"case 'shifted': .*shifted/seg\.nii\.gz does not share the geometry of "
                                         r".*shifted/t1\.nii\.gz \(origin"):
        convert_case_folders(src, tmp_path / "raw", 13, "Toy", {"T1": "t1", "T2": "t2"}, "seg")
    _write_case(src / "shifted", 1, label_meta=_meta(spacing=(2.5, 0.8, 0.8)))
    with pytest.raises(ValueError, match=r"shifted/seg\.nii\.gz does not share .*\(spacing"):
        convert_case_folders(src, tmp_path / "raw", 13, "Toy", {"T1": "t1", "T2": "t2"}, "seg")
    write_image(np.zeros((5, 7, 5), np.float32), _meta(), src / "shifted" / "seg.nii.gz")
    with pytest.raises(ValueError, match=r"shifted/seg\.nii\.gz has shape \(5, 7, 5\)"):
        convert_case_folders(src, tmp_path / "raw", 13, "Toy", {"T1": "t1", "T2": "t2"}, "seg")


def test_other_errors(source, tmp_path):
    src, _ = source
    chans = {"T1": "t1", "T2": "t2"}
    with pytest.raises(ValueError, match=r"label value\(s\) \[2\] are not in labels"):
        convert_case_folders(src, tmp_path / "raw", 14, "Toy", chans, "seg", labels={"background": 0, "a": 1})
    with pytest.raises(ValueError, match=r"ambiguous.*T1 't\*' matches"):
        convert_case_folders(src, tmp_path / "raw", 14, "Toy", {"T1": "t*"}, "seg")
    with pytest.raises(FileNotFoundError, match="no case folder"):
        convert_case_folders(src, tmp_path / "raw", 14, "Toy", {"T1": "flair"}, "mask")
    with pytest.raises(FileNotFoundError, match="source folder not found"):
        convert_case_folders(tmp_path / "nope", tmp_path / "raw", 14, "Toy", chans, "seg")
    convert_case_folders(src, tmp_path / "raw", 14, "Toy", chans, "seg")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert_case_folders(src, tmp_path / "raw", 14, "Toy", chans, "seg")
    folder = convert_case_folders(src, tmp_path / "raw", 14, "Toy", chans, "seg", overwrite=True)
    assert check_dataset(folder) == []
    _write_case(src / "train" / "deeper" / "case_a", 5)
    with pytest.raises(ValueError, match="two case folders give the case id 'case_a'"):
        convert_case_folders(src, tmp_path / "raw", 15, "Toy", chans, "seg")


@pytest.mark.slow
def test_real_brats2015_deepmedic(shared_data, tmp_path, capsys):
    """The real BraTS 2015 copy: 6 cases, 2 channels, labels 0..4, geometry of the sources, `data check` passes."""
    src = shared_data("brats2015_deepmedic")
    folder = convert_brats2015_deepmedic(src, tmp_path)
    raw = RawDataset(folder)
    assert len(raw.cases) + len(raw.test_cases) == 6 and len(raw.test_cases) == 2
    assert raw.num_channels == 2 and raw.channel_names == {"0": "noNorm", "1": "noNorm"}
    splits = json.loads((folder / "splits.json").read_text())
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "val": 2, "test": 2}
    assert set(splits["test"]) == {p.name for p in (src / "test").iterdir() if p.is_dir()}
    for case, test in [(c, False) for c in raw.cases] + [(c, True) for c in raw.test_cases]:
        files = raw.image_files(case, test=test)
        assert [f.resolve().name for f in files] == ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"]
        label, meta = read_image(raw.label_file(case, test=test))
        source_label, source_meta = read_image(files[0].resolve().parent / "OTMultiClass.nii.gz")
        assert label.dtype == np.uint8 and label.shape == (155, 240, 240)
        assert set(np.unique(label).tolist()) <= {0, 1, 2, 3, 4} and label.max() > 0
        np.testing.assert_array_equal(label, source_label)
        assert (meta.spacing, meta.origin, meta.direction) == (source_meta.spacing, source_meta.origin,
                                                               source_meta.direction)
    assert cli_main(["data", "check", str(folder)]) == 0
    assert "OK" in capsys.readouterr().out
