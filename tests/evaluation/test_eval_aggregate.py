"""Aggregation: edge-case counts, inf substitution, pooled vs per-image Dice, JSON output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mambaseg.evaluation import (
    compute_case_metrics,
    pooled_dice,
    summarize,
    to_jsonable,
)

EXACT = 1e-12


def make_rows():
    """Three 2-D cases, classes 1 and 2, spacing (1, 2): class 2 is missed in c1 and absent in c2."""
    shape, sp = (10, 10), (1.0, 2.0)
    rows = []
    # c0: both classes predicted
    ref = np.zeros(shape, np.int64)
    ref[1:5, 1:5] = 1
    ref[6:9, 6:9] = 2
    pred = ref.copy()
    pred[1:5, 5] = 1  # 4 false positives for class 1
    rows += compute_case_metrics(pred, ref, [1, 2], sp, case_id="c0")
    # c1: class 1 perfect, class 2 missed (prediction empty)
    ref = np.zeros(shape, np.int64)
    ref[2:4, 2:4] = 1
    ref[7:9, 7:9] = 2
    pred = np.where(ref == 1, 1, 0)
    rows += compute_case_metrics(pred, ref, [1, 2], sp, case_id="c1")
    # c2: class 1 hallucinated (reference empty), class 2 absent in both
    ref = np.zeros(shape, np.int64)
    pred = np.zeros(shape, np.int64)
    pred[0, 0] = 1
    rows += compute_case_metrics(pred, ref, [1, 2], sp, case_id="c2")
    return rows


def test_counts_and_substitution():
    rows = make_rows()
    s = summarize(rows)
    json.dumps(s, allow_nan=False)  # strictly JSON: no NaN / inf left
    c1, c2 = s["classes"]["1"], s["classes"]["2"]
    assert (c1["n_cases"], c1["n_both_empty"], c1["n_ref_empty"], c1["n_pred_empty"]) == (3, 0, 1, 0)
    assert (c2["n_cases"], c2["n_both_empty"], c2["n_ref_empty"], c2["n_pred_empty"]) == (3, 1, 0, 1)

    diag = math.hypot(10 * 1.0, 10 * 2.0)
    # class 2 HD95: c0 = 0 (perfect), c1 = inf -> diagonal, c2 = NaN (excluded)
    h = c2["metrics"]["hd95"]
    assert (h["n"], h["n_nan"], h["n_substituted"]) == (2, 1, 1)
    assert h["mean"] == pytest.approx(diag / 2, abs=EXACT) and h["max"] == pytest.approx(diag, abs=EXACT)
    assert h["median"] == pytest.approx(diag / 2, abs=EXACT)
    assert h["std"] == pytest.approx(np.std([0.0, diag], ddof=1), abs=EXACT)
    # class 2 Dice: 1, 0 and NaN -> mean 0.5 over 2 cases
    d = c2["metrics"]["dice"]
    assert (d["n"], d["n_nan"], d["n_substituted"], d["mean"]) == (2, 1, 0, 0.5)
    # class 1 ASSD: c2 is inf -> substituted
    assert c1["metrics"]["assd"]["n_substituted"] == 1
    assert s["overall"]["metrics"]["hd95"]["n_substituted"] == 2
    # fixed worst value instead of the per-row diagonal
    s2 = summarize(rows, distance_worst=373.13)
    assert s2["classes"]["2"]["metrics"]["hd95"]["max"] == 373.13
    assert s2["classes"]["2"]["metrics"]["hd95"]["n_substituted"] == 1


def test_pooled_vs_per_image_dice():
    rows = make_rows()
    s = summarize(rows, ["dice"])
    by = [r for r in rows if r["label"] == 1]
    tp, fp, fn = (sum(r[k] for r in by) for k in ("tp", "fp", "fn"))
    pooled = 2 * tp / (2 * tp + fp + fn)
    assert s["classes"]["1"]["pooled_dice"] == pytest.approx(pooled, abs=EXACT)
    assert pooled_dice(rows)["1"] == pytest.approx(pooled, abs=EXACT)
    per_image = np.mean([r["dice"] for r in by])
    assert s["classes"]["1"]["metrics"]["dice"]["mean"] == pytest.approx(per_image, abs=EXACT)
    assert abs(pooled - per_image) > 0.1  # different numbers: the hallucinated voxel costs a whole case
    assert s["overall"]["metrics"]["dice"]["mean_of_class_means"] == pytest.approx(
        np.mean([s["classes"][c]["metrics"]["dice"]["mean"] for c in ("1", "2")]), abs=EXACT
    )
    assert list(s["overall"]["metrics"]) == ["dice"]


def test_missing_worst_value_is_an_error_and_json_helper():
    rows = [{"label_name": "1", "hd95": math.inf, "dice": 0.0, "empty": "pred"}]
    with pytest.raises(ValueError, match="worst_distance_mm"):
        summarize(rows)
    s = summarize(rows, distance_worst=100.0)
    assert s["classes"]["1"]["metrics"]["hd95"]["mean"] == 100.0
    assert s["classes"]["1"]["pooled_dice"] is None  # no tp/fp/fn in the rows
    assert to_jsonable({"a": np.float32("nan"), "b": (1, np.int64(2)), "c": np.array([np.inf, 1.5])}) == {
        "a": None, "b": [1, 2], "c": [None, 1.5],
    }
