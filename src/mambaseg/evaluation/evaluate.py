"""Evaluate a folder of predicted label maps against a folder of reference label maps.

Conventions:

* **Pairing**: files are matched by case id = file name without its extension (``.nii.gz`` counts as one), so
  ``case.png`` pairs with ``case.png`` and ``case.nii.gz`` with ``case.nii``. A name that does not match as is is
  retried without an nnU-Net channel suffix (``case_0000.png`` -> ``case``). Files starting with ``.`` and
  non-image files (``summary.json``, ``.npz``, ``cases.csv``) are ignored. A reference without a prediction is an
  error (all are listed); a prediction without a reference is a warning.
* **Geometry**: both files are read with the same reader (:func:`mambaseg.data.io.read_image`); shapes must be
  equal and spacings ``allclose`` (error naming both files); an origin/direction difference is a warning. Metrics
  use the **reference's** spacing (array axis order, mm).
* **Labels**: given explicitly, else the ``labels`` of a ``dataset.json`` in the reference folder or its parent
  (background and ``ignore`` excluded; regions as tuples), else every non-zero value found in the references.
* **Metrics and aggregation**: :func:`mambaseg.evaluation.metrics.compute_case_metrics` per case and class, then
  :func:`mambaseg.evaluation.aggregate.summarize` (empty-mask conventions and worst-value substitution documented
  there). ``pooled_dice`` (TP/FP/FN summed over cases) is reported separately from the per-image mean Dice.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.io import (
    SUPPORTED_EXTENSIONS,
    ImageMeta,
    as_label_array,
    geometry_close,
    image_extension,
    read_image,
)
from .aggregate import pooled_dice, summarize, to_jsonable
from .metrics import DEFAULT_METRICS, compute_case_metrics

__all__ = ["CSV_COLUMNS", "evaluate_folders", "pair_files"]

PathLike = str | Path
LabelSpec = Sequence[int | Sequence[int]] | Mapping[str, int | Sequence[int]]
CSV_COLUMNS = ("case_id", "label", "label_name", "empty", "n_pred", "n_ref", "tp", "fp", "fn") + tuple(
    DEFAULT_METRICS) + ("worst_distance_mm", "prediction_file", "reference_file")
_CHANNEL_SUFFIX = re.compile(r"_\d{4}\Z")


def _case_id(path: Path) -> str:
    return path.name[: len(path.name) - len(image_extension(path))]


def _image_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name.startswith(".") or image_extension(f) not in SUPPORTED_EXTENSIONS:
            continue
        case = _case_id(f)
        if case in out:
            raise ValueError(f"two files in {folder} have the case id {case!r}: {out[case].name} and {f.name}")
        out[case] = f
    return out


def pair_files(pred_dir: PathLike, ref_dir: PathLike, *,
               all_references: bool = True) -> tuple[list[tuple[str, Path, Path]], list[Path]]:
    """Pair predictions with references by case id.

    Args:
        pred_dir, ref_dir: the folders.
        all_references: every reference needs a prediction (the default); False pairs only the predicted cases
            (nnU-Net's ``-chill``), e.g. the test cases of a reference folder that also holds training cases.

    Returns:
        ``(pairs, extra)``: ``(case_id, prediction, reference)`` sorted by case id, and the predictions without a
        reference.

    Raises:
        FileNotFoundError: a folder is missing, the reference folder has no image files, references lack a
            prediction (all missing cases are listed; with ``all_references``), or no prediction has a reference.
    """
    preds, refs = _image_files(Path(pred_dir)), _image_files(Path(ref_dir))
    if not refs:
        raise FileNotFoundError(f"no reference image files ({', '.join(SUPPORTED_EXTENSIONS)}) in {ref_dir}")
    by_id = dict(preds)
    for case, f in preds.items():  # nnU-Net naming: case_0000 -> case, unless it clashes
        stripped = _CHANNEL_SUFFIX.sub("", case)
        if stripped != case and stripped not in preds:
            by_id.setdefault(stripped, f)
    pairs, missing, used = [], [], set()
    for case, ref in refs.items():
        key = case if case in by_id else _CHANNEL_SUFFIX.sub("", case)
        if key in by_id:
            pairs.append((case, by_id[key], ref))
            used.add(by_id[key])
        else:
            missing.append(ref.name)
    if missing and all_references:
        raise FileNotFoundError(f"{len(missing)} reference case(s) have no prediction in {pred_dir}: "
                                f"{', '.join(missing)} (to evaluate only the predicted cases, pass "
                                f"--pred-cases-only / all_references=False)")
    if not pairs:
        raise FileNotFoundError(f"no prediction in {pred_dir} has a reference in {ref_dir}")
    extra = [f for f in preds.values() if f not in used]
    return pairs, extra


def _read_labels(path: Path) -> tuple[np.ndarray, ImageMeta]:
    arr, meta = read_image(path)
    if meta.extra.get("channel_axis") == -1 or arr.ndim != meta.ndim:
        raise ValueError(f"{path}: a label map must be single-channel, got shape {arr.shape}")
    return as_label_array(arr, str(path)), meta  # NaN, non-integer or negative values: an error naming the file


def _labels_from_dataset_json(ref_dir: Path) -> dict[str, Any] | None:
    for folder in (ref_dir, ref_dir.parent):
        path = folder / "dataset.json"
        if path.is_file():
            try:
                labels = json.loads(path.read_text()).get("labels")
            except (json.JSONDecodeError, AttributeError) as err:
                raise ValueError(f"{path} is not a valid dataset.json: {err}") from err
            if not isinstance(labels, dict):
                continue
            out: dict[str, Any] = {}
            for name, v in labels.items():
                if name == "ignore":
                    continue
                if isinstance(v, (list, tuple)):
                    out[name] = tuple(int(i) for i in v) if len(v) > 1 else int(v[0])
                elif int(v) != 0:
                    out[name] = int(v)
            if out:
                return out
    return None


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if math.isinf(v) else repr(v))
    if isinstance(v, tuple):
        return "+".join(str(i) for i in v)
    return v


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k)) for k in CSV_COLUMNS})


def evaluate_folders(pred_dir: PathLike, ref_dir: PathLike, labels: LabelSpec | None = None,
                     nsd_tolerance_mm: float = 1.0, out: PathLike | None = None, *,
                     all_references: bool = True, progress: bool = False) -> dict[str, Any]:
    """Compute per-case, per-class metrics of a prediction folder against a reference folder.

    Args:
        pred_dir: predicted label maps.
        ref_dir: reference label maps (e.g. ``labelsTs``).
        labels: labels or regions to evaluate (``[1, 2]``, ``[(1, 2, 3), 2]`` or ``{"tumour": 1}``); default: from
            a ``dataset.json`` next to the references, else all non-zero values found in the references.
        nsd_tolerance_mm: NSD tolerance in mm.
        out: folder to write ``cases.csv`` (one row per case and class) and ``summary.json``; None writes nothing.
        all_references: every reference needs a prediction; False evaluates the predicted cases only
            (:func:`pair_files`).
        progress: show a tqdm bar over cases.

    Returns:
        The summary (JSON-able): :func:`~mambaseg.evaluation.aggregate.summarize`'s ``conventions``, ``classes``,
        ``overall``, plus ``pooled_dice`` (per class, labelled as pooled), ``empty_counts`` (per class and whole
        cases), ``metric_per_case`` (the rows) and ``provenance`` (inputs, mambaseg version, UTC date).

    Raises:
        FileNotFoundError: missing folders or predictions (all listed).
        ValueError: shape or spacing mismatch of a pair (names both files), non-integer label maps, no labels,
            ``out`` is a file.
    """
    from tqdm import tqdm

    from .. import __version__

    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"output {out} is a file: give a folder for cases.csv and summary.json")
    pairs, extra = pair_files(pred_dir, ref_dir, all_references=all_references)
    if extra:
        warnings.warn(f"{len(extra)} prediction(s) in {pred_dir} have no reference and are ignored: "
                      f"{', '.join(f.name for f in extra)}", stacklevel=2)
    labels_source = "argument"
    if labels is None:
        labels = _labels_from_dataset_json(ref_dir)
        labels_source = "dataset.json"
    loaded = []
    found: set[int] = set()
    for case, pf, rf in tqdm(pairs, desc="read", unit="case", disable=not progress):
        pred, pm = _read_labels(pf)
        ref, rm = _read_labels(rf)
        if pred.shape != ref.shape:
            raise ValueError(f"shape mismatch: prediction {pf} {pred.shape} vs reference {rf} {ref.shape}")
        if not np.allclose(pm.spacing, rm.spacing, rtol=1e-5, atol=1e-8):
            raise ValueError(f"spacing mismatch: prediction {pf} {pm.spacing} vs reference {rf} {rm.spacing}")
        close = geometry_close(pm, rm)
        if not (close["origin"] and close["direction"]):
            warnings.warn(f"origin/direction differ between prediction {pf} and reference {rf}", stacklevel=2)
        if labels is None:
            found.update(int(v) for v in np.unique(ref) if v != 0)
        loaded.append((case, pf, rf, pred, ref, rm.spacing))
    if labels is None:
        labels = sorted(found)
        labels_source = "non-zero values of the references"
        if not labels:
            raise ValueError(f"no labels to evaluate: every reference in {ref_dir} is empty; pass labels=[...]")

    rows: list[dict[str, Any]] = []
    n_ref_empty = n_pred_empty = 0
    for case, pf, rf, pred, ref, spacing in tqdm(loaded, desc="evaluate", unit="case", disable=not progress):
        case_rows = compute_case_metrics(pred, ref, labels, spacing, nsd_tolerance_mm=nsd_tolerance_mm,
                                         case_id=case)
        for r in case_rows:
            r["prediction_file"], r["reference_file"] = str(pf), str(rf)
        n_ref_empty += all(r["n_ref"] == 0 for r in case_rows)
        n_pred_empty += all(r["n_pred"] == 0 for r in case_rows)
        rows.extend(case_rows)

    summary = summarize(rows)
    per_class = summary["classes"]
    summary["pooled_dice"] = {
        "definition": "pooled (micro) Dice = 2*sum(TP) / (2*sum(TP) + sum(FP) + sum(FN)) over all cases; "
                      "NOT the mean of per-case Dice (classes.<name>.metrics.dice.mean)",
        "per_class": to_jsonable(pooled_dice(rows)),
    }
    summary["empty_counts"] = {
        "definition": "per class: both = reference and prediction empty (Dice NaN, excluded), ref = only the "
                      "reference empty, pred = only the prediction empty; cases: every evaluated label empty",
        "per_class": {name: {"both": c["n_both_empty"], "ref": c["n_ref_empty"], "pred": c["n_pred_empty"]}
                      for name, c in per_class.items()},
        "cases_with_empty_reference": int(n_ref_empty),
        "cases_with_empty_prediction": int(n_pred_empty),
        "n_cases": len(loaded),
    }
    summary["metric_per_case"] = to_jsonable([{k: (_fmt(v) if isinstance(v, tuple) else v) for k, v in r.items()}
                                              for r in rows])
    summary["provenance"] = to_jsonable({
        "command": "evaluate_folders",
        "pred_dir": str(pred_dir.resolve()),
        "ref_dir": str(ref_dir.resolve()),
        "labels": [_fmt(v) if isinstance(v, tuple) else v for v in
                   (labels.values() if isinstance(labels, Mapping) else labels)],
        "label_names": list(labels.keys()) if isinstance(labels, Mapping) else None,
        "labels_source": labels_source,
        "nsd_tolerance_mm": float(nsd_tolerance_mm),
        "spacing_from": "reference",
        "n_cases": len(loaded),
        "cases": "predicted cases only" if not all_references else "every reference",
        "extra_predictions": [f.name for f in extra],
        "mambaseg_version": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    if out is not None:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_csv(rows, out_dir / "cases.csv")
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary
