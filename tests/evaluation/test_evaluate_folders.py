"""Tests of mambaseg.evaluation.evaluate.evaluate_folders: pairing, geometry checks, hand-computed Dice, outputs."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from mambaseg.evaluation.evaluate import evaluate_folders, pair_files


def _write(arr, path, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(np.asarray(arr, dtype=np.uint8))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


@pytest.fixture
def folders(tmp_path):
    """Three cases, labels 1 and 2, with hand-computable Dice.

    a: ref label 1 = 8 voxels, pred label 1 = 4 of them (+0 FP) -> Dice 2*4/(4+8) = 2/3; label 2 both empty.
    b: ref label 1 = 4 voxels, pred = same 4 -> 1; ref label 2 = 2 voxels, pred label 2 empty -> 0.
    c: ref empty everywhere; pred label 1 = 3 voxels -> Dice 0 (reference empty), label 2 both empty.
    """
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    shape = (3, 6, 6)
    ra, pa = np.zeros(shape), np.zeros(shape)
    ra[1, 1:3, 1:5] = 1
    pa[1, 1:3, 1:3] = 1
    rb, pb = np.zeros(shape), np.zeros(shape)
    rb[0, 0:2, 0:2] = 1
    pb[0, 0:2, 0:2] = 1
    rb[2, 4, 4:6] = 2
    rc, pc = np.zeros(shape), np.zeros(shape)
    pc[2, 0, 0:3] = 1
    for name, r, p in (("a", ra, pa), ("b", rb, pb), ("c", rc, pc)):
        _write(r, ref / f"{name}.nii.gz")
        _write(p, pred / f"{name}.nii.gz")
    return pred, ref


def test_hand_computed_dice_and_outputs(folders, tmp_path):
    pred, ref = folders
    out = tmp_path / "eval"
    summary = evaluate_folders(pred, ref, out=out)
    cls = summary["classes"]
    assert list(cls) == ["1", "2"]  # default labels: non-zero values of the references
    assert cls["1"]["metrics"]["dice"]["mean"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert cls["1"]["metrics"]["dice"]["n"] == 3
    # pooled: TP = 4 + 4, FP = 0 + 0 + 3, FN = 4 + 0 + 0
    assert summary["pooled_dice"]["per_class"]["1"] == pytest.approx(16 / (16 + 3 + 4))
    assert "NOT the mean" in summary["pooled_dice"]["definition"]
    assert cls["2"]["metrics"]["dice"]["mean"] == 0.0 and cls["2"]["metrics"]["dice"]["n_nan"] == 2
    assert summary["empty_counts"]["per_class"]["1"] == {"both": 0, "ref": 1, "pred": 0}
    assert summary["empty_counts"]["per_class"]["2"] == {"both": 2, "ref": 0, "pred": 1}
    assert summary["empty_counts"]["cases_with_empty_reference"] == 1
    assert summary["empty_counts"]["cases_with_empty_prediction"] == 0
    # HD95 of a missed structure is replaced by the image diagonal in mm (spacing z=2, y=1, x=1)
    diag = math.sqrt((3 * 2) ** 2 + 6 ** 2 + 6 ** 2)
    assert cls["2"]["metrics"]["hd95"]["mean"] == pytest.approx(diag)
    prov = summary["provenance"]
    assert prov["labels"] == [1, 2] and prov["mambaseg_version"] and prov["date"] and prov["n_cases"] == 3

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["classes"]["1"]["metrics"]["dice"]["mean"] == pytest.approx(cls["1"]["metrics"]["dice"]["mean"])
    with open(out / "cases.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6  # 3 cases x 2 classes
    row_a1 = next(r for r in rows if r["case_id"] == "a" and r["label"] == "1")
    assert float(row_a1["dice"]) == pytest.approx(2 / 3) and row_a1["empty"] == "none"
    assert row_a1["tp"] == "4" and row_a1["fn"] == "4" and row_a1["reference_file"].endswith("a.nii.gz")
    row_a2 = next(r for r in rows if r["case_id"] == "a" and r["label"] == "2")
    assert row_a2["dice"] == "nan" and row_a2["empty"] == "both"
    row_b2 = next(r for r in rows if r["case_id"] == "b" and r["label"] == "2")
    assert row_b2["hd95"] == "inf" and row_b2["dice"] == "0.0"


def test_explicit_labels_regions_and_dataset_json(folders, tmp_path):
    pred, ref = folders
    s = evaluate_folders(pred, ref, labels=[(1, 2)])
    assert list(s["classes"]) == ["1+2"]
    (ref / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 2}}))
    s = evaluate_folders(pred, ref)
    assert list(s["classes"]) == ["liver", "tumour"] and s["provenance"]["labels_source"] == "dataset.json"


def test_missing_and_extra_predictions(folders):
    pred, ref = folders
    (pred / "a.nii.gz").rename(pred / "zzz.nii.gz")
    (pred / "b.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"2 reference case\(s\).*a\.nii\.gz, b\.nii\.gz"):
        evaluate_folders(pred, ref)
    with pytest.warns(UserWarning, match="zzz.nii.gz"):  # nnU-Net's -chill: only the predicted cases
        s = evaluate_folders(pred, ref, labels=[1], all_references=False)
    assert [r["case_id"] for r in s["metric_per_case"]] == ["c"] and s["provenance"]["n_cases"] == 1
    (pred / "c.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="no prediction in .* has a reference"):
        evaluate_folders(pred, ref, labels=[1], all_references=False)
    _write(np.zeros((3, 6, 6)), pred / "c.nii.gz")
    (pred.parent / "taken").write_text("")
    with pytest.raises(ValueError, match="taken is a file: give a folder"):
        evaluate_folders(pred, ref, labels=[1], out=pred.parent / "taken")
    _write(np.zeros((3, 6, 6)), pred / "a.nii.gz")
    _write(np.zeros((3, 6, 6)), pred / "b.nii.gz")
    with pytest.warns(UserWarning, match="zzz.nii.gz"):
        s = evaluate_folders(pred, ref, labels=[1])
    assert s["provenance"]["extra_predictions"] == ["zzz.nii.gz"]


def test_nnunet_channel_suffix_pairing_and_other_files(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    lab = np.zeros((2, 4, 4))
    lab[0, 1, 1] = 1
    _write(lab, ref / "case1.nii.gz")
    _write(lab, pred / "case1_0000.nii")
    (pred / "case1.npz").write_bytes(b"x")
    (pred / "summary.json").write_text("{}")
    pairs, extra = pair_files(pred, ref)
    assert [(c, p.name, r.name) for c, p, r in pairs] == [("case1", "case1_0000.nii", "case1.nii.gz")] and not extra
    assert evaluate_folders(pred, ref)["classes"]["1"]["metrics"]["dice"]["mean"] == 1.0


def test_geometry_mismatch_errors(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    _write(np.ones((2, 4, 4)), ref / "x.nii.gz")
    _write(np.ones((2, 4, 5)), pred / "x.nii.gz")
    with pytest.raises(ValueError, match=r"shape mismatch.*pred.*x\.nii\.gz.*ref.*x\.nii\.gz"):
        evaluate_folders(pred, ref)
    _write(np.ones((2, 4, 4)), pred / "x.nii.gz", spacing=(1.0, 1.0, 3.0))
    with pytest.raises(ValueError, match=r"spacing mismatch.*pred.*ref"):
        evaluate_folders(pred, ref)
    _write(np.ones((2, 4, 4)), pred / "x.nii.gz", origin=(5.0, 0.0, 0.0))
    with pytest.warns(UserWarning, match="origin/direction"):
        evaluate_folders(pred, ref)


def test_all_empty_references_need_labels(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    _write(np.zeros((2, 4, 4)), ref / "x.nii.gz")
    _write(np.zeros((2, 4, 4)), pred / "x.nii.gz")
    with pytest.raises(ValueError, match="every reference"):
        evaluate_folders(pred, ref)
    s = evaluate_folders(pred, ref, labels=[1])
    assert s["classes"]["1"]["n_both_empty"] == 1 and s["classes"]["1"]["metrics"]["dice"]["mean"] is None
    with pytest.raises(FileNotFoundError, match="no reference image files"):
        evaluate_folders(pred, tmp_path)
