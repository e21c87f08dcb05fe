"""The nnU-Net v2 raw dataset layout, mambaseg's native dataset format.

Layout (``documentation/dataset_format.md`` of MIC-DKFZ/nnUNet)::

    DatasetXXX_Name/
    ├── dataset.json      channel_names {"0": "T2", ...}, labels {"background": 0, ...}, numTraining, file_ending
    ├── imagesTr/         {case}_{XXXX}{file_ending}  (XXXX = 4-digit channel index)
    ├── labelsTr/         {case}{file_ending}
    ├── imagesTs/         optional, same naming
    └── labelsTs/         optional (not part of nnU-Net; used by mambaseg and nnUZoo for test evaluation)

Colour 2-D images follow nnU-Net's ``NaturalImage2DIO``: one ``{case}_0000.png`` file holds the three channels and
``channel_names`` is ``{"0": "R", "1": "G", "2": "B"}``. Region-based labels (``"whole tumor": [1, 2, 3]``) are
supported for reading: :func:`label_values` lists every integer that may appear in a label file, and
``regions_class_order`` must be present (checked by :func:`mambaseg.data.check.check_dataset`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .io import ImageMeta, as_label_array, geometry_close, read_image

__all__ = [
    "REQUIRED_KEYS",
    "RawDataset",
    "StagedDatasetFolder",
    "dataset_folder_name",
    "expected_channel_indices",
    "generate_dataset_json",
    "has_regions",
    "label_values",
    "scan_image_folder",
]

REQUIRED_KEYS = ("labels", "channel_names", "numTraining", "file_ending")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``DatasetXXX_Name`` with a 3-digit id, as nnU-Net names dataset folders."""
    if not 0 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset id must be in 0..999, got {dataset_id}")
    if not name or re.search(r"[\s/\\]", name):
        raise ValueError(f"dataset name must be non-empty without spaces or slashes, got {name!r}")
    return f"Dataset{int(dataset_id):03d}_{name}"


#: What a converter writes into a dataset folder; ``overwrite`` replaces exactly these.
_CONVERTED = ("imagesTr", "labelsTr", "imagesTs", "labelsTs", "dataset.json", "splits.json")
_STAGING = ".mambaseg-converting"


class StagedDatasetFolder:
    """Where a converter writes ``out_root/DatasetXXX_Name``: a staging copy that replaces the folder on success.

    Usage::

        staged = StagedDatasetFolder(out_root, 5, "Prostate", overwrite)   # refuses a converted folder here
        with staged as folder:      # folder: out_root/.mambaseg-converting/Dataset005_Prostate, with imagesTr/labelsTr
            ...write cases, dataset.json, splits.json...
        return staged.final         # out_root/Dataset005_Prostate

    A folder that already holds converted data (a non-empty images/labels folder, ``dataset.json`` or
    ``splits.json``) is refused unless ``overwrite``, so that a second conversion never mixes its cases with an
    earlier one's. The conversion is written to the staging folder; only when the ``with`` block ends without an
    error does it replace the converted items of the final folder (nothing else there), so a corrupt source file
    found half-way leaves the earlier dataset untouched and no half-written one.

    Raises:
        FileExistsError: the final folder holds converted data and ``overwrite`` is False.
    """

    def __init__(self, out_root: str | Path, dataset_id: int, name: str, overwrite: bool = False) -> None:
        self.final = Path(out_root) / dataset_folder_name(dataset_id, name)
        self.path = Path(out_root) / _STAGING / self.final.name
        self._aside = self.path.parent / f"{self.final.name}.replaced"
        if self._aside.exists():
            raise FileExistsError(f"{self._aside} holds the files of {self.final} that an earlier conversion could "
                                  f"not put back: move them back into {self.final} (or delete them) first")
        held = [n for n in _CONVERTED if (self.final / n).is_file()
                or ((self.final / n).is_dir() and any((self.final / n).iterdir()))]
        if held and not overwrite:
            raise FileExistsError(f"{self.final} already holds a converted dataset ({', '.join(held)}); pass "
                                  f"--overwrite (overwrite=True) to replace it, or choose another --id/--name")

    def __enter__(self) -> Path:
        shutil.rmtree(self.path, ignore_errors=True)  # what an earlier, killed conversion left
        for sub in ("imagesTr", "labelsTr"):
            (self.path / sub).mkdir(parents=True)
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._swap_in()
        finally:
            shutil.rmtree(self.path, ignore_errors=True)
            try:
                self.path.parent.rmdir()
            except OSError:
                pass  # not empty: another conversion is staging there, or a replaced dataset could not be restored

    def _swap_in(self) -> None:
        """Move the final folder's converted items aside, the staged ones in, then drop the old ones. On an error
        the old items go back; should that fail too, they stay in ``.mambaseg-converting/<name>.replaced``.
        (``shutil.move`` also works across file systems, e.g. for a symlinked dataset folder.)"""
        self.final.mkdir(parents=True, exist_ok=True)
        aside = self._aside
        aside.mkdir(parents=True)
        moved_aside: list[str] = []
        moved_in: list[str] = []
        try:
            for n in _CONVERTED:
                if (self.final / n).exists() or (self.final / n).is_symlink():
                    shutil.move(str(self.final / n), str(aside / n))
                    moved_aside.append(n)
            for n in _CONVERTED:
                if (self.path / n).exists():
                    shutil.move(str(self.path / n), str(self.final / n))
                    moved_in.append(n)
        except BaseException:
            for n in moved_in:
                _remove(self.final / n)
            for n in moved_aside:
                shutil.move(str(aside / n), str(self.final / n))
            aside.rmdir()  # empty once everything is back
            raise
        shutil.rmtree(aside)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def has_regions(labels: dict[str, Any]) -> bool:
    """True if any label is a region (a list/tuple of several integer labels)."""
    return any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values())


def label_values(labels: dict[str, Any]) -> list[int]:
    """Sorted integers that may appear in label files: every label and region member, the ignore label included.

    Args:
        labels: dataset.json ``labels`` (name → int, or name → list of ints for regions).
    """
    values: set[int] = set()
    for v in labels.values():
        if isinstance(v, (list, tuple)):
            values.update(int(i) for i in v)
        else:
            values.add(int(v))
    return sorted(values)


def _channel_pattern(file_ending: str) -> re.Pattern[str]:
    return re.compile(r"(?P<case>.+)_(?P<channel>\d{4})" + re.escape(file_ending) + r"\Z")


def scan_image_folder(folder: Path, file_ending: str) -> tuple[dict[str, dict[int, Path]], list[Path]]:
    """Group ``{case}_{XXXX}{file_ending}`` files of ``folder`` by case.

    Returns:
        ``(cases, unmatched)``: case id → {channel index → path}, and the files that do not follow the naming.
    """
    cases: dict[str, dict[int, Path]] = {}
    unmatched: list[Path] = []
    if not folder.is_dir():
        return cases, unmatched
    pattern = _channel_pattern(file_ending)
    for f in sorted(folder.iterdir()):
        m = pattern.match(f.name)
        if m and (f.is_file() or f.is_dir()):
            cases.setdefault(m["case"], {})[int(m["channel"])] = f
        else:
            unmatched.append(f)
    return cases, unmatched


def expected_channel_indices(file_ending: str, num_channels: int, present: Iterable[int]) -> set[int]:
    """The channel file indices a case must have: ``0..C-1``, or only ``0`` when the case is one colour file
    (a PNG/JPEG/TIFF/BMP dataset with 3 or 4 channels in ``channel_names`` and a single ``_0000`` file)."""
    colour_file = file_ending in (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg") and num_channels in (3, 4)
    return {0} if colour_file and set(present) == {0} else set(range(num_channels))


def load_dataset_json(folder: str | Path) -> dict[str, Any]:
    """Read ``folder/dataset.json`` with a clear error when it is missing or not valid JSON."""
    path = Path(folder) / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"no dataset.json in {folder}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


class RawDataset:
    """Read access to an nnU-Net v2 raw dataset folder.

    Args:
        path: the ``DatasetXXX_Name`` folder.

    Attributes:
        path: the folder.
        dataset_json: the parsed dataset.json.
        channel_names: ``{"0": name, ...}`` (the v1 key ``modality`` is accepted as a fallback).
        labels: ``{name: int | list[int]}``.
        file_ending: e.g. ``".nii.gz"`` or ``".png"``.
        num_training: ``numTraining`` from dataset.json.
        cases: sorted training case ids.
        test_cases: sorted case ids found in ``imagesTs`` (empty if there is none).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.path}")
        self.dataset_json = load_dataset_json(self.path)
        missing = [k for k in REQUIRED_KEYS if k not in self.dataset_json and not (
            k == "channel_names" and "modality" in self.dataset_json)]
        if missing:
            raise ValueError(f"{self.path / 'dataset.json'} lacks required keys {missing} (required: {REQUIRED_KEYS})")
        self.channel_names: dict[str, str] = dict(
            self.dataset_json.get("channel_names", self.dataset_json.get("modality", {})))
        self.labels: dict[str, Any] = dict(self.dataset_json["labels"])
        self.file_ending: str = self.dataset_json["file_ending"]
        self.num_training: int = int(self.dataset_json["numTraining"])
        self.regions_class_order = self.dataset_json.get("regions_class_order")
        self._explicit = self._explicit_cases()
        if self._explicit is not None:
            self._train = {c: dict(enumerate(v["images"])) for c, v in self._explicit.items()}
        else:
            self._train, _ = scan_image_folder(self.path / "imagesTr", self.file_ending)
        self._test, _ = scan_image_folder(self.path / "imagesTs", self.file_ending)
        self.cases: list[str] = sorted(self._train)
        self.test_cases: list[str] = sorted(self._test)

    def _explicit_cases(self) -> dict[str, dict[str, Any]] | None:
        entries = self.dataset_json.get("dataset")
        if entries is None:
            return None
        out = {}
        for case, item in entries.items():
            images = [self._resolve(p) for p in item["images"]]
            out[case] = {"images": images, "label": self._resolve(item["label"]) if item.get("label") else None}
        return out

    def _resolve(self, p: str) -> Path:
        q = Path(os.path.expandvars(p))
        return q if q.is_absolute() else self.path / q

    # ------------------------------------------------------------------------------------------- properties
    @property
    def num_channels(self) -> int:
        """Number of input channels (RGB in one PNG counts 3)."""
        return len(self.channel_names)

    @property
    def has_regions(self) -> bool:
        """Whether ``labels`` defines regions (region-based training)."""
        return has_regions(self.labels)

    @property
    def all_labels(self) -> list[int]:
        """Sorted integer values that label files may contain."""
        return label_values(self.labels)

    @property
    def ignore_label(self) -> int | None:
        """The value of the label named ``"ignore"``, if any."""
        v = self.labels.get("ignore")
        return None if v is None else int(v)

    def __len__(self) -> int:
        return len(self.cases)

    def __repr__(self) -> str:
        return (f"RawDataset({str(self.path)!r}, cases={len(self.cases)}, test_cases={len(self.test_cases)}, "
                f"channels={list(self.channel_names.values())}, file_ending={self.file_ending!r})")

    # ------------------------------------------------------------------------------------------- files
    def image_files(self, case: str, test: bool = False) -> list[Path]:
        """Image files of ``case`` in channel order (one file for an RGB PNG).

        Args:
            case: case id.
            test: look in ``imagesTs`` instead of ``imagesTr``.

        Raises:
            KeyError: unknown case. ValueError: a channel file is missing (names the file).
        """
        table = self._test if test else self._train
        if case not in table:
            where = "imagesTs" if test else ("dataset.json 'dataset'" if self._explicit is not None else "imagesTr")
            raise KeyError(f"case {case!r} not found in {self.path / where}")
        files = [table[case][k] for k in sorted(table[case])]
        n = len(self.channel_names)
        missing = sorted(expected_channel_indices(self.file_ending, n, table[case]) - set(table[case]))
        if n and missing:
            names = [str(files[0].parent / f"{case}_{c:04d}{self.file_ending}") for c in missing]
            raise ValueError(f"case {case!r} lacks channel file(s) {names} ({n} channel(s) in dataset.json "
                             f"channel_names)")
        return files

    def label_file(self, case: str, test: bool = False) -> Path | None:
        """The label file of ``case`` (``labelsTr``, or ``labelsTs`` with ``test=True``); None if it does not exist."""
        if not test and self._explicit is not None:
            if case not in self._explicit:
                raise KeyError(f"case {case!r} not in dataset.json 'dataset' of {self.path}")
            return self._explicit[case]["label"]
        f = self.path / ("labelsTs" if test else "labelsTr") / f"{case}{self.file_ending}"
        return f if f.exists() else None

    # ------------------------------------------------------------------------------------------- loading
    def load_images(self, case: str, test: bool = False) -> tuple[np.ndarray, ImageMeta]:
        """Read all channels of ``case``.

        Returns:
            ``(image, meta)``: image ``(C, *spatial)`` float32 (``(C, z, y, x)`` or ``(C, H, W)``) and the geometry
            of the first channel file.
        """
        files = self.image_files(case, test)
        return stack_channels(files)

    def load_case(self, case: str, test: bool = False) -> tuple[np.ndarray, np.ndarray | None, ImageMeta]:
        """Read one case.

        Args:
            case: case id.
            test: read from ``imagesTs``/``labelsTs``.

        Returns:
            ``(image, label, meta)``: image ``(C, *spatial)`` float32; label ``(*spatial)`` unsigned integer
            (uint8/uint16/uint32, the smallest that fits) or None when there is no label file; meta of the first
            image file (spatial axes only, array axis order).

        Raises:
            ValueError: channels or label disagree in shape or spacing, or the label is not an integer map.
        """
        image, meta = self.load_images(case, test)
        lf = self.label_file(case, test)
        if lf is None:
            return image, None, meta
        label, label_meta = read_image(lf)
        if label.ndim != image.ndim - 1:
            raise ValueError(f"{lf}: label has shape {label.shape}, images of {case!r} have spatial shape "
                             f"{image.shape[1:]} (a colour label image?)")
        if label.shape != image.shape[1:]:
            raise ValueError(f"{lf}: label shape {label.shape} != image spatial shape {image.shape[1:]}")
        if not geometry_close(label_meta, meta)["spacing"]:  # nnU-Net's integrity check refuses this too
            raise ValueError(f"{lf}: label spacing {label_meta.spacing} != image spacing {meta.spacing} "
                             f"({self.image_files(case, test)[0].name})")
        return image, as_label_array(label, str(lf)), meta


def stack_channels(files: list[Path]) -> tuple[np.ndarray, ImageMeta]:
    """Read channel files and stack them channels-first; colour images contribute 3 (or 4) channels.

    Returns:
        ``(image (C, *spatial) float32, meta of the first file)``.
    """
    arrays = []
    meta = None
    for f in files:
        arr, m = read_image(f)
        if m.extra.get("channel_axis") == -1:
            arr = np.moveaxis(arr, -1, 0)
        else:
            arr = arr[None]
        if meta is None:
            meta = m
        elif arr.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(f"channel files disagree in shape: {files[0]} {arrays[0].shape[1:]} vs {f} "
                             f"{arr.shape[1:]}")
        arrays.append(arr)
    if meta is None:
        raise ValueError("no image files given")
    return np.concatenate(arrays, axis=0).astype(np.float32, copy=False), meta


def generate_dataset_json(
    output_folder: str | Path,
    channel_names: dict[int | str, str],
    labels: dict[str, int | list[int] | tuple[int, ...]],
    num_training_cases: int,
    file_ending: str,
    *,
    dataset_name: str | None = None,
    reference: str | None = None,
    release: str | None = None,
    license: str | None = None,
    description: str | None = None,
    overwrite_image_reader_writer: str | None = None,
    regions_class_order: list[int] | None = None,
    **kwargs: Any,
) -> Path:
    """Write ``dataset.json`` (nnU-Net v2), mirroring nnU-Net's ``generate_dataset_json``.

    Args:
        output_folder: the dataset folder.
        channel_names: channel index → name, e.g. ``{0: "T2", 1: "ADC"}`` or ``{0: "R", 1: "G", 2: "B"}``.
        labels: name → int, or name → list of ints for regions; ``background`` must be 0.
        num_training_cases: number of training cases.
        file_ending: e.g. ``".nii.gz"`` or ``".png"``.
        dataset_name, reference, release, license, description: descriptive keys.
        overwrite_image_reader_writer: nnU-Net reader class name, e.g. ``"NaturalImage2DIO"``.
        regions_class_order: required by nnU-Net when ``labels`` has regions.
        **kwargs: written as extra keys.

    Returns:
        The path of the written dataset.json.
    """
    out_labels: dict[str, Any] = {}
    for k, v in labels.items():
        out_labels[str(k)] = [int(i) for i in v] if isinstance(v, (list, tuple)) else int(v)
    if has_regions(out_labels) and regions_class_order is None:
        raise ValueError("region-based labels need regions_class_order (nnU-Net requires it)")
    data: dict[str, Any] = {
        "channel_names": {str(k): str(v) for k, v in channel_names.items()},
        "labels": out_labels,
        "numTraining": int(num_training_cases),
        "file_ending": file_ending,
    }
    for key, value in (("name", dataset_name), ("reference", reference), ("release", release),
                       ("licence", license), ("description", description),
                       ("overwrite_image_reader_writer", overwrite_image_reader_writer),
                       ("regions_class_order", regions_class_order)):
        if value is not None:
            data[key] = value
    data.update(kwargs)
    path = Path(output_folder) / "dataset.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4) + "\n")
    return path
