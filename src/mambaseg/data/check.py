"""Dataset integrity check for nnU-Net v2 raw folders, reporting every problem at once.

:func:`check_dataset` runs every check of nnU-Net v2's ``verify_dataset_integrity``
(``nnunetv2/experiment_planning/verify_dataset_integrity.py``):

1. ``dataset.json`` exists; ``imagesTr``/``labelsTr`` exist (unless a ``dataset`` key lists files);
2. required keys ``labels``, ``channel_names``, ``numTraining``, ``file_ending``;
3. the number of cases equals ``numTraining``;
4. every case has its label file (and, with a ``dataset`` key, every listed file exists);
5. label values in dataset.json are consecutive (ignore label appended);
6. label files hold only expected values;
7. NaN in images or labels; image/label spatial shape; spacing (``np.allclose``); number of channels;
8. origin and direction of images vs label (nnU-Net only warns; here errors by default, beyond tolerance);

and adds: every case has *all* channel files, no extra/unmatched files, channel_names keys are ``0..C-1``,
background is 0, the ignore label is the highest, regions need ``regions_class_order``, unreadable/corrupt files,
inf in images, constant (empty) images, non-integer label dtype (warning if values are integral, error if not),
label maps that contain only background (the warning nnU-Net intended), channels of one case disagreeing in
geometry, NIfTI files whose qform and sform differ (warning, nibabel), direction matrices that differ between
cases (warning), cases of another dimensionality than the rest (a 2D file among 3D volumes), and completeness of
``imagesTs``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .io import (
    SUPPORTED_EXTENSIONS,
    ImageMeta,
    ImageReadError,
    geometry_close,
    image_extension,
    read_image,
)
from .nnunet_raw import REQUIRED_KEYS, expected_channel_indices, has_regions, label_values, scan_image_folder

__all__ = ["Problem", "check_dataset", "format_problems"]


@dataclass(frozen=True)
class Problem:
    """One finding of :func:`check_dataset`.

    Attributes:
        severity: ``"error"`` (nnU-Net would refuse the dataset or results would be wrong) or ``"warning"``.
        file: the file concerned (``""`` for dataset-wide problems).
        message: what is wrong, with the numbers involved.
        code: a stable short identifier, e.g. ``"missing_channel"``, ``"label_values"``, ``"shape_mismatch"``.
    """

    severity: str
    file: str
    message: str
    code: str = ""


class _Report:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, code: str, file: Any, message: str) -> None:
        self.problems.append(Problem("error", str(file) if file else "", message, code))

    def warning(self, code: str, file: Any, message: str) -> None:
        self.problems.append(Problem("warning", str(file) if file else "", message, code))


def _progress(items: Iterable, enabled: bool, desc: str) -> Iterable:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False)


def check_dataset(
    path: str | Path,
    *,
    strict_geometry: bool = True,
    origin_atol: float = 1e-3,
    direction_atol: float = 1e-4,
    progress: bool = False,
) -> list[Problem]:
    """Check an nnU-Net v2 raw dataset folder and return every problem found.

    Args:
        path: the ``DatasetXXX_Name`` folder.
        strict_geometry: origin/direction mismatches between a case's images and label are errors (True) or
            warnings as in nnU-Net (False).
        origin_atol: origin tolerance in mm.
        direction_atol: tolerance on direction cosines.
        progress: show a tqdm bar over cases.

    Returns:
        Problems, errors and warnings, in discovery order; empty if the dataset is clean.
    """
    folder = Path(path)
    rep = _Report()
    dj_path = folder / "dataset.json"
    if not folder.is_dir():
        rep.error("missing_folder", folder, "dataset folder does not exist")
        return rep.problems
    if not dj_path.is_file():
        rep.error("missing_dataset_json", dj_path, "dataset.json is missing")
        return rep.problems
    try:
        dj = json.loads(dj_path.read_text())
    except json.JSONDecodeError as err:
        rep.error("invalid_json", dj_path, f"dataset.json is not valid JSON: {err}")
        return rep.problems
    if not isinstance(dj, dict):
        rep.error("invalid_json", dj_path, "dataset.json must hold a JSON object")
        return rep.problems

    explicit = "dataset" in dj
    if not explicit:
        for sub in ("imagesTr", "labelsTr"):
            if not (folder / sub).is_dir():
                rep.error("missing_folder", folder / sub, f"{sub}/ folder is missing")

    missing = [k for k in REQUIRED_KEYS if k not in dj]
    if "channel_names" in missing and "modality" in dj:
        missing.remove("channel_names")
        rep.warning("v1_key", dj_path, "uses the nnU-Net v1 key 'modality'; v2 expects 'channel_names'")
    if missing:
        unused = [k for k in dj if k not in REQUIRED_KEYS]
        rep.error("missing_key", dj_path, f"dataset.json lacks required key(s) {missing}; required: "
                  f"{list(REQUIRED_KEYS)}; present: {list(dj)}; unused by nnU-Net: {unused}")

    channel_names = dj.get("channel_names", dj.get("modality"))
    num_channels = None
    if channel_names is not None:
        if not isinstance(channel_names, dict) or not channel_names:
            rep.error("channel_names", dj_path, f"channel_names must be a non-empty object, got {channel_names!r}")
        else:
            num_channels = len(channel_names)
            if sorted(channel_names) != [str(i) for i in range(num_channels)]:
                rep.error("channel_names", dj_path,
                          f"channel_names keys must be '0'..'{num_channels - 1}', got {sorted(channel_names)}")

    expected_labels = _check_labels(dj, dj_path, rep)

    file_ending = dj.get("file_ending")
    if file_ending is None:
        return rep.problems
    if image_extension("x" + file_ending) not in SUPPORTED_EXTENSIONS or not file_ending.startswith("."):
        rep.error("file_ending", dj_path, f"file_ending {file_ending!r} is not supported; supported: "
                  f"{', '.join(SUPPORTED_EXTENSIONS)}")
        return rep.problems

    cases = _collect_cases(folder, dj, file_ending, explicit, num_channels, rep)
    if "numTraining" in dj and len(cases) != dj["numTraining"]:
        rep.error("num_training", dj_path, f"numTraining is {dj['numTraining']} but {len(cases)} training cases "
                  f"were found (first: {sorted(cases)[:5]})")
    _check_test_folder(folder, file_ending, num_channels, rep)

    directions: dict[str, tuple[float, ...]] = {}
    for case in _progress(sorted(cases), progress, "checking cases"):
        images, label = cases[case]
        d = _check_case(case, images, label, num_channels, expected_labels, rep, strict_geometry,
                        origin_atol, direction_atol)
        if d is not None:
            directions[case] = d
    ndims = {c: round(len(d) ** 0.5) for c, d in directions.items()}  # a direction matrix is ndim x ndim
    if len(set(ndims.values())) > 1:
        common_ndim, _ = Counter(ndims.values()).most_common(1)[0]
        for case in sorted(c for c, n in ndims.items() if n != common_ndim):
            rep.error("dimensionality", cases[case][0][0], f"case {case!r} is {ndims[case]}D, the other cases are "
                      f"{common_ndim}D (one network cannot train on both)")
        directions = {c: d for c, d in directions.items() if ndims[c] == common_ndim}
    if len(directions) > 1:
        rounded = {c: tuple(float(v) for v in np.round(d, 3)) for c, d in directions.items()}
        common, _ = Counter(rounded.values()).most_common(1)[0]
        odd = sorted(c for c, d in rounded.items() if d != common)
        if odd:
            rep.warning("orientation", folder, f"{len(odd)} case(s) have a direction matrix different from the "
                        f"majority {common}: {odd[:10]}{' ...' if len(odd) > 10 else ''}")
    return rep.problems


def _check_labels(dj: dict, dj_path: Path, rep: _Report) -> list[int] | None:
    labels = dj.get("labels")
    if labels is None:
        return None
    if not isinstance(labels, dict) or not labels:
        rep.error("labels", dj_path, f"labels must be a non-empty object name -> int, got {labels!r}")
        return None
    bad = {k: v for k, v in labels.items() if not (
        isinstance(v, int) and not isinstance(v, bool)
        or isinstance(v, (list, tuple)) and v and all(isinstance(i, int) for i in v))}
    if bad:
        rep.error("labels", dj_path, f"label values must be integers (or lists for regions): {bad}; "
                  "note v2 maps name -> int (MSD/v1 maps int -> name)")
        return None
    values = label_values(labels)
    if 0 not in values:
        rep.error("labels", dj_path, f"background must be label 0; labels are {labels}")
    if any(v < 0 for v in values):
        rep.error("labels", dj_path, f"negative label values in {labels}")
    ignore = labels.get("ignore")
    if ignore is not None and (not isinstance(ignore, int) or ignore != max(values)):
        rep.error("labels", dj_path, f"the ignore label must be the highest integer, got ignore={ignore} in {labels}")
    diffs = np.diff(values)
    if not np.all(diffs == 1):
        gaps = [values[i + 1] for i in np.flatnonzero(diffs != 1)]
        rep.error("labels_consecutive", dj_path,
                  f"label values must be consecutive (0, 1, 2, ...); {values} breaks at {gaps}")
    if has_regions(labels) and "regions_class_order" not in dj:
        rep.error("regions", dj_path, "region-based labels need 'regions_class_order' in dataset.json")
    return values


def _collect_cases(folder, dj, file_ending, explicit, num_channels, rep) -> dict[str, tuple[list[Path], Path | None]]:
    cases: dict[str, tuple[list[Path], Path | None]] = {}
    if explicit:
        entries = dj["dataset"]
        if not isinstance(entries, dict):
            rep.error("dataset_key", folder / "dataset.json", "'dataset' must map case -> {images, label}")
            return cases
        for case, item in entries.items():
            imgs = [folder / p if not Path(p).is_absolute() else Path(p) for p in item.get("images", [])]
            lab = item.get("label")
            lab_path = (folder / lab if not Path(lab).is_absolute() else Path(lab)) if lab else None
            ok = [p for p in imgs if p.exists()]
            for p in imgs:
                if not p.exists():
                    rep.error("missing_file", p, f"image of case {case!r} listed in dataset.json does not exist")
            if lab_path is None or not lab_path.exists():
                rep.error("missing_label", lab_path or folder, f"label of case {case!r} is missing")
                lab_path = None
            cases[case] = (ok, lab_path)
        return cases

    found, unmatched = scan_image_folder(folder / "imagesTr", file_ending)
    for f in unmatched:
        if f.name.startswith("."):
            rep.warning("extra_file", f, "hidden file in imagesTr (ignored by nnU-Net)")
        elif f.name.endswith(file_ending):
            rep.error("bad_name", f, f"image name does not follow {{case}}_XXXX{file_ending} (4-digit channel)")
        else:
            rep.error("extra_file", f, f"file in imagesTr does not end with file_ending {file_ending!r}")
    label_dir = folder / "labelsTr"
    label_files = {}
    if label_dir.is_dir():
        for f in sorted(label_dir.iterdir()):
            if f.name.endswith(file_ending) and not f.name.startswith("."):
                label_files[f.name[: -len(file_ending)]] = f
            elif f.name.startswith("."):
                rep.warning("extra_file", f, "hidden file in labelsTr")
            else:
                rep.error("extra_file", f, f"file in labelsTr does not end with file_ending {file_ending!r}")
    for case in sorted(label_files.keys() - found.keys()):
        rep.error("label_without_image", label_files[case], f"label file has no images in imagesTr (case {case!r})")
    for case in sorted(found):
        _check_channel_indices(case, found[case], file_ending, num_channels, folder / "imagesTr", rep)
        lab = label_files.get(case)
        if lab is None:
            rep.error("missing_label", label_dir / f"{case}{file_ending}", f"case {case!r} has no label file")
        cases[case] = ([found[case][k] for k in sorted(found[case])], lab)
    return cases


def _check_channel_indices(case, channels: dict[int, Path], file_ending, num_channels, folder: Path, rep) -> None:
    if num_channels is None:
        return
    expected = expected_channel_indices(file_ending, num_channels, channels)
    for c in sorted(expected - set(channels)):
        rep.error("missing_channel", folder / f"{case}_{c:04d}{file_ending}",
                  f"case {case!r} lacks channel {c} ({num_channels} channel(s) expected)")
    for c in sorted(set(channels) - expected):
        rep.error("extra_channel", channels[c], f"case {case!r} has channel {c} beyond the {num_channels} in "
                  "channel_names")


def _check_test_folder(folder: Path, file_ending: str, num_channels, rep: _Report) -> None:
    found, unmatched = scan_image_folder(folder / "imagesTs", file_ending)
    for f in unmatched:
        if not f.name.startswith("."):
            rep.warning("extra_file", f, f"file in imagesTs does not follow {{case}}_XXXX{file_ending}")
    for case, channels in found.items():
        _check_channel_indices(case, channels, file_ending, num_channels, folder / "imagesTs", rep)


def _read(path: Path, rep: _Report) -> tuple[np.ndarray, ImageMeta] | None:
    try:
        return read_image(path)
    except (ImageReadError, OSError, ValueError) as err:
        rep.error("unreadable", path, f"cannot read: {err}")
        return None


def _spatial(arr: np.ndarray, meta: ImageMeta) -> tuple[np.ndarray, tuple[int, ...]]:
    if meta.extra.get("channel_axis") == -1:
        return np.moveaxis(arr, -1, 0), arr.shape[:-1]
    return arr[None], arr.shape


def _check_case(case, images, label, num_channels, expected_labels, rep, strict, origin_atol, direction_atol):
    geo_report = rep.error if strict else rep.warning
    first_meta = None
    first_shape = None
    n_read = 0
    n_files_read = 0
    direction = None
    for f in images:
        res = _read(f, rep)
        if res is None:
            continue
        arr, meta = res
        n_files_read += 1
        chans, shape = _spatial(arr, meta)
        n_read += chans.shape[0]
        if arr.dtype.kind == "f":
            if np.isnan(arr).any():
                rep.error("nan", f, f"image contains {int(np.isnan(arr).sum())} NaN value(s)")
            if np.isinf(arr).any():
                rep.error("inf", f, f"image contains {int(np.isinf(arr).sum())} inf value(s)")
        if arr.size and np.nanmin(arr) == np.nanmax(arr):
            rep.warning("constant_image", f, f"image is constant ({np.nanmin(arr)})")
        _check_qform_sform(f, rep)
        if first_meta is None:
            first_meta, first_shape, direction = meta, shape, meta.direction
            continue
        if shape != first_shape:
            rep.error("channel_shape", f, f"channel shape {shape} differs from {images[0].name} {first_shape}")
        close = geometry_close(first_meta, meta, origin_atol=origin_atol, direction_atol=direction_atol)
        if not close["spacing"]:
            rep.error("channel_spacing", f, f"spacing {meta.spacing} differs from {images[0].name} "
                      f"{first_meta.spacing}")
        for key in ("origin", "direction"):
            if not close[key]:
                geo_report(f"channel_{key}", f, f"{key} {getattr(meta, key)} differs from {images[0].name} "
                           f"{getattr(first_meta, key)}")
    if num_channels is not None and n_files_read == len(images) > 0 and n_read != num_channels:
        rep.error("num_channels", images[0], f"case {case!r} has {n_read} channel(s), channel_names lists "
                  f"{num_channels}")
    if label is None:
        return direction
    res = _read(label, rep)
    if res is None:
        return direction
    seg, seg_meta = res
    if seg_meta.extra.get("channel_axis") == -1:
        rep.error("label_channels", label, f"label is a colour image {seg.shape}; expected a single-channel map")
        return direction
    if seg.dtype.kind == "f":
        nan = np.isnan(seg)
        if nan.any():
            rep.error("nan", label, f"label contains {int(nan.sum())} NaN value(s)")
        finite = seg[np.isfinite(seg)]
        if not np.array_equal(finite, np.round(finite)):
            rep.error("label_dtype", label, f"label has dtype {seg.dtype} with non-integer values")
        else:
            rep.warning("label_dtype", label, f"label has float dtype {seg.dtype}; store labels as an integer type")
    elif seg.dtype.kind not in "iub":
        rep.error("label_dtype", label, f"label has non-numeric dtype {seg.dtype}")
    found = np.unique(seg[np.isfinite(seg)] if seg.dtype.kind == "f" else seg)
    if expected_labels is not None:
        unexpected = [v.item() for v in found if v not in expected_labels]
        if unexpected:
            rep.error("label_values", label, f"unexpected label value(s) {unexpected}; expected {expected_labels}")
    if len(found) == 1 and found[0] == 0:
        rep.warning("label_only_background", label, "label map contains only background (0)")
    if first_meta is None:
        return direction
    if seg.shape != first_shape:
        rep.error("shape_mismatch", label, f"label shape {seg.shape} != image spatial shape {first_shape} "
                  f"({images[0].name})")
    close = geometry_close(first_meta, seg_meta, origin_atol=origin_atol, direction_atol=direction_atol)
    if not close["spacing"]:
        rep.error("spacing_mismatch", label, f"label spacing {seg_meta.spacing} != image spacing "
                  f"{first_meta.spacing} ({images[0].name})")
    for key in ("origin", "direction"):
        if not close[key]:
            geo_report(f"{key}_mismatch", label, f"label {key} {getattr(seg_meta, key)} != image {key} "
                       f"{getattr(first_meta, key)} ({images[0].name})")
    return direction


def _check_qform_sform(path: Path, rep: _Report) -> None:
    if image_extension(path) not in (".nii", ".nii.gz"):
        return
    try:
        import nibabel as nib
    except ImportError:
        return
    try:
        hdr = nib.load(str(path)).header
        qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
        if qcode > 0 and scode > 0 and not np.allclose(hdr.get_qform(), hdr.get_sform(), atol=1e-3):
            rep.warning("qform_sform", path, "qform and sform disagree: nibabel (sform) and ITK (qform) readers "
                        "will place this image differently")
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, ValueError, OSError) as err:
        rep.warning("nifti_header", path, f"nibabel cannot parse the NIfTI header: {err}")


def format_problems(problems: list[Problem]) -> str:
    """Render problems as a fixed-width table (severity, code, file, message)."""
    if not problems:
        return "no problems found"
    rows = [(p.severity.upper(), p.code, p.file, p.message) for p in problems]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{'SEVERITY':<{w0}}  {'CODE':<{w1}}  FILE / MESSAGE"]
    for sev, code, file, msg in rows:
        lines.append(f"{sev:<{w0}}  {code:<{w1}}  {file}")
        lines.append(f"{'':<{w0}}  {'':<{w1}}    {msg}")
    n_err = sum(p.severity == "error" for p in problems)
    lines.append(f"{n_err} error(s), {len(problems) - n_err} warning(s)")
    return "\n".join(lines)
