"""Converters from common dataset layouts into the nnU-Net v2 raw layout.

Each converter is ``convert_*(source, out_root, dataset_id, name, ...) -> Path`` and returns the written
``out_root/DatasetXXX_Name`` folder. ``limit=N`` converts only the first ``N`` cases (sorted), for quick tests.

Storage choices:

* **SSL4MIS ACDC h5** (:func:`convert_acdc_h5`): training *slices* are stored as 3-D NIfTI with a singleton
  first axis, array ``(1, H, W)`` (one-slice volumes), and the val/test *volumes* as ``(Z, H, W)`` NIfTI in
  ``imagesTs``/``labelsTs``. One file ending (``.nii.gz``) for both keeps the float32 0..1 intensities lossless (PNG
  would quantise them) and lets a 2-D model trained on slices predict the 3-D volumes slice by slice, as nnU-Net's
  2-D configuration does. The h5 files carry no spacing: spacing is written as 1.0 on every axis. The paper's
  split lists go to ``splits.json`` (``train`` = slice ids in imagesTr, ``val``/``test`` = volume ids in imagesTs).
* **2-D image/mask folders** (:func:`convert_folders_2d`): images become ``{case}_0000.png`` (RGB in one file,
  ``channel_names`` R, G, B, as nnU-Net's NaturalImage2DIO expects), masks ``{case}.png`` uint8.
* **MSD** (:func:`convert_msd`): 4-D NIfTI split into ``_0000``, ``_0001``... 3-D files keeping spacing, origin and the
  3x3 direction block; dataset.json rewritten in v2 form, as ``nnUNetv2_convert_MSD_dataset`` does.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .io import (
    LOSSY_EXTENSIONS,
    NATURAL_EXTENSIONS,
    ImageMeta,
    image_extension,
    read_image,
    write_image,
)
from .nnunet_raw import StagedDatasetFolder, generate_dataset_json
from .splits import make_splits, save_splits

__all__ = ["MASK_SUFFIXES", "convert_acdc_h5", "convert_folders_2d", "convert_msd", "pair_images_and_masks"]

MASK_SUFFIXES = ("_segmentation", "_mask", "_seg", "_label", "_gt")
_IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "input", "inputs")
_MASK_DIR_NAMES = ("masks", "mask", "labels", "label", "gt", "groundtruth", "ground_truth", "annotations",
                   "segmentations")


def _progress(items: Iterable, enabled: bool, desc: str) -> Iterable:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False)


# ============================================================================================ ACDC (SSL4MIS)
def _import_h5py():
    try:
        import h5py
    except ImportError as err:  # pragma: no cover
        raise ImportError("converting SSL4MIS .h5 data needs h5py: pip install h5py") from err
    return h5py


def _read_list(path: Path) -> list[str]:
    return [ln.strip().replace(".h5", "") for ln in path.read_text().splitlines() if ln.strip()]


def _first_existing(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.exists()), None)


def convert_acdc_h5(
    source: str | Path,
    out_root: str | Path,
    dataset_id: int = 27,
    name: str = "ACDC",
    *,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Convert the SSL4MIS ACDC h5 release (slices + volumes + split lists) into nnU-Net raw.

    Args:
        source: folder with ``slices/*.h5`` (2-D, keys ``image`` (H, W) float32, ``label`` (H, W) uint8),
            volumes ``*.h5`` (``image``/``label`` (Z, H, W)) in ``volumes/`` or ``data/`` or the folder itself, and
            the lists ``train_slices.list``, ``val.list``, ``test.list`` (also looked for under ``data/``).
        out_root: where ``DatasetXXX_Name`` is created.
        dataset_id: nnU-Net dataset id (27 is nnU-Net's own ACDC id).
        name: dataset name.
        limit: convert only the first ``limit`` (sorted) ids of each list.
        overwrite: replace a dataset folder that already holds a conversion
            (:func:`mambaseg.data.nnunet_raw.StagedDatasetFolder`).
        progress: show tqdm bars.

    Returns:
        The dataset folder. Training cases ``{slice}_0000.nii.gz`` of shape ``(1, H, W)``; test cases
        ``imagesTs/{volume}_0000.nii.gz`` of shape ``(Z, H, W)`` with ``labelsTs``; ``splits.json``.
    """
    h5py = _import_h5py()
    src = Path(source)
    if not src.is_dir():
        raise FileNotFoundError(f"ACDC source folder not found: {src}")
    slices_dir = _first_existing(src / "slices", src / "data" / "slices")
    if slices_dir is None:
        raise FileNotFoundError(f"{src}: no slices/ folder with the 2-D training .h5 files")
    vol_dir = _first_existing(src / "volumes", src / "data") or src

    def list_or(name_: str, default: list[str]) -> list[str]:
        f = _first_existing(src / name_, src / "data" / name_)
        return _read_list(f) if f is not None else default

    train = sorted(list_or("train_slices.list", [p.stem for p in slices_dir.glob("*.h5")]))
    val = sorted(list_or("val.list", []))
    test = sorted(list_or("test.list", []))
    if limit is not None:
        train, val, test = train[:limit], val[:limit], test[:limit]
    if not train:
        raise ValueError(f"{src}: no training slices found")

    staged = StagedDatasetFolder(out_root, dataset_id, name, overwrite)
    with staged as folder:

        def convert(h5_path: Path, image_out: Path, label_out: Path) -> None:
            if not h5_path.is_file():
                raise FileNotFoundError(f"listed case missing: {h5_path}")
            with h5py.File(h5_path, "r") as fh:
                if "image" not in fh or "label" not in fh:
                    raise ValueError(f"{h5_path}: expected keys 'image' and 'label', found {list(fh.keys())}")
                image = np.asarray(fh["image"], dtype=np.float32)
                label = np.asarray(fh["label"])
            if image.shape != label.shape:
                raise ValueError(f"{h5_path}: image shape {image.shape} != label shape {label.shape}")
            if image.ndim == 2:
                image, label = image[None], label[None]
            meta = ImageMeta.identity(3)
            write_image(image, meta, image_out)
            write_image(label, meta, label_out, label=True)

        for case in _progress(train, progress, "ACDC slices"):
            convert(slices_dir / f"{case}.h5", folder / "imagesTr" / f"{case}_0000.nii.gz",
                    folder / "labelsTr" / f"{case}.nii.gz")
        if val or test:
            (folder / "imagesTs").mkdir(exist_ok=True)
            (folder / "labelsTs").mkdir(exist_ok=True)
        for case in _progress(val + test, progress, "ACDC volumes"):
            convert(vol_dir / f"{case}.h5", folder / "imagesTs" / f"{case}_0000.nii.gz",
                    folder / "labelsTs" / f"{case}.nii.gz")
        generate_dataset_json(
            folder, {0: "MRI"}, {"background": 0, "RV": 1, "MYO": 2, "LV": 3}, len(train), ".nii.gz",
            dataset_name=folder.name,
            description="ACDC cine-MRI, SSL4MIS preprocessing: 2-D training slices stored as (1, H, W) NIfTI, "
                        "val/test 3-D volumes in imagesTs/labelsTs; spacing unknown (1.0)",
            reference="Bernard et al., IEEE TMI 2018; SSL4MIS (Luo et al.)",
            license="non-commercial research (ACDC)",
            splits="splits.json: train = imagesTr slice ids, val/test = imagesTs volume ids (SSL4MIS lists)",
        )
        save_splits({"train": train, "val": val, "test": test}, folder / "splits.json")
    return staged.final


# ============================================================================================ 2-D folders
def _natural_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and image_extension(p) in NATURAL_EXTENSIONS)


def _mask_key(stem: str) -> str | None:
    low = stem.lower()
    for suffix in MASK_SUFFIXES:
        if low.endswith(suffix):
            return stem[: -len(suffix)]
    return None


def _find_dirs(source: Path) -> tuple[Path, Path]:
    subdirs = [d for d in source.iterdir() if d.is_dir() and not d.name.startswith(".")]

    def pick(names: tuple[str, ...], loose: tuple[str, ...]) -> Path | None:
        exact = [d for d in subdirs if d.name.lower() in names]
        if len(exact) == 1:
            return exact[0]
        fuzzy = [d for d in subdirs if any(w in d.name.lower() for w in loose)]
        return fuzzy[0] if len(fuzzy) == 1 else None

    images = pick(_IMAGE_DIR_NAMES, ("input", "image"))
    masks = pick(_MASK_DIR_NAMES, ("groundtruth", "mask", "label", "segmentation"))
    if images is not None and masks is not None and images != masks:
        return images, masks
    return source, source


def pair_images_and_masks(images_dir: str | Path, masks_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """Pair 2-D images with masks by file stem.

    A mask matches an image with the same stem, or the image stem plus one of :data:`MASK_SUFFIXES`
    (case-insensitive; e.g. ISIC ``ISIC_0000000.jpg`` + ``ISIC_0000000_segmentation.png``). When both folders
    are the same, files with a mask suffix are the masks.

    Returns:
        Sorted ``[(case_id, image_path, mask_path), ...]``.

    Raises:
        ValueError: unpaired or duplicated files (all of them are listed).
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"folder not found: {d}")
    image_files = _natural_files(images_dir)
    mask_files = _natural_files(masks_dir)
    if images_dir == masks_dir:
        mask_files = [p for p in image_files if _mask_key(p.stem) is not None]
        image_files = [p for p in image_files if _mask_key(p.stem) is None]
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    duplicates: list[str] = []
    for p in image_files:
        if p.stem in images:
            duplicates.append(f"{images[p.stem].name} / {p.name}")
        images[p.stem] = p
    for p in mask_files:
        key = p.stem if p.stem in images else (_mask_key(p.stem) or p.stem)
        if key in masks:
            duplicates.append(f"{masks[key].name} / {p.name}")
        masks[key] = p
    unpaired_images = sorted(str(images[k]) for k in images.keys() - masks.keys())
    unpaired_masks = sorted(str(masks[k]) for k in masks.keys() - images.keys())
    if duplicates or unpaired_images or unpaired_masks:
        parts = []
        for title, items in (("duplicate stems", duplicates), ("images without a mask", unpaired_images),
                             ("masks without an image", unpaired_masks)):
            if items:
                shown = ", ".join(items[:20]) + (f", ... ({len(items) - 20} more)" if len(items) > 20 else "")
                parts.append(f"{len(items)} {title}: {shown}")
        raise ValueError(f"cannot pair images in {images_dir} with masks in {masks_dir}: " + "; ".join(parts))
    if not images:
        raise ValueError(f"no images ({', '.join(NATURAL_EXTENSIONS)}) found in {images_dir}")
    return [(k, images[k], masks[k]) for k in sorted(images)]


def _mask_to_2d(mask: np.ndarray, path: Path, lossy: bool) -> np.ndarray:
    if mask.ndim == 3:
        rgb = mask[..., :3].astype(np.int32)
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return mask[..., 0]
        if lossy:
            return rgb.mean(axis=-1)
        raise ValueError(f"{path}: colour mask with differing channels; colour-coded classes are not supported")
    return mask


def _decide_mapping(pairs, threshold: float, max_classes: int, progress: bool) -> dict[str, Any]:
    if any(image_extension(m) in LOSSY_EXTENSIONS for _, _, m in pairs):
        return {"mode": "threshold", "threshold": threshold}
    values: set[int] = set()
    for _, _, m in _progress(pairs, progress, "mask values"):
        arr = _mask_to_2d(read_image(m)[0], m, False)
        values.update(int(v) for v in np.unique(arr))
        if len(values) > max_classes:
            return {"mode": "threshold", "threshold": threshold}
    if values <= set(range(max_classes)):
        return {"mode": "identity", "values": sorted(values)}
    return {"mode": "map", "values": sorted(values)}


def _apply_mapping(mask: np.ndarray, mapping: dict[str, Any], path: Path) -> np.ndarray:
    if mapping["mode"] == "threshold":
        return (mask > mapping["threshold"]).astype(np.uint8)
    if mapping["mode"] == "identity":
        return mask.astype(np.uint8)
    lut = {v: i for i, v in enumerate(mapping["values"])}
    out = np.zeros(mask.shape, dtype=np.uint8)
    for v in np.unique(mask):
        if int(v) not in lut:
            raise ValueError(f"{path}: mask value {v} not seen when the label mapping was built")
        out[mask == v] = lut[int(v)]
    return out


def convert_folders_2d(
    source: str | Path,
    out_root: str | Path,
    dataset_id: int,
    name: str,
    *,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
    limit: int | None = None,
    threshold: float = 127,
    max_classes: int = 10,
    foreground_name: str = "foreground",
    split_seed: int | None = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Convert a folder of 2-D images and masks (Kvasir-SEG, DSB2018, ISIC ...) into nnU-Net raw (PNG).

    Folders: ``images_dir``/``masks_dir`` if given, else sub-folders of ``source`` named like ``images``/``masks``
    (or ISIC's ``*_Input``/``*_GroundTruth``), else ``source`` itself with ``*_segmentation`` masks.

    Masks: if any mask is JPEG (lossy) or the masks hold more than ``max_classes`` distinct values (interpolated
    0..255), they are binarised with ``> threshold``; values already in ``0..max_classes-1`` are kept; other small
    value sets (e.g. {0, 255} or {0, 128, 255}) are mapped to 0, 1, 2... in sorted order. The rule is recorded in
    dataset.json under ``mask_mapping``.

    Images: if any image is colour, all are written as RGB ``{case}_0000.png`` (alpha dropped, greyscale
    replicated) with ``channel_names`` R, G, B; otherwise greyscale with one channel ``"grey"``.

    Args:
        source: dataset folder.
        out_root: where ``DatasetXXX_Name`` is created.
        dataset_id: nnU-Net dataset id.
        name: dataset name.
        images_dir, masks_dir: explicit folders (override the detection).
        limit: convert only the first ``limit`` pairs (sorted by case id).
        threshold: binarisation threshold for lossy/interpolated masks.
        max_classes: most distinct mask values treated as classes.
        foreground_name: label name of class 1 for binary masks.
        split_seed: write ``splits.json`` (seeded 80/10/10 train/val/test over imagesTr case ids via
            :func:`mambaseg.data.splits.make_splits`); None writes none.
        overwrite: replace a dataset folder that already holds a conversion
            (:func:`mambaseg.data.nnunet_raw.StagedDatasetFolder`).
        progress: show tqdm bars.

    Returns:
        The dataset folder.
    """
    src = Path(source)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    if images_dir is None or masks_dir is None:
        found_images, found_masks = _find_dirs(src)
        images_dir = images_dir or found_images
        masks_dir = masks_dir or found_masks
    pairs = pair_images_and_masks(images_dir, masks_dir)
    if limit is not None:
        pairs = pairs[:limit]
    image_mod = _pil()
    colour = False
    for _, img, _ in pairs:
        with image_mod.open(img) as im:
            if im.mode not in ("L", "I", "I;16", "1", "F", "LA"):
                colour = True
                break
    mapping = _decide_mapping(pairs, threshold, max_classes, progress)
    staged = StagedDatasetFolder(out_root, dataset_id, name, overwrite)
    with staged as folder:
        for case, img_path, mask_path in _progress(pairs, progress, "images"):
            image, _ = read_image(img_path)
            if colour:
                image = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]
            mask = _mask_to_2d(read_image(mask_path)[0], mask_path, image_extension(mask_path) in LOSSY_EXTENSIONS)
            if mask.shape != image.shape[:2]:
                raise ValueError(f"size mismatch: image {img_path} is {image.shape[:2]}, mask {mask_path} is "
                                 f"{mask.shape}")
            write_image(image, None, folder / "imagesTr" / f"{case}_0000.png")
            write_image(_apply_mapping(mask, mapping, mask_path), None, folder / "labelsTr" / f"{case}.png", label=True)
        if mapping["mode"] == "threshold":
            labels = {"background": 0, foreground_name: 1}
        else:
            n = len(mapping["values"]) if mapping["mode"] == "map" else max(mapping["values"]) + 1
            n = max(n, 2)
            labels = {"background": 0, **({foreground_name: 1} if n == 2 else {f"class_{i}": i for i in range(1, n)})}
        channels = {0: "R", 1: "G", 2: "B"} if colour else {0: "grey"}
        cases = [c for c, _, _ in pairs]
        generate_dataset_json(folder, channels, labels, len(cases), ".png", dataset_name=folder.name,
                              description=f"converted from {src.name} by mambaseg", mask_mapping=mapping)
        if split_seed is not None and len(cases) >= 3:
            make_splits(cases, seed=split_seed, out=folder / "splits.json")
    return staged.final


def _pil():
    from PIL import Image

    return Image


# ============================================================================================ MSD
def convert_msd(
    source: str | Path,
    out_root: str | Path,
    dataset_id: int | None = None,
    name: str | None = None,
    *,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Convert a Medical Segmentation Decathlon ``TaskNN_Name`` folder into nnU-Net v2 raw.

    Splits 4-D ``imagesTr``/``imagesTs`` NIfTI files into per-channel 3-D files ``{case}_{XXXX}.nii.gz``
    (spacing, origin and 3x3 direction kept), copies labels, skips files starting with ``.`` or ``_`` (macOS
    resource forks), and rewrites dataset.json: ``modality`` → ``channel_names``, ``labels`` inverted to
    name → int, ``file_ending`` ``.nii.gz``, ``training``/``test`` dropped.

    Args:
        source: the ``TaskNN_Name`` folder.
        out_root: where ``DatasetXXX_Name`` is created.
        dataset_id: defaults to NN from the task name.
        name: defaults to Name from the task name.
        limit: convert only the first ``limit`` training and test cases.
        overwrite: replace a dataset folder that already holds a conversion
            (:func:`mambaseg.data.nnunet_raw.StagedDatasetFolder`).
        progress: show tqdm bars.

    Returns:
        The dataset folder.
    """
    src = Path(source)
    if not (src / "dataset.json").is_file():
        raise FileNotFoundError(f"{src}: not an MSD task folder (no dataset.json)")
    m = re.fullmatch(r"Task(\d+)_(.+)", src.name)
    if dataset_id is None or name is None:
        if m is None:
            raise ValueError(f"{src.name} is not named TaskNN_Name: pass dataset_id and name")
        dataset_id = int(m[1]) if dataset_id is None else dataset_id
        name = m[2] if name is None else name
    info = json.loads((src / "dataset.json").read_text())
    modality = info.get("modality") or info.get("channel_names")
    if not modality or "labels" not in info:
        raise ValueError(f"{src / 'dataset.json'}: needs 'modality' and 'labels' (MSD format)")
    n_channels = len(modality)
    staged = StagedDatasetFolder(out_root, int(dataset_id), name, overwrite)
    with staged as folder:

        def cases_in(sub: str) -> list[Path]:
            d = src / sub
            if not d.is_dir():
                return []
            files = sorted(p for p in d.iterdir() if p.name.endswith(".nii.gz") and p.name[0] not in "._")
            return files[:limit] if limit is not None else files

        def split(path: Path, out_dir: Path) -> str:
            case = path.name[: -len(".nii.gz")]
            out_dir.mkdir(parents=True, exist_ok=True)
            arr, meta = read_image(path)
            if arr.ndim == 3 and n_channels == 1:
                shutil.copyfile(path, out_dir / f"{case}_0000.nii.gz")
                return case
            if arr.ndim != 4 or arr.shape[0] != n_channels:
                raise ValueError(f"{path}: expected {n_channels} channel(s) (modality {modality}), got array "
                                 f"{arr.shape}")
            sub_meta = meta.subset((1, 2, 3))
            for c in range(n_channels):
                write_image(arr[c], sub_meta, out_dir / f"{case}_{c:04d}.nii.gz")
            return case

        train = []
        for p in _progress(cases_in("imagesTr"), progress, "imagesTr"):
            case = split(p, folder / "imagesTr")
            label = src / "labelsTr" / p.name
            if not label.is_file():
                raise FileNotFoundError(f"label missing for {p}: {label}")
            shutil.copyfile(label, folder / "labelsTr" / p.name)
            train.append(case)
        for p in _progress(cases_in("imagesTs"), progress, "imagesTs"):
            split(p, folder / "imagesTs")
        labels = {str(v): int(k) for k, v in info["labels"].items()}
        extra = {k: info[k] for k in ("reference", "release", "tensorImageSize") if k in info}
        generate_dataset_json(folder, dict(modality), labels, len(train), ".nii.gz", dataset_name=folder.name,
                              description=info.get("description"), license=info.get("licence", info.get("license")),
                              **extra)
    return staged.final
