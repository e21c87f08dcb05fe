"""Converter for "one folder per case" datasets (BraTS-like) into the nnU-Net v2 raw layout.

Source layout: every case is a folder holding one file per channel and one label file, e.g. the BraTS 2015 copy of
DeepMedic's examples (``{train,validation,test}/brats_2013_pat0001_1/{Flair,T1c}_subtrMeanDivStd.nii.gz``,
``OTMultiClass.nii.gz``). Case folders are found recursively below the source folder: a folder is a case when it
directly holds a file matching the label or any channel; then it must hold all of them.

Storage choices (:func:`convert_case_folders`):

* **Geometry is kept bit for bit**: channel files are symlinked (or copied with ``link="copy"``), never re-encoded.
  Before anything is written, every channel and the label of a case must agree in shape, spacing, origin and
  direction (headers only, :func:`mambaseg.data.io.geometry_close` tolerances); a mismatch is an error naming the
  two files.
* **Labels** already stored as an integer type are linked like the images. Label files stored as float (BraTS'
  ``OTMultiClass`` is float32) are rewritten as the smallest unsigned integer type with the same geometry, because
  nnU-Net and ``mambaseg data check`` expect integer label maps; non-integer values are an error.
* **Splits**: a case's split is given by the nearest folder above it whose name is a key of ``split_folders``
  (default: ``train``/``training`` -> train, ``val``/``validation`` -> val, ``test``/``testing`` -> test). Train and
  val cases go to ``imagesTr``/``labelsTr``; test cases to ``imagesTs``/``labelsTs``. When any case lies in such a
  folder, ``splits.json`` ``{"train", "val", "test"}`` records the source's split (the trainer then trains on
  ``train`` and validates on ``val``; cases in no split folder count as train). Otherwise no ``splits.json`` is
  written and the trainer makes its own folds.
* **Normalisation** is declared the nnU-Net v2 way, through ``channel_names``: nnU-Net picks a channel's
  normalisation from its name (``CT``, ``noNorm``, ``zscore``, ``rescale_to_0_1``, ``rgb_to_0_1``; any other name
  means per-image z-score). With ``normalization=[...]`` the channel names written to ``dataset.json`` are those
  scheme names and the modality names go to the extra key ``channel_modalities``.

:func:`convert_brats2015_deepmedic` is the preset for the BraTS 2015 copy in ``shared/data/brats2015_deepmedic``:
channels FLAIR and T1c declared ``noNorm`` (see :data:`BRATS2015_DEEPMEDIC` for why) and labels 0-4.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io import SITK_EXTENSIONS, ImageMeta, as_label_array, geometry_close, image_extension, read_image, write_image
from .nnunet_raw import StagedDatasetFolder, generate_dataset_json
from .splits import save_splits

__all__ = [
    "BRATS2015_DEEPMEDIC",
    "DEFAULT_SPLIT_FOLDERS",
    "NNUNET_NORMALIZATION_NAMES",
    "convert_brats2015_deepmedic",
    "convert_case_folders",
    "find_case_folders",
]

#: Source folder name (case-insensitive) -> split.
DEFAULT_SPLIT_FOLDERS: dict[str, str] = {
    "train": "train", "training": "train", "tr": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test", "ts": "test",
}

#: Channel names nnU-Net v2 maps to a normalisation (``map_channel_name_to_normalization``, case-insensitive);
#: any other name gets per-image z-scoring.
NNUNET_NORMALIZATION_NAMES = ("CT", "noNorm", "zscore", "rescale_to_0_1", "rgb_to_0_1")

#: Preset for ``shared/data/brats2015_deepmedic`` (README/PROVENANCE there). Normalisation ``noNorm``: the provider
#: already z-scored FLAIR and T1c inside the brain mask, and outside the brain every voxel holds one constant (the
#: z-score of intensity 0, about -3.5). A second z-score over the whole 240x240x155 volume (nnU-Net's ``zscore``
#: without a mask, since nothing is zero there to crop to) would mix ~83 % constant background into the statistics,
#: so tissue intensities would depend on each head's brain fraction; keeping the provider's values does not.
BRATS2015_DEEPMEDIC: dict[str, Any] = {
    "channels": {"FLAIR": "Flair_subtrMeanDivStd", "T1c": "T1c_subtrMeanDivStd"},
    "label": "OTMultiClass",
    "labels": {"background": 0, "necrosis": 1, "oedema": 2, "non-enhancing tumour": 3, "enhancing tumour": 4},
    "normalization": ["noNorm", "noNorm"],
    "dataset_id": 215,
    "name": "BraTS2015DeepMedic",
    "extra": {
        "evaluation_regions": {"whole tumour": [1, 2, 3, 4], "tumour core": [1, 3, 4], "enhancing tumour": [4]},
        "reference": "Menze et al., IEEE TMI 2015 (BRATS); copy from github.com/deepmedic/deepmedic examples",
        "licence": "CC BY-NC-SA 3.0 CH",
        "description": "BRATS 2015 training cases (brats_2013_pat0001..0006), 240x240x155 at 1 mm, FLAIR and T1c "
                       "z-scored inside the brain by the provider (hence noNorm); source split train/validation/test "
                       "kept in splits.json, test cases in imagesTs/labelsTs",
    },
}


# ============================================================================================ finding files
def _has_magic(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _match_in(folder: Path, pattern: str) -> list[Path]:
    """Files of ``folder`` matching ``pattern``: a glob on the file name, or a stem (name without extension)."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if _has_magic(pattern):
        return sorted(p for p in files if fnmatch.fnmatchcase(p.name, pattern)
                      or fnmatch.fnmatchcase(p.name[: len(p.name) - len(image_extension(p))], pattern))
    return sorted(p for p in files if p.name == pattern or p.name[: len(p.name) - len(image_extension(p))] == pattern)


def find_case_folders(source: str | Path, patterns: Sequence[str]) -> list[Path]:
    """Folders below ``source`` (itself included) that directly hold a file matching any of ``patterns``.

    Returns:
        The case folders, sorted by path.
    """
    src = Path(source)
    out = []
    for dirpath, dirnames, _ in os.walk(src, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        if any(_match_in(folder, p) for p in patterns):
            out.append(folder)
    return sorted(out)


def _split_of(case_dir: Path, src: Path, split_folders: Mapping[str, str]) -> str | None:
    lookup = {k.casefold(): v for k, v in split_folders.items()}
    parts = case_dir.relative_to(src).parts[:-1] if case_dir != src else ()
    for part in reversed(parts):
        if part.casefold() in lookup:
            return lookup[part.casefold()]
    return None


def _case_id(case_dir: Path) -> str:
    return re.sub(r"\s+", "_", case_dir.name.strip())


# ============================================================================================ geometry
def _header(path: Path) -> tuple[tuple[int, ...], ImageMeta, str]:
    """``(shape in array order, geometry, numpy dtype kind)`` read from the header only where SimpleITK can."""
    if image_extension(path) in SITK_EXTENSIONS:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as err:
            raise ValueError(f"cannot read the header of {path}: {str(err).strip().splitlines()[-1]}") from err
        if reader.GetNumberOfComponents() != 1:
            raise ValueError(f"{path}: {reader.GetNumberOfComponents()} components per voxel; expected one channel "
                             f"per file")
        meta = ImageMeta.from_itk(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
        kind = "f" if reader.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64) else "i"
        return tuple(reversed(reader.GetSize())), meta, kind
    arr, meta = read_image(path)
    return tuple(arr.shape), meta, arr.dtype.kind


def _check_geometry(case: str, files: Sequence[Path]) -> list[tuple[tuple[int, ...], ImageMeta, str]]:
    headers = [_header(f) for f in files]
    (shape0, meta0, _), first = headers[0], files[0]
    for f, (shape, meta, _) in zip(files[1:], headers[1:]):
        if shape != shape0:
            raise ValueError(f"case {case!r}: {f} has shape {shape}, {first} has {shape0}")
        bad = [k for k, ok in geometry_close(meta0, meta).items() if not ok]
        if bad:
            detail = "; ".join(f"{k} {getattr(meta, k)} vs {getattr(meta0, k)}" for k in bad)
            raise ValueError(f"case {case!r}: {f} does not share the geometry of {first} ({detail})")
    return headers


# ============================================================================================ writing
def _place(src: Path, dst: Path, link: str) -> None:
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if link == "symlink":
        os.symlink(src.resolve(), dst)
    else:
        shutil.copyfile(src, dst)


def _label_values(path: Path) -> set[int]:
    """Values of a label file; NaN, negative or non-integer values are a ValueError naming the file."""
    return {int(v) for v in np.unique(as_label_array(read_image(path)[0], str(path)))}


def _place_label(src: Path, dst: Path, kind: str, link: str) -> None:
    """Link/copy an integer label file; rewrite a float one as unsigned integers with the same geometry."""
    if kind in "iu":
        _place(src, dst, link)
        return
    arr, meta = read_image(src)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    write_image(as_label_array(arr, str(src)), meta, dst, label=True)


def convert_case_folders(
    source: str | Path,
    out_root: str | Path,
    dataset_id: int,
    name: str,
    channels: Mapping[str, str],
    label: str,
    *,
    labels: Mapping[str, int] | None = None,
    normalization: Sequence[str] | None = None,
    split_folders: Mapping[str, str] | None = None,
    link: str = "symlink",
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    **dataset_json_extra: Any,
) -> Path:
    """Convert a dataset with one folder per case into nnU-Net v2 raw (see the module docstring).

    Args:
        source: root folder; case folders are found recursively below it.
        out_root: where ``DatasetXXX_Name`` is created.
        dataset_id: nnU-Net dataset id.
        name: dataset name.
        channels: channel name -> file stem (``"Flair_subtrMeanDivStd"``) or file-name glob (``"*flair*.nii.gz"``)
            inside each case folder, in channel order (``_0000``, ``_0001``, ...). Each must match exactly one file.
        label: file stem or glob of the label map inside each case folder.
        labels: dataset.json ``labels`` (name -> value, ``background`` 0); default: ``background`` plus
            ``label_{k}`` for every value found. Values found outside it are an error.
        normalization: one nnU-Net normalisation name per channel (:data:`NNUNET_NORMALIZATION_NAMES`); written as
            the ``channel_names`` (how nnU-Net reads it), with the names of ``channels`` in ``channel_modalities``.
            None: ``channel_names`` are the names of ``channels`` (nnU-Net then z-scores them, unless one is "CT").
        split_folders: folder name -> ``"train"``/``"val"``/``"test"`` (default :data:`DEFAULT_SPLIT_FOLDERS`).
        link: ``"symlink"`` (absolute links to the source files) or ``"copy"``.
        limit: convert only the first ``limit`` cases of each split (sorted by case id).
        overwrite: replace an existing dataset folder's images, labels, dataset.json and splits.json.
        progress: show a tqdm bar.
        **dataset_json_extra: extra dataset.json keys (``reference``, ``licence``, ``description``, ...).

    Returns:
        The dataset folder.

    Raises:
        FileNotFoundError: ``source`` missing, no case folder, or a case lacks files (every case and missing file is
            listed).
        ValueError: ambiguous matches, duplicate case ids, mixed file endings, geometry mismatch between a case's
            files (names both), label values that are not integers or not in ``labels``.
        FileExistsError: the dataset folder already holds a conversion (images, labels, dataset.json or
            splits.json) and ``overwrite`` is False.
    """
    src = Path(source)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    if not channels:
        raise ValueError("channels must name at least one channel (channel name -> file stem or glob)")
    if link not in ("symlink", "copy"):
        raise ValueError(f"link must be 'symlink' or 'copy', got {link!r}")
    chan_names, chan_patterns = list(channels), list(channels.values())
    if normalization is not None:
        normalization = list(normalization)
        known = {n.casefold(): n for n in NNUNET_NORMALIZATION_NAMES}
        bad = [n for n in normalization if n.casefold() not in known]
        if len(normalization) != len(chan_names) or bad:
            raise ValueError(f"normalization must give one of {NNUNET_NORMALIZATION_NAMES} per channel "
                             f"{chan_names}, got {normalization}")
    splits_map = DEFAULT_SPLIT_FOLDERS if split_folders is None else dict(split_folders)
    bad_splits = sorted({v for v in splits_map.values()} - {"train", "val", "test"})
    if bad_splits:
        raise ValueError(f"split_folders values must be 'train', 'val' or 'test', got {bad_splits}")

    # ---- discover and validate every case before writing anything
    folders = find_case_folders(src, [*chan_patterns, label])
    if not folders:
        raise FileNotFoundError(f"no case folder below {src} holds a file matching {chan_patterns + [label]}")
    cases: dict[str, dict[str, Any]] = {}
    missing, ambiguous = [], []
    for folder in folders:
        case = _case_id(folder)
        if case in cases:
            raise ValueError(f"two case folders give the case id {case!r}: {cases[case]['folder']} and {folder}")
        files = []
        for what, pattern in [*zip(chan_names, chan_patterns), ("label", label)]:
            found = _match_in(folder, pattern)
            if not found:
                missing.append(f"{case} ({folder}): no file for {what} {pattern!r}")
            elif len(found) > 1:
                ambiguous.append(f"{case}: {what} {pattern!r} matches {[p.name for p in found]}")
            else:
                files.append(found[0])
        cases[case] = {"folder": folder, "files": files, "split": _split_of(folder, src, splits_map)}
    if missing:
        raise FileNotFoundError(f"{len(missing)} missing file(s) in case folders below {src}: "
                                + "; ".join(sorted(missing)))
    if ambiguous:
        raise ValueError("ambiguous file patterns (each must match one file): " + "; ".join(ambiguous))
    endings = {image_extension(f) for c in cases.values() for f in c["files"]}
    if len(endings) > 1:
        raise ValueError(f"case files have mixed file endings {sorted(endings)}; nnU-Net needs one file_ending")
    file_ending = endings.pop()
    by_split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for case in sorted(cases):
        by_split[cases[case]["split"] or "train"].append(case)
    if limit is not None:
        by_split = {k: v[:limit] for k, v in by_split.items()}
    selected = [c for v in by_split.values() for c in v]
    headers = {c: _check_geometry(c, cases[c]["files"]) for c in selected}
    found_values: set[int] = set()
    for case in selected:
        label_file = cases[case]["files"][-1]
        values = _label_values(label_file)
        if labels is not None:
            unexpected = sorted(values - {int(v) for v in labels.values()})
            if unexpected:
                raise ValueError(f"{label_file}: label value(s) {unexpected} are not in labels {dict(labels)}")
        found_values |= values

    # ---- write
    staged = StagedDatasetFolder(out_root, dataset_id, name, overwrite)
    with staged as folder:
        test_cases = set(by_split["test"])
        for s in ("imagesTs", "labelsTs") if test_cases else ():
            (folder / s).mkdir()
        iterator = selected
        if progress:
            from tqdm import tqdm

            iterator = tqdm(selected, desc="cases", leave=False)
        for case in iterator:
            img_dir, lab_dir = ("imagesTs", "labelsTs") if case in test_cases else ("imagesTr", "labelsTr")
            *chan_files, label_file = cases[case]["files"]
            for c, f in enumerate(chan_files):
                _place(f, folder / img_dir / f"{case}_{c:04d}{file_ending}", link)
            _place_label(label_file, folder / lab_dir / f"{case}{file_ending}", headers[case][-1][2], link)
        out_labels = dict(labels) if labels is not None else {
            "background": 0, **{f"label_{v}": v for v in sorted(found_values - {0})}}
        if normalization is not None:
            channel_names = dict(enumerate(normalization))
            dataset_json_extra = {"channel_modalities": {str(i): n for i, n in enumerate(chan_names)},
                                  **dataset_json_extra}
        else:
            channel_names = dict(enumerate(chan_names))
        with_splits = any(cases[c]["split"] is not None for c in selected)
        n_train = len(by_split["train"]) + len(by_split["val"])
        extra = {"source_files": {"channels": dict(channels), "label": label}, **dataset_json_extra}
        if with_splits:
            extra.setdefault("splits", "splits.json: train/val = imagesTr case ids, test = imagesTs case ids "
                                       "(the source's split folders)")
        generate_dataset_json(folder, channel_names, out_labels, n_train, file_ending, dataset_name=folder.name,
                              **extra)
        if with_splits:
            save_splits(by_split, folder / "splits.json")
    return staged.final


def convert_brats2015_deepmedic(
    source: str | Path,
    out_root: str | Path,
    dataset_id: int = BRATS2015_DEEPMEDIC["dataset_id"],
    name: str = BRATS2015_DEEPMEDIC["name"],
    *,
    link: str = "symlink",
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Convert ``shared/data/brats2015_deepmedic`` with the :data:`BRATS2015_DEEPMEDIC` preset.

    Gives ``Dataset215_BraTS2015DeepMedic`` with 4 training cases (2 train + 2 val in ``splits.json``) and 2 test
    cases in ``imagesTs``/``labelsTs``; channels ``_0000`` FLAIR and ``_0001`` T1c, declared ``noNorm``.
    """
    p = BRATS2015_DEEPMEDIC
    return convert_case_folders(source, out_root, dataset_id, name, p["channels"], p["label"], labels=p["labels"],
                                normalization=p["normalization"], link=link, limit=limit, overwrite=overwrite,
                                progress=progress, **p["extra"])
