"""Test vectors of reference/metrics.md section 1.5 and the edge-case table of DESIGN.md.

Tolerances: exact vectors (fractions, integer distances) use abs 1e-12; values printed in metrics.md with 3-4
decimals are checked to half a unit of the last printed decimal.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mambaseg.evaluation import (
    assd,
    boundary,
    compute_case_metrics,
    dice,
    hausdorff,
    hd95,
    image_diagonal_mm,
    iou,
    masd,
    nsd,
    precision,
    sensitivity,
    surface_distances,
)

EXACT = 1e-12


def sphere(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    """Voxels whose physical position (index * spacing) lies within ``radius`` of ``centre``."""
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    r2 = sum((g * sp - c) ** 2 for g, sp, c in zip(grids, spacing, centre))
    return r2 <= radius**2


# ------------------------------------------------------------------------------------------------ V1
def test_v1_2x2():
    p = np.array([[1, 0], [0, 1]])
    g = np.array([[1, 0], [1, 1]])
    assert dice(p, g) == pytest.approx(0.8, abs=EXACT)
    assert iou(p, g) == pytest.approx(2 / 3, abs=EXACT)
    assert sensitivity(p, g) == pytest.approx(2 / 3, abs=EXACT)
    assert precision(p, g) == pytest.approx(1.0, abs=EXACT)
    assert hausdorff(p, g) == pytest.approx(1.0, abs=EXACT)
    assert assd(p, g) == pytest.approx(0.2, abs=EXACT)
    assert masd(p, g) == pytest.approx(1 / 6, abs=EXACT)
    assert nsd(p, g, 1.0) == pytest.approx(1.0, abs=EXACT)
    # directed-max with linear interpolation (MONAI / MetricsReloaded), not medpy's pooled 0.8 nor DeepMind's 1.0
    assert hd95(p, g) == pytest.approx(0.9, abs=EXACT)


# ------------------------------------------------------------------------------------------------ V2, V3
def test_v2_two_pixels_2mm_apart_2d():
    g = np.zeros((128, 128), bool)
    p = np.zeros((128, 128), bool)
    g[50, 70] = True
    p[50, 72] = True
    sp = (2.0, 1.0)
    assert hausdorff(p, g, sp) == pytest.approx(2.0, abs=EXACT)
    assert hd95(p, g, sp) == pytest.approx(2.0, abs=EXACT)
    assert assd(p, g, sp) == pytest.approx(2.0, abs=EXACT)  # DeepMind's surfels give 1.5
    assert nsd(p, g, 1.0, sp) == 0.0  # DeepMind's surfels give 0.5
    assert dice(p, g) == 0.0


def test_v3_two_voxels_3d():
    g = np.zeros((128, 128, 128), bool)
    p = np.zeros_like(g)
    g[50, 60, 70] = True
    p[50, 60, 72] = True
    sp = (3.0, 2.0, 1.0)
    assert hausdorff(p, g, sp) == pytest.approx(2.0, abs=EXACT)
    assert hd95(p, g, sp) == pytest.approx(2.0, abs=EXACT)
    assert assd(p, g, sp) == pytest.approx(2.0, abs=EXACT)
    assert nsd(p, g, 1.0, sp) == 0.0
    assert dice(p, g) == 0.0


# ------------------------------------------------------------------------------------------------ V4
def test_v4_cubes_shifted_by_one():
    g = np.zeros((100, 100, 100), bool)
    p = np.zeros_like(g)
    g[0:50] = True
    p[0:51] = True
    sp = (2.0, 1.0, 1.0)
    assert dice(p, g) == pytest.approx(100 / 101, abs=EXACT)  # 0.990
    assert hausdorff(p, g, sp) == pytest.approx(2.0, abs=EXACT)
    assert hd95(p, g, sp) == pytest.approx(2.0, abs=EXACT)
    # NSD@1mm differs from DeepMind's 0.836 (surfel areas); checked against MONAI in test_eval_monai_agreement.py


# ------------------------------------------------------------------------------------------------ V5
def test_v5_squares_shifted_by_one():
    g = np.zeros((6, 6), bool)
    p = np.zeros_like(g)
    g[1:3, 1:3] = True
    p[1:4, 1:3] = True
    sp = (2.0, 1.0)
    assert dice(p, g) == pytest.approx(0.8, abs=EXACT)
    assert iou(p, g) == pytest.approx(2 / 3, abs=EXACT)
    assert hausdorff(p, g, sp) == pytest.approx(2.0, abs=EXACT)
    assert hd95(p, g, sp) == pytest.approx(2.0, abs=EXACT)
    assert assd(p, g, sp) == pytest.approx(0.4, abs=EXACT)
    assert masd(p, g, sp) == pytest.approx(1 / 3, abs=EXACT)
    assert nsd(p, g, 1.0, sp) == pytest.approx(0.8, abs=EXACT)  # DeepMind: 0.8703


# ------------------------------------------------------------------------------------------------ V6 + table
@pytest.mark.parametrize("shape,sp", [((128, 128), (3.0, 2.0)), ((12, 10, 8), (2.5, 1.0, 0.7))])
def test_v6_edge_cases(shape, sp):
    one = np.zeros(shape, bool)
    one[(5,) * len(shape)] = True
    empty = np.zeros(shape, bool)
    for p, g in ((empty, one), (one, empty)):  # prediction empty / reference empty
        assert dice(p, g) == 0.0
        assert iou(p, g) == 0.0
        assert nsd(p, g, 1.0, sp) == 0.0
        for f in (hd95, assd, hausdorff, masd):
            assert f(p, g, sp) == math.inf
    assert math.isnan(sensitivity(one, empty)) and precision(one, empty) == 0.0
    assert math.isnan(precision(empty, one)) and sensitivity(empty, one) == 0.0
    # both empty: NaN = not applicable, or the configurable score
    for f in (dice, iou):
        assert math.isnan(f(empty, empty))
        assert f(empty, empty, empty_score=1.0) == 1.0
    assert math.isnan(nsd(empty, empty, 1.0, sp))
    assert nsd(empty, empty, 1.0, sp, empty_score=1.0) == 1.0
    for f in (hd95, assd, hausdorff, masd):
        assert math.isnan(f(empty, empty, sp))


def test_edge_case_rows_carry_counts_and_worst_value():
    ref = np.zeros((8, 9), np.int64)
    pred = np.zeros_like(ref)
    ref[2:4, 2:4] = 1  # class 1: prediction empty
    pred[5:7, 5:7] = 2  # class 2: reference empty
    ref[0, 0] = pred[0, 0] = 4  # class 4: perfect
    rows = compute_case_metrics(pred, ref, [1, 2, 3, 4], (2.0, 0.5), case_id="c0")
    by = {r["label"]: r for r in rows}
    assert by[1]["empty"] == "pred" and by[1]["n_pred"] == 0 and by[1]["n_ref"] == 4
    assert by[2]["empty"] == "ref" and by[2]["n_ref"] == 0 and by[2]["n_pred"] == 4
    assert by[3]["empty"] == "both" and math.isnan(by[3]["dice"]) and math.isnan(by[3]["hd95"])
    assert math.isnan(by[3]["nsd"]) and math.isnan(by[3]["assd"])
    assert by[4]["empty"] == "none" and by[4]["dice"] == 1.0 and by[4]["hd95"] == 0.0 and by[4]["nsd"] == 1.0
    for lab in (1, 2):
        assert by[lab]["dice"] == 0.0 and by[lab]["iou"] == 0.0 and by[lab]["nsd"] == 0.0
        assert by[lab]["hd95"] == math.inf and by[lab]["assd"] == math.inf
    diag = math.hypot(8 * 2.0, 9 * 0.5)
    assert all(r["worst_distance_mm"] == pytest.approx(diag, abs=EXACT) for r in rows)
    assert image_diagonal_mm((8, 9), (2.0, 0.5)) == pytest.approx(diag, abs=EXACT)
    assert all(r["case_id"] == "c0" and r["spacing"] == [2.0, 0.5] for r in rows)
    rows1 = compute_case_metrics(pred, ref, [3], (2.0, 0.5), empty_score=1.0)
    assert rows1[0]["dice"] == 1.0 and rows1[0]["iou"] == 1.0 and rows1[0]["nsd"] == 1.0
    assert math.isnan(rows1[0]["hd95"])  # distances stay N/A
    json.dumps([{k: v for k, v in r.items() if k != "label"} for r in rows])


# ------------------------------------------------------------------------------------------------ V13, V14
@pytest.mark.parametrize(
    "tau,expected",
    [((0.0, 0.0), (1 - 12 / 84, 0.0)), ((2.8, 5.5), (1 - 3 / 84, 1 - 4 / 6)), ((3.0, 6.0), (1 - 1 / 84, 1 - 2 / 6))],
)
def test_v13_monai_nsd_tolerances(tau, expected):
    pred = np.zeros((10, 10), np.int64)
    ref = np.zeros_like(pred)
    pred[1:4, 1] = 1
    ref[5:8, 6] = 1
    for lab, t, e in zip((0, 1), tau, expected):
        assert nsd(pred == lab, ref == lab, t) == pytest.approx(e, abs=EXACT)
        row = compute_case_metrics(pred, ref, [lab], nsd_tolerance_mm=t, metrics=("nsd",))[0]
        assert row["nsd"] == pytest.approx(e, abs=EXACT)


def test_v14_not_predicted_not_present():
    pred = np.zeros((80, 80), np.int64)
    ref = np.zeros_like(pred)
    pred[10:20, 10:20] = 1
    ref[10:20, 10:20] = 2
    rows = compute_case_metrics(pred, ref, [0, 1, 2, 3], metrics=("nsd",))
    vals = [r["nsd"] for r in rows]
    assert vals[:3] == [1.0, 0.0, 0.0] and math.isnan(vals[3])
    assert np.nanmean(vals) == pytest.approx(1 / 3, abs=EXACT)
    assert np.nanmean(vals[1:]) == 0.0


# ------------------------------------------------------------------------------------------------ V15, V16
def test_v15_spheres_hausdorff():
    shape = (99, 99, 99)
    a = sphere(shape, (20, 20, 20), 20)
    b = sphere(shape, (19, 19, 19), 20)
    assert hausdorff(a, b) == pytest.approx(math.sqrt(3), abs=1e-7)
    a = sphere(shape, (20, 33, 22), 20)
    b = sphere(shape, (20, 33, 22), 40)
    assert hausdorff(a, b) == pytest.approx(20.2237, abs=5e-5)
    assert hd95(a, b) == pytest.approx(20.0998, abs=5e-5)
    assert hausdorff(a, np.zeros(shape, bool)) == math.inf


def test_v16_spheres_assd():
    shape = (99, 99, 99)
    a = sphere(shape, (19, 33, 22), 33)
    b = sphere(shape, (20, 33, 22), 33)
    assert assd(a, b) == pytest.approx(0.350217, abs=5e-7)
    assert surface_distances(a, b).pred_to_ref.mean() == pytest.approx(0.3483279, abs=5e-8)


# ------------------------------------------------------------------------------------------------ V17, V18, V20
def test_v17_one_dimensional():
    result = np.array([1, 0])
    reference = np.array([0, 1])
    assert assd(result, reference) == pytest.approx(1.0, abs=EXACT)
    assert assd(result, reference, [2.0]) == pytest.approx(2.0, abs=EXACT)


def test_v17_assd_symmetric_directed_not():
    a = np.zeros((6, 6), bool)
    b = np.zeros((6, 6), bool)
    a[2:4, 2:4] = True
    b[1:5, 1:5] = True
    assert assd(a, b) == pytest.approx(assd(b, a), abs=EXACT)
    sd = surface_distances(a, b)
    assert sd.pred_to_ref.mean() == pytest.approx(1.0, abs=EXACT)  # a -> b
    assert sd.ref_to_pred.mean() == pytest.approx((8 + 4 * math.sqrt(2)) / 12, abs=EXACT)  # b -> a


def test_v18_dice_empty_conventions():
    # TEST_CASE_11 / 12: zeros vs zeros with "ignore_empty=False" -> 1; ones vs zeros -> 0
    z = np.zeros((2, 2), bool)
    assert dice(z, z, empty_score=1.0) == 1.0
    assert dice(~z, z) == 0.0


def test_v20_full_image():
    full = np.ones((16, 16), bool)
    assert dice(full, full) == 1.0 and iou(full, full) == 1.0 and sensitivity(full, full) == 1.0
    assert hausdorff(full, full) == 0.0 and hd95(full, full) == 0.0 and nsd(full, full, 0.0) == 1.0
    assert boundary(full).sum() == 60  # object touching the image edge has a boundary along the edge


# ------------------------------------------------------------------------------------------------ extras
def test_boundary_is_face_connected():
    m = np.zeros((5, 5), bool)
    m[1:4, 1:4] = True
    b = boundary(m)
    assert b.sum() == 8 and not b[2, 2]  # centre has all 4 face neighbours inside
    m3 = np.ones((3, 3, 3), bool)
    assert boundary(m3).sum() == 26


def test_regions_and_named_labels():
    pred = np.array([[1, 2, 3, 0]])
    ref = np.array([[1, 1, 3, 3]])
    rows = compute_case_metrics(pred, ref, {"WT": (1, 2, 3), "ET": 3}, metrics=("dice", "sensitivity"))
    assert [r["label_name"] for r in rows] == ["WT", "ET"]
    assert rows[0]["label"] == (1, 2, 3) and rows[0]["tp"] == 3 and rows[0]["fn"] == 1
    assert rows[0]["dice"] == pytest.approx(6 / 7, abs=EXACT)
    assert rows[1]["dice"] == pytest.approx(2 / 3, abs=EXACT)
    assert compute_case_metrics(pred, ref, [(1, 2)], metrics=("dice",))[0]["label_name"] == "1+2"


def test_input_validation():
    a = np.zeros((4, 5), np.int64)
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 6\)"):
        compute_case_metrics(a, np.zeros((4, 6), np.int64), [1])
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        dice(a, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="integer"):
        compute_case_metrics(a + 0.5, a, [1])
    with pytest.raises(ValueError, match="spacing"):
        compute_case_metrics(a, a, [1], spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="binary"):
        dice(a + 2, a)
    with pytest.raises(ValueError, match="unknown metric"):
        compute_case_metrics(a, a, [1], metrics=("dice", "hd99"))
    with pytest.raises(TypeError):
        compute_case_metrics(a, a, [1.5])
    with pytest.raises(ValueError, match="tolerance"):
        nsd(a, a, -1.0)
    # float arrays that hold integers are accepted as label maps
    assert compute_case_metrics(a.astype(float), a, [0], metrics=("dice",))[0]["dice"] == 1.0
