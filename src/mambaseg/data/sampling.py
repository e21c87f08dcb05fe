"""Preprocessed cases in memory (cached as ``.npy``) and nnU-Net-style patch sampling.

* :class:`CaseStore` preprocesses cases with :mod:`mambaseg.data.preprocessing` (normalise, resample) once and
  caches them as ``{cache_dir}/{case}.npy`` (image ``(C, *S)`` float32), ``{case}_seg.npy`` (label ``(*S)``) and
  ``{case}.json`` (the preprocessing properties). ``cache_dir/plan.json`` records the plan they were made with;
  a different plan empties the cache. Re-runs and ``--resume`` therefore skip preprocessing.
* :class:`PatchSampler` draws batches like nnU-Net v2's ``nnUNetDataLoader``: cases with replacement; the last
  ``B - round(B * (1 - 1/3))`` samples of each batch are centred on a voxel of a random foreground class present in
  the case (``oversample_foreground_percent = 0.33``), the others are placed uniformly; images smaller than the
  patch are padded (image and label with 0), the padding centred as nnU-Net does. For a 2D plan on 3D data a slice
  is drawn first (a slice containing the chosen class for forced samples), then an in-plane patch.

Randomness: batch ``i`` is drawn from ``numpy.random.default_rng([seed, i])``. The sampler's state is therefore
``{"seed", "position"}`` (stored in the checkpoint): resuming at ``position`` continues the exact stream, and the
same batches come out with any number of DataLoader workers (each batch depends on its index only).
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .nnunet_raw import RawDataset, label_values
from .plan import Plan
from .preprocessing import preprocess_image, preprocess_label

__all__ = ["CaseStore", "PatchSampler", "crop_with_padding", "foreground_locations", "preprocess_case"]

Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def preprocess_case(raw: RawDataset, case: str, plan: Plan, *, test: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read and preprocess one case.

    Returns:
        ``(image (C, *S') float32, label (*S') integer, properties)`` on the plan's grid.

    Raises:
        ValueError: the label holds a value that is not one of the plan's labels (names the file).
    """
    image, label, meta = raw.load_case(case, test=test)
    if label is None:
        where = "labelsTs" if test else "labelsTr"
        raise FileNotFoundError(f"case {case!r} has no label file in {raw.path / where}")
    allowed = set(label_values(plan.labels))
    found = {int(v) for v in np.unique(label)}
    if allowed and not found <= allowed:
        raise ValueError(f"{raw.label_file(case, test)}: label value(s) {sorted(found - allowed)} are not in the "
                         f"dataset's labels {dict(plan.labels)} (masks stored as 0/255? `mambaseg data check "
                         f"{raw.path}` lists every such file)")
    files = ", ".join(str(f) for f in raw.image_files(case, test))
    data, props = preprocess_image(image, meta, plan, name=f"case {case!r} ({files})")
    seg = preprocess_label(label, meta, plan)
    if seg.dtype.itemsize > 2 or seg.dtype.kind != "u":
        seg = seg.astype(np.int16 if seg.max(initial=0) < 2 ** 15 else np.int32)
    return data, seg, props


def _cached_source(props_file: Path) -> Any:
    """The ``source`` stamp recorded with a cached case, or None when there is none or it cannot be read."""
    try:
        return json.loads(props_file.read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None


class CaseStore:
    """Preprocessed cases held in memory, backed by an ``.npy`` cache.

    Args:
        raw: the dataset.
        plan: the run's plan.
        cache_dir: cache folder (``RUN_DIR/preprocessed``); None disables caching.
        test_cases: case ids read from ``imagesTs``/``labelsTs`` (e.g. ACDC validation volumes).
    """

    def __init__(self, raw: RawDataset, plan: Plan, cache_dir: str | Path | None = None,
                 test_cases: Sequence[str] = ()) -> None:
        self.raw, self.plan = raw, plan
        self.test_cases = set(test_cases)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.cache_dir is not None:
            self._check_cache()

    def _check_cache(self) -> None:
        assert self.cache_dir is not None
        marker = self.cache_dir / "plan.json"
        current = json.dumps(self.plan.to_dict(), sort_keys=True, default=str)
        if marker.is_file() and marker.read_text() != current:
            shutil.rmtree(self.cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(current)

    def get(self, case: str) -> tuple[np.ndarray, np.ndarray]:
        """``(image (C, *S) float32, label (*S))`` of ``case``, preprocessing (and caching) it on first use."""
        if case in self._data:
            return self._data[case]
        d = self.cache_dir
        source = self._source_stamp(case) if d is not None else None
        if d is not None and (d / f"{case}.npy").is_file() and (d / f"{case}_seg.npy").is_file() \
                and _cached_source(d / f"{case}.json") == source:
            item = (np.load(d / f"{case}.npy"), np.load(d / f"{case}_seg.npy"))
        else:
            image, seg, props = preprocess_case(self.raw, case, self.plan, test=case in self.test_cases)
            if d is not None:
                (d / f"{case}.json").unlink(missing_ok=True)  # written last: a cache entry is whole or absent
                for name, arr in ((f"{case}.npy", image), (f"{case}_seg.npy", seg)):
                    tmp = d / f".{name}.tmp.npy"
                    np.save(tmp, arr)
                    tmp.replace(d / name)
                (d / f"{case}.json").write_text(json.dumps({**props, "source": source}, default=str))
            item = (image, seg)
        self._data[case] = item
        return item

    def _source_stamp(self, case: str) -> list[list]:
        """``[[resolved path, size, mtime_ns], ...]`` of the case's image and label files: a cached case is
        re-read when they change (another dataset in the same run folder, an edited label)."""
        test = case in self.test_cases
        files = [*self.raw.image_files(case, test), self.raw.label_file(case, test)]
        return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f is not None]

    def load(self, cases: Sequence[str], progress: bool = False) -> None:
        """Preprocess / load ``cases`` into memory."""
        it = cases
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(cases, desc="preprocessing", leave=False)
        for c in it:
            self.get(c)


def foreground_locations(label: np.ndarray, classes: Sequence[int], *, max_per_class: int = 10_000,
                         seed: int = 0) -> dict[int, np.ndarray]:
    """Coordinates of up to ``max_per_class`` voxels of every class present (nnU-Net's ``class_locations``).

    Returns:
        ``{class: (M, n) int array}`` for the classes with at least one voxel.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for k in classes:
        idx = np.argwhere(label == k)
        if len(idx) == 0:
            continue
        if len(idx) > max_per_class:
            idx = idx[np.sort(rng.choice(len(idx), max_per_class, replace=False))]
        out[int(k)] = idx
    return out


def crop_with_padding(image: np.ndarray, label: np.ndarray, start: Sequence[int], patch: Sequence[int]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``image (C, *S)`` and ``label (*S)`` at ``start`` (may lie outside the array) with zero padding."""
    shape = image.shape[1:]
    lo = [max(0, s) for s in start]
    hi = [min(d, s + p) for d, s, p in zip(shape, start, patch)]
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    pad = [(a - s, s + p - b) for a, b, s, p in zip(lo, hi, start, patch)]
    img, lab = image[(slice(None),) + sl], label[sl]
    if any(p != (0, 0) for p in pad):
        img = np.pad(img, [(0, 0)] + pad)
        lab = np.pad(lab, pad)
    return img, lab


class PatchSampler:
    """Batches of patches with foreground oversampling (see the module docstring).

    Args:
        store: a :class:`CaseStore` (or anything with ``get(case) -> (image, label)``).
        cases: training case ids.
        plan: the run's plan (``patch_size``, ``batch_size``, ``spatial_dims``, ``slice_axis``, ``num_classes``).
        seed: sampler seed.
        oversample_foreground: fraction of each batch forced to contain foreground (nnU-Net: 0.33).
        augment: optional ``augment(image, label, rng) -> (image, label)`` applied to each patch.
        batch_size: override of ``plan.batch_size``.

    Shapes:
        ``batch(i) -> (image (B, C, *P) float32 tensor, label (B, *P) int64 tensor)``.
    """

    def __init__(self, store: Any, cases: Sequence[str], plan: Plan, seed: int = 0,
                 oversample_foreground: float = 0.33, augment: Augment | None = None,
                 batch_size: int | None = None) -> None:
        if not cases:
            raise ValueError("PatchSampler needs at least one training case")
        self.store, self.cases, self.plan = store, list(cases), plan
        self.seed, self.position = int(seed), 0
        self.oversample = float(oversample_foreground)
        self.augment = augment
        self.batch_size = int(batch_size or plan.batch_size)
        self.patch = [int(p) for p in plan.patch_size]
        ignore = plan.extra.get("ignore_label")
        classes = [k for k in range(1, plan.num_classes) if k != ignore]
        self.locations = {c: foreground_locations(store.get(c)[1], classes, seed=zlib.crc32(c.encode()))
                          for c in self.cases}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, int]:
        """``{"seed", "position"}``: enough to continue the exact stream."""
        return {"seed": self.seed, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.position = int(state["seed"]), int(state["position"])

    def force_foreground(self, index: int) -> bool:
        """nnU-Net's ``get_do_oversample``: is sample ``index`` of a batch forced to contain foreground?"""
        return not index < round(self.batch_size * (1 - self.oversample))

    # ------------------------------------------------------------------ sampling
    def sample(self, case: str, force_fg: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One ``(image (C, *P), label (*P))`` patch of ``case``."""
        image, label = self.store.get(case)
        locs = self.locations[case]
        voxel = None
        if force_fg and locs:
            keys = sorted(locs)
            k = keys[int(rng.integers(len(keys)))]
            voxel = locs[k][int(rng.integers(len(locs[k])))]
        if self.plan.slice_axis is not None and label.ndim == 3:
            ax = int(self.plan.slice_axis)
            z = int(voxel[ax]) if voxel is not None else int(rng.integers(label.shape[ax]))
            image, label = np.take(image, z, axis=ax + 1), np.take(label, z, axis=ax)
            if voxel is not None:
                voxel = np.delete(voxel, ax)
        shape = label.shape
        start = []
        for d, (size, p) in enumerate(zip(shape, self.patch)):
            need = max(0, p - size)
            lb, ub = -(need // 2), size + need // 2 + need % 2 - p
            if voxel is not None:
                start.append(int(np.clip(int(voxel[d]) - p // 2, lb, ub)))
            else:
                start.append(int(rng.integers(lb, ub + 1)))
        img, lab = crop_with_padding(image, label, start, self.patch)
        if self.augment is not None:
            img, lab = self.augment(img, lab, rng)
        return img, lab

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``index`` (a pure function of ``seed`` and ``index``)."""
        rng = np.random.default_rng([self.seed, int(index)])
        imgs, labs = [], []
        for b in range(self.batch_size):
            case = self.cases[int(rng.integers(len(self.cases)))]
            img, lab = self.sample(case, self.force_foreground(b), rng)
            imgs.append(img)
            labs.append(lab.astype(np.int64))
        return torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(labs))

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch at ``position``; advances the position."""
        out = self.batch(self.position)
        self.position += 1
        return out

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch(index)

    def __len__(self) -> int:  # for map-style DataLoader use; indices are unbounded in practice
        return 2 ** 62
