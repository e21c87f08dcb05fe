"""check_dataset finds every injected problem at once, with file names, and passes clean datasets."""

from __future__ import annotations

import json

import numpy as np
from test_nnunet_raw import make_3d_dataset

from mambaseg.data import check_dataset, format_problems
from mambaseg.data.io import ImageMeta, read_image, write_image


def test_clean_dataset_has_no_problems(tmp_path):
    assert check_dataset(make_3d_dataset(tmp_path)) == []


def test_all_injected_problems_are_reported_at_once(tmp_path):
    folder = make_3d_dataset(tmp_path, n_cases=6)
    # 1. missing channel
    (folder / "imagesTr" / "case_000_0001.nii.gz").unlink()
    # 2. label value out of range
    lab, meta = read_image(folder / "labelsTr" / "case_001.nii.gz")
    lab[0, 0, 1] = 7
    write_image(lab, meta, folder / "labelsTr" / "case_001.nii.gz", label=True)
    # 3. shape mismatch
    write_image(np.zeros((4, 5, 7), np.uint8), meta, folder / "labelsTr" / "case_002.nii.gz", label=True)
    # 4. spacing mismatch
    img, m = read_image(folder / "imagesTr" / "case_003_0000.nii.gz")
    write_image(lab * 0, ImageMeta((3.0, 0.9, 0.8), m.origin, m.direction), folder / "labelsTr" / "case_003.nii.gz",
                label=True)
    # 5. NaN (and inf) in an image
    img[0, 0, 0], img[0, 0, 1] = np.nan, np.inf
    write_image(img, m, folder / "imagesTr" / "case_003_0000.nii.gz")
    # 6. float label with non-integer values
    bad = read_image(folder / "labelsTr" / "case_004.nii.gz")[0].astype(np.float32)
    bad[1, 1, 1] = 0.5
    write_image(bad, m, folder / "labelsTr" / "case_004.nii.gz")
    # 7. origin mismatch, 8. an extra channel and a stray file, 9. a missing dataset.json key
    write_image(read_image(folder / "labelsTr" / "case_005.nii.gz")[0], ImageMeta(m.spacing, (9.0, 9.0, 9.0),
                m.direction), folder / "labelsTr" / "case_005.nii.gz", label=True)
    write_image(img, m, folder / "imagesTr" / "case_005_0002.nii.gz")
    (folder / "imagesTr" / "notes.txt").write_text("x")
    dj = json.loads((folder / "dataset.json").read_text())
    del dj["numTraining"]
    (folder / "dataset.json").write_text(json.dumps(dj))

    problems = check_dataset(folder)
    by_code = {}
    for p in problems:
        by_code.setdefault(p.code, []).append(p)
    problem = by_code["missing_key"][0]
    assert problem.file.endswith("dataset.json") and "numTraining" in problem.message
    assert by_code["missing_channel"][0].file.endswith("case_000_0001.nii.gz")
    assert by_code["label_values"][0].file.endswith("case_001.nii.gz") and "7" in by_code["label_values"][0].message
    assert by_code["shape_mismatch"][0].file.endswith("case_002.nii.gz")
    assert by_code["spacing_mismatch"][0].file.endswith("case_003.nii.gz")
    assert by_code["nan"][0].file.endswith("case_003_0000.nii.gz") and "inf" in by_code
    assert any(p.file.endswith("case_004.nii.gz") and p.severity == "error" for p in by_code["label_dtype"])
    assert by_code["origin_mismatch"][0].file.endswith("case_005.nii.gz")
    assert by_code["extra_channel"][0].file.endswith("case_005_0002.nii.gz")
    assert by_code["extra_file"][0].file.endswith("notes.txt")
    assert all(p.severity == "error" for p in problems if p.code != "label_only_background")
    table = format_problems(problems)
    assert "case_002.nii.gz" in table and "error(s)" in table
    # nnU-Net's behaviour: origin/direction only warn
    lenient = check_dataset(folder, strict_geometry=False)
    assert [p.severity for p in lenient if p.code == "origin_mismatch"] == ["warning"]


def test_dataset_level_problems(tmp_path):
    folder = make_3d_dataset(tmp_path, n_cases=2)
    dj = json.loads((folder / "dataset.json").read_text())
    dj["labels"] = {"background": 0, "a": 1, "c": 3}
    dj["numTraining"] = 5
    (folder / "dataset.json").write_text(json.dumps(dj))
    (folder / "labelsTr" / "case_001.nii.gz").rename(folder / "labelsTr" / "orphan.nii.gz")
    codes = {p.code for p in check_dataset(folder)}
    assert {"labels_consecutive", "num_training", "missing_label", "label_without_image"} <= codes
    (folder / "dataset.json").unlink()
    assert [p.code for p in check_dataset(folder)] == ["missing_dataset_json"]


def test_corrupt_file_is_reported_not_raised(tmp_path):
    folder = make_3d_dataset(tmp_path, n_cases=2)
    raw = (folder / "imagesTr" / "case_001_0000.nii.gz").read_bytes()
    (folder / "imagesTr" / "case_001_0000.nii.gz").write_bytes(raw[: len(raw) // 2])
    probs = [p for p in check_dataset(folder) if p.code == "unreadable"]
    assert len(probs) == 1 and probs[0].file.endswith("case_001_0000.nii.gz") and "truncated" in probs[0].message


def test_a_2d_case_among_3d_volumes_is_an_error(tmp_path):
    folder = make_3d_dataset(tmp_path, n_cases=3, channels=1)
    meta = ImageMeta.identity(2)
    write_image(np.ones((5, 6), np.float32), meta, folder / "imagesTr" / "case_001_0000.nii.gz")
    lab = np.zeros((5, 6), np.uint8)
    lab[1:3, 1:3] = 1
    write_image(lab, meta, folder / "labelsTr" / "case_001.nii.gz", label=True)
    probs = [p for p in check_dataset(folder) if p.code == "dimensionality"]
    assert len(probs) == 1 and probs[0].severity == "error" and probs[0].file.endswith("case_001_0000.nii.gz")
    assert "2D" in probs[0].message and "3D" in probs[0].message
