"""Seeded splits: nnU-Net-compatible k-fold and train/val/test."""

from __future__ import annotations

import numpy as np
import pytest

from mambaseg.data.splits import load_splits, make_folds, make_splits


def test_make_folds_matches_sklearn_kfold_semantics(tmp_path):
    cases = [f"case_{i:03d}" for i in range(23)][::-1]
    folds = make_folds(cases, k=5, seed=12345, out=tmp_path / "splits_final.json")
    assert load_splits(tmp_path / "splits_final.json") == folds
    assert [len(f["val"]) for f in folds] == [5, 5, 5, 4, 4]
    all_val = sorted(v for f in folds for v in f["val"])
    assert all_val == sorted(cases)
    for f in folds:
        assert not set(f["train"]) & set(f["val"]) and len(f["train"]) + len(f["val"]) == 23
        assert f["train"] == sorted(f["train"]) and f["val"] == sorted(f["val"])
    # independent re-implementation of KFold(shuffle=True, random_state=12345) on the sorted ids
    idx = np.arange(23)
    np.random.RandomState(12345).shuffle(idx)
    assert folds[0]["val"] == sorted(sorted(cases)[i] for i in idx[:5])
    try:
        from sklearn.model_selection import KFold
    except ImportError:
        return
    keys = np.array(sorted(cases))
    for f, (tr, va) in zip(folds, KFold(5, shuffle=True, random_state=12345).split(keys)):
        assert f == {"train": list(keys[tr]), "val": list(keys[va])}


def test_make_splits_is_deterministic_and_disjoint(tmp_path):
    cases = [f"img{i}" for i in range(50)]
    s1 = make_splits(cases, seed=3, out=tmp_path / "splits.json")
    s2 = make_splits(list(reversed(cases)), seed=3)
    assert s1 == s2 == load_splits(tmp_path / "splits.json")
    assert (len(s1["train"]), len(s1["val"]), len(s1["test"])) == (40, 5, 5)
    assert sorted(s1["train"] + s1["val"] + s1["test"]) == sorted(cases)
    assert make_splits(cases, seed=4) != s1
    with pytest.raises(ValueError):
        make_splits(cases, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError):
        make_folds(cases[:3], k=5)
