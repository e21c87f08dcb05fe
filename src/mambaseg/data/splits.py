"""Deterministic data splits: nnU-Net-compatible k-fold cross-validation and seeded train/val/test splits.

``make_folds`` reproduces nnU-Net v2's ``generate_crossval_split`` (scikit-learn ``KFold(n_splits=k,
shuffle=True, random_state=seed)`` over the *sorted* case ids) without needing scikit-learn, so a
``splits_final.json`` written here is the one nnU-Net would write for the same cases and seed (12345 there).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["load_splits", "make_folds", "make_splits", "save_splits"]


def make_folds(
    cases: Sequence[str], k: int = 5, seed: int = 12345, out: str | Path | None = None
) -> list[dict[str, list[str]]]:
    """K-fold split in nnU-Net's ``splits_final.json`` shape.

    Args:
        cases: case ids (sorted internally, as nnU-Net does).
        k: number of folds (2 ≤ k ≤ number of cases).
        seed: random seed (nnU-Net uses 12345).
        out: if given, the JSON file to write.

    Returns:
        ``[{"train": [...], "val": [...]}, ...]`` with ``k`` entries; ids sorted within each list.
    """
    keys = sorted(cases)
    n = len(keys)
    if not 2 <= k <= n:
        raise ValueError(f"k-fold needs 2 <= k <= number of cases, got k={k} for {n} cases")
    if len(set(keys)) != n:
        raise ValueError("case ids are not unique")
    indices = np.arange(n)
    np.random.RandomState(seed).shuffle(indices)  # what sklearn's KFold(shuffle=True) does
    sizes = np.full(k, n // k, dtype=int)
    sizes[: n % k] += 1
    folds = []
    start = 0
    for size in sizes:
        mask = np.zeros(n, dtype=bool)
        mask[indices[start : start + size]] = True
        start += size
        folds.append({"train": [keys[i] for i in np.flatnonzero(~mask)],
                      "val": [keys[i] for i in np.flatnonzero(mask)]})
    if out is not None:
        save_splits(folds, out)
    return folds


def make_splits(
    cases: Sequence[str],
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    out: str | Path | None = None,
) -> dict[str, list[str]]:
    """Seeded train/val/test split by case id.

    The sorted ids are permuted with ``numpy.random.default_rng(seed)``; the val and test sizes are
    ``round(fraction * n)`` (train takes the rest), so the result depends only on the ids, the seed and the
    fractions.

    Args:
        cases: case ids.
        seed: random seed.
        fractions: train, val, test fractions summing to 1 (a 0 gives an empty list).
        out: if given, the JSON file to write.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` with ids sorted within each list.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    keys = sorted(cases)
    if len(set(keys)) != len(keys):
        raise ValueError("case ids are not unique")
    n = len(keys)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = round(fractions[1] * n)
    n_test = round(fractions[2] * n)
    if n_val + n_test > n:
        raise ValueError(f"{n} cases are too few for fractions {fractions}")
    val = sorted(keys[i] for i in perm[:n_val])
    test = sorted(keys[i] for i in perm[n_val : n_val + n_test])
    train = sorted(keys[i] for i in perm[n_val + n_test :])
    split = {"train": train, "val": val, "test": test}
    if out is not None:
        save_splits(split, out)
    return split


def save_splits(splits: list[dict[str, list[str]]] | dict[str, list[str]], path: str | Path) -> Path:
    """Write a split (a dict, or nnU-Net's list of folds) as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(splits, indent=4) + "\n")
    return path


def load_splits(path: str | Path) -> list[dict[str, list[str]]] | dict[str, list[str]]:
    """Read a split written by :func:`save_splits` (or nnU-Net's ``splits_final.json``).

    Raises:
        ValueError: the file is not valid JSON, or holds neither a split (a mapping with ``train``) nor a list of
            them (the message names the file).
    """
    try:
        split = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a valid split file (JSON): {err}") from err
    folds = split if isinstance(split, list) else [split]
    if not folds or not all(isinstance(f, dict) and "train" in f for f in folds):
        raise ValueError(f"{path}: expected {{'train': [...], 'val': [...], ...}} or a list of them (folds)")
    return split
