"""Predict segmentations from a trained run folder and write them with the input's geometry.

A run folder (written by training) holds::

    RUN_DIR/plan.json             the data plan (:class:`mambaseg.data.plan.Plan`)
    RUN_DIR/config.yaml           at least ``model`` (registered name) and ``model_kwargs``
    RUN_DIR/checkpoint_best.pt    {"model": state_dict, ...}
    RUN_DIR/checkpoint_latest.pt

Pipeline per case (nnU-Net v2's ``nnUNetPredictor``): preprocess exactly as training did
(:func:`mambaseg.data.preprocessing.preprocess_image`), sliding-window inference with Gaussian blending and the
plan's patch size, optional mirroring test-time augmentation on every spatial axis of the model, softmax, revert
the probabilities to the original grid (:func:`~mambaseg.data.preprocessing.revert_probabilities`), argmax.
A 2D model on 3D volumes predicts slice by slice along ``plan.slice_axis`` (default 0).

File conventions of :meth:`Predictor.predict_files`:

* **Cases**: files named ``{case}_{XXXX}{ext}`` with a ``_0000`` among them are nnU-Net channel files of one case
  (channels ``0000..C-1``, all required); any other file is a single-file case named after the file without its
  extension. An RGB(A) PNG/JPEG is one case with 3 channels (alpha is dropped when the plan has 3 channels). A 4-D
  NIfTI (MSD style) is one case with its first axis as channels. An nnU-Net raw dataset folder is read from its
  ``imagesTs``. Files starting with ``.`` and unsupported extensions are skipped.
* **Outputs**: ``{output_dir}/{case}{ext}`` in the input's format with the input's spacing, origin and direction;
  a JPEG input gives a **PNG** mask (JPEG is lossy and would corrupt label values). Label values are the plan's
  integer labels (class index ``k`` -> ``k``-th label value), not rescaled to 0/255. ``save_probabilities`` adds
  ``{case}.npz`` with ``probabilities`` ``(K, *S)`` float32 on the original grid. Inputs are never overwritten.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.io import (
    SUPPORTED_EXTENSIONS,
    ImageMeta,
    ImageReadError,
    image_extension,
    read_image,
    write_image,
)
from ..data.plan import Plan
from ..data.preprocessing import preprocess_image, revert_probabilities
from .sliding_window import predict_with_tta, sliding_window_inference

__all__ = ["Predictor", "find_cases", "load_case_files", "run_split_files"]

PathLike = str | Path
_CHANNEL_RE = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})\Z")


# ------------------------------------------------------------------------------------------------ input files
def _case_name(path: Path) -> str:
    return path.name[: len(path.name) - len(image_extension(path))]


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and image_extension(path) in SUPPORTED_EXTENSIONS


def find_cases(inputs: PathLike | Sequence[PathLike] | Mapping[str, Sequence[PathLike]]) -> dict[str, list[Path]]:
    """Group input files into cases.

    Args:
        inputs: an image file, a folder of image files, an nnU-Net raw dataset folder (its ``imagesTs`` is
            used), a list of files, or ``{case id: [channel files]}`` (taken as given, e.g.
            :func:`run_split_files`).

    Returns:
        ``{case_id: [channel files in order]}``, sorted by case id.

    Raises:
        FileNotFoundError: an input does not exist, or no image file was found.
        ValueError: an nnU-Net case lacks a channel file, or two inputs map to the same case id.
    """
    if isinstance(inputs, Mapping):
        given = {str(c): [Path(f) for f in fs] for c, fs in inputs.items()}
        missing = [str(f) for fs in given.values() for f in fs if not f.is_file()]
        if missing or not given or not all(given.values()):
            raise FileNotFoundError(f"input files not found: {missing}" if missing else "no input files given")
        return given
    if isinstance(inputs, (str, Path)):
        root = Path(inputs)
        if not root.exists():
            raise FileNotFoundError(f"input not found: {root}")
        if root.is_dir():
            if (root / "dataset.json").is_file():
                if not (root / "imagesTs").is_dir():
                    raise FileNotFoundError(
                        f"{root} is an nnU-Net raw dataset without imagesTs, the folder predicted for a dataset; "
                        f"predict a run's held-out cases with --split test (Python: run_split_files), or pass "
                        f"a folder of images")
                root = root / "imagesTs"
            files = sorted(f for f in root.iterdir() if _is_image_file(f))
            if not files:
                raise FileNotFoundError(f"no image files ({', '.join(SUPPORTED_EXTENSIONS)}) in {root}")
        else:
            files = [root]
    else:
        files = [Path(f) for f in inputs]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"input files not found: {missing}")
        if not files:
            raise FileNotFoundError("no input files given")
    groups: dict[str, dict[int, Path]] = {}
    singles: dict[str, Path] = {}
    for f in files:
        m = _CHANNEL_RE.match(_case_name(f))
        if m:
            groups.setdefault(m["case"], {})[int(m["channel"])] = f
        else:
            if _case_name(f) in singles:
                raise ValueError(f"{singles[_case_name(f)]} and {f} give the same case id {_case_name(f)!r}")
            singles[_case_name(f)] = f
    cases: dict[str, list[Path]] = {}
    for case, chans in groups.items():
        if 0 not in chans:  # e.g. "scan_2020.png": not nnU-Net channel naming
            for f in chans.values():
                singles[_case_name(f)] = f
            continue
        expected = list(range(max(chans) + 1))
        if sorted(chans) != expected:
            missing = [f"{case}_{i:04d}" for i in expected if i not in chans]
            raise ValueError(f"case {case!r}: channel files {missing} are missing (found {sorted(chans)})")
        cases[case] = [chans[i] for i in expected]
    for case, f in singles.items():
        if case in cases:
            raise ValueError(f"{f} and the channel files {[str(p) for p in cases[case]]} give the same case id "
                             f"{case!r}")
        cases[case] = [f]
    return dict(sorted(cases.items()))


def run_split_files(run_dir: PathLike, split: str = "test") -> dict[str, list[Path]]:
    """The image files of a training run's ``split`` cases, read from the run's dataset.

    ``RUN_DIR/splits.json`` (written by training) names the cases: ``train``, ``val``, or ``test`` (the held-out
    cases: the split's test list, else the dataset's ``imagesTs``) and the dataset folder (``dataset``; runs
    written before it was recorded: ``data`` in ``RUN_DIR/config.yaml``). A case is looked up in ``imagesTr``,
    then ``imagesTs``.

    Returns:
        ``{case id: [channel files in order]}`` in case order, an input of :meth:`Predictor.predict_files` (the
        outputs are named by case id, whatever the files are called).

    Raises:
        FileNotFoundError: the run's splits.json or config.yaml, or its dataset, is missing.
        ValueError: ``split`` is not in the run's splits.json (runs trained before the ``test`` list was recorded),
            or names no case, or a case is in neither images folder.
    """
    from ..data.nnunet_raw import RawDataset
    from ..data.splits import load_splits
    from ..training.trainer import recorded_dataset

    run = Path(run_dir)
    splits_path, cfg_path = run / "splits.json", run / "config.yaml"
    for p in (splits_path, cfg_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: is {run} a mambaseg run folder?")
    splits = load_splits(splits_path)
    if not isinstance(splits, dict):
        raise ValueError(f"{splits_path} holds folds, not one run's split")
    if split not in splits:
        kept = sorted(k for k in splits if k in ("train", "val", "test"))
        raise ValueError(f"{splits_path} records no {split!r} cases, only {kept} (older runs lack the test list): "
                         f"pass the images instead")
    cases = list(splits[split])
    if not cases:
        raise ValueError(f"{splits_path}: the run's {split!r} split is empty (split: {splits.get('source', '?')})")
    data = recorded_dataset(run)
    if not data or not Path(data).is_dir():
        raise FileNotFoundError(f"the run's dataset {data!r} (splits.json 'dataset', config.yaml 'data') is not a "
                                f"folder here; pass the images instead")
    raw = RawDataset(data)
    missing = [c for c in cases if c not in raw.cases and c not in raw.test_cases]
    if missing:
        raise ValueError(f"{splits_path}: {split} case(s) {missing[:5]} are in neither {raw.path / 'imagesTr'} nor "
                         f"{raw.path / 'imagesTs'}")
    return {c: raw.image_files(c, test=c not in raw.cases) for c in cases}


def load_case_files(files: Sequence[Path]) -> tuple[np.ndarray, ImageMeta]:
    """Read a case's channel files into ``(C, *S)`` float32 with the first file's geometry.

    Colour 2-D images contribute 3 (or 4) channels; a 4-D file (``(t, z, y, x)``) contributes ``t`` channels.

    Raises:
        ImageReadError: a file cannot be read, or the channel files disagree in shape or spacing (names them).
    """
    arrays: list[np.ndarray] = []
    meta: ImageMeta | None = None
    for f in files:
        try:
            arr, m = read_image(f)
        except (ImageReadError, ValueError, OSError) as err:
            raise ImageReadError(f"cannot read input {f}: {err}") from err
        if m.extra.get("channel_axis") == -1:
            arr = np.moveaxis(arr, -1, 0)
        elif arr.ndim == 4 and m.ndim == 4:
            m = m.subset((1, 2, 3))
        else:
            arr = arr[None]
        if meta is None:
            meta = m
        else:
            if arr.shape[1:] != arrays[0].shape[1:]:
                raise ImageReadError(f"channel files disagree in shape: {files[0]} {arrays[0].shape[1:]} vs {f} "
                                     f"{arr.shape[1:]}")
            if not np.allclose(m.spacing, meta.spacing, rtol=1e-5):
                raise ImageReadError(f"channel files disagree in spacing: {files[0]} {meta.spacing} vs {f} "
                                     f"{m.spacing}")
        arrays.append(arr)
    if meta is None:
        raise ValueError("no image files given")
    return np.concatenate(arrays, axis=0).astype(np.float32, copy=False), meta


# ------------------------------------------------------------------------------------------------ predictor
def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _model_spec(config: dict[str, Any], path: Path) -> tuple[str, dict[str, Any]]:
    model = config.get("model")
    kwargs = config.get("model_kwargs") or {}
    if isinstance(model, dict):  # tolerate {"model": {"name": ..., "kwargs": ...}}
        kwargs = {**(model.get("kwargs") or model.get("model_kwargs") or {}), **kwargs}
        model = model.get("name")
    if not isinstance(model, str) or not model:
        raise ValueError(f"{path}: no model name under the key 'model' (keys: {sorted(config)})")
    if not isinstance(kwargs, dict):
        raise ValueError(f"{path}: 'model_kwargs' must be a mapping, got {type(kwargs).__name__}")  # noqa: TRY004
    return model, dict(kwargs)


def _strip_prefixes(state: dict[str, Any]) -> dict[str, Any]:
    """Remove ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) key prefixes."""
    out = {}
    for k, v in state.items():
        for p in ("module.", "_orig_mod."):
            while k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def _argmax_classes(probs: torch.Tensor) -> torch.Tensor:
    """``probs.argmax(0)`` for ``(K, *S)`` as K element-wise passes (first maximum wins, as argmax).

    Reducing over the leading axis with ``torch.argmax`` is several times slower on CPU for large volumes.
    """
    best = probs[0].clone()
    idx = torch.zeros(probs.shape[1:], dtype=torch.uint8 if probs.shape[0] <= 256 else torch.int32,
                      device=probs.device)
    for k in range(1, probs.shape[0]):
        better = probs[k] > best
        idx[better] = k
        best = torch.where(better, probs[k], best)
    return idx


class Predictor:
    """Sliding-window predictor for one trained model and its plan.

    Args:
        model: network mapping ``(B, C, *P)`` to logits ``(B, K, *P)`` (or a deep-supervision list).
        plan: the plan the model was trained with.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        tta: mirroring test-time augmentation over every spatial axis of the model (``2^dims`` predictions).
        overlap: sliding-window tile overlap in ``[0, 1)`` (nnU-Net's ``tile_step_size = 1 - overlap``).
        slice_batch: slices predicted together when a 2D model meets a 3D volume.
    """

    def __init__(self, model: nn.Module, plan: Plan, device: str | torch.device = "auto", tta: bool = False,
                 overlap: float = 0.5, slice_batch: int = 8) -> None:
        self.plan = plan
        self.device = _resolve_device(device)
        self.model = model.to(self.device).eval()
        if hasattr(self.model, "deep_supervision"):
            try:
                self.model.deep_supervision = False
            except (AttributeError, TypeError):
                pass
        self.tta = bool(tta)
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        self.overlap = float(overlap)
        self.slice_batch = max(1, int(slice_batch))
        self.class_values = self._class_values(plan)

    @staticmethod
    def _class_values(plan: Plan) -> np.ndarray:
        """Label value written for each class index (the plan's sorted integer labels, else ``0..K-1``)."""
        values = sorted(int(v) for v in plan.labels.values() if isinstance(v, (int, np.integer)))
        k = max(plan.num_classes, 2)
        if len(values) == k and len(set(values)) == k and values[0] == 0:
            return np.asarray(values, dtype=np.int64)
        return np.arange(k, dtype=np.int64)

    # ---------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_run(cls, run_dir: PathLike, checkpoint: str = "best", device: str | torch.device = "auto",
                 tta: bool = False, overlap: float = 0.5) -> Predictor:
        """Build a predictor from a run folder (see the module docstring for its layout).

        Args:
            run_dir: the run folder.
            checkpoint: ``"best"`` or ``"latest"`` (``checkpoint_{best,latest}.pt``), or a path to a checkpoint.
            device, tta, overlap: see :class:`Predictor`.

        Raises:
            FileNotFoundError: plan, config or checkpoint missing (the message names the file, and the other
                checkpoint when it exists).
            ValueError: unreadable plan/config, or a state dict that does not fit the model.
        """
        import yaml

        from ..models import create_model_for_plan
        from ..training.checkpoint import load_checkpoint

        run = Path(run_dir)
        if not run.is_dir():
            raise FileNotFoundError(f"run folder not found: {run}")
        plan_path, cfg_path = run / "plan.json", run / "config.yaml"
        for p in (plan_path, cfg_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} not found: is {run} a mambaseg run folder?")
        plan = Plan.load(plan_path)
        try:
            config = yaml.safe_load(cfg_path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{cfg_path} is not valid YAML: {err}") from err
        if not isinstance(config, dict):
            raise ValueError(f"{cfg_path} must hold a mapping, got {type(config).__name__}")  # noqa: TRY004
        name, kwargs = _model_spec(config, cfg_path)

        if checkpoint in ("best", "latest"):
            ckpt_path = run / f"checkpoint_{checkpoint}.pt"
            if not ckpt_path.is_file():
                other = "latest" if checkpoint == "best" else "best"
                hint = (f"; checkpoint_{other}.pt exists: use checkpoint='{other}' (--checkpoint {other})"
                        if (run / f"checkpoint_{other}.pt").is_file() else "; no checkpoint_*.pt in the folder")
                raise FileNotFoundError(f"checkpoint not found: {ckpt_path}{hint}")
        else:
            ckpt_path = Path(checkpoint)
            if not ckpt_path.is_file():
                raise FileNotFoundError(f"checkpoint not found: {ckpt_path} (use 'best', 'latest' or a file)")

        model = create_model_for_plan(name, plan, kwargs, config.get("deep_supervision"))  # as the trainer built it
        state = load_checkpoint(ckpt_path, map_location="cpu")
        if not isinstance(state, dict) or "model" not in state:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{ckpt_path}: expected a dict with a 'model' state dict, found {keys}")
        try:
            model.load_state_dict(_strip_prefixes(state["model"]))
        except RuntimeError as err:
            raise ValueError(f"{ckpt_path} does not fit model {name!r} with {kwargs}: {err}") from err
        return cls(model, plan, device=device, tta=tta, overlap=overlap)

    # ---------------------------------------------------------------------------------------------- prediction
    def _predict_fn(self):
        if not self.tta:
            return self.model
        axes = tuple(range(self.plan.spatial_dims))
        return lambda x: predict_with_tta(self.model, x, axes)

    @torch.no_grad()
    def predict_logits(self, data: np.ndarray) -> torch.Tensor:
        """Sliding-window logits of a preprocessed image.

        Args:
            data: ``(C, *S)`` preprocessed float32 (2D or 3D).

        Returns:
            ``(K, *S)`` float32 logits on the predictor's device.
        """
        x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).to(self.device)
        dims, patch = x.ndim - 1, list(self.plan.patch_size)
        fn = self._predict_fn()
        if dims == self.plan.spatial_dims:
            return sliding_window_inference(fn, x[None], patch, overlap=self.overlap,
                                            num_classes=self.plan.num_classes)[0]
        if self.plan.spatial_dims == 2 and dims == 3:
            axis = 0 if self.plan.slice_axis is None else int(self.plan.slice_axis)
            slices = x.movedim(axis + 1, 0)                    # (Z, C, a, b)
            outs = [sliding_window_inference(fn, slices[i:i + self.slice_batch], patch, overlap=self.overlap,
                                             num_classes=self.plan.num_classes)
                    for i in range(0, slices.shape[0], self.slice_batch)]
            return torch.cat(outs, 0).movedim(0, axis + 1)    # (K, *S)
        raise ValueError(f"a {self.plan.spatial_dims}D model cannot predict a {dims}D image of shape "
                         f"{tuple(data.shape[1:])}")

    def predict_case(self, image: np.ndarray, meta: ImageMeta, *,
                     name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Predict one case.

        Args:
            image: ``(C, *S)`` float32 raw image (as read, not normalised), ``C == len(plan.channel_names)``.
            meta: its geometry (spacing in array order).
            name: what to call the case in error messages (e.g. its file names).

        Returns:
            ``(labels, probabilities)``: ``(*S)`` label map (uint8, or uint16 for more than 255 labels) holding the
            plan's label values, and ``(K, *S)`` float32 class probabilities on the original grid.

        Raises:
            ValueError: wrong number of channels (names the case and the plan's channels), NaN in the image.
        """
        what = name or "image"
        image = np.asarray(image)
        c_plan = len(self.plan.channel_names)
        if image.ndim < 3 or image.shape[0] != c_plan:
            raise ValueError(f"{what}: has {image.shape[0] if image.ndim else 0} channel(s) (shape "
                             f"{image.shape}) but the model was trained on {c_plan} {self.plan.channel_names}")
        data, props = preprocess_image(image, meta, self.plan, name=what)
        try:
            logits = self.predict_logits(data)
        except ValueError as err:  # e.g. a 2D image for a 3D model: say which case
            raise ValueError(f"{what}: {err}") from err
        if logits.shape[0] == 1:  # single-output model: sigmoid foreground probability
            fg = torch.sigmoid(logits)
            probs = torch.cat([1 - fg, fg], 0)
        else:
            probs = torch.softmax(logits, 0)
        probs = revert_probabilities(probs, props, self.plan)
        classes = _argmax_classes(probs).cpu().numpy()
        values = self.class_values
        labels = values[classes] if not np.array_equal(values, np.arange(len(values))) else classes
        dtype = np.uint8 if values.max() < 256 else np.uint16
        return labels.astype(dtype), probs.float().cpu().numpy()

    def predict_files(self, inputs: PathLike | Sequence[PathLike] | Mapping[str, Sequence[PathLike]],
                      output_dir: PathLike, save_probabilities: bool = False, progress: bool = True) -> list[Path]:
        """Predict every case of ``inputs`` and write label maps with the inputs' geometry.

        Args:
            inputs: a file, a folder of files, an nnU-Net raw dataset (``imagesTs``), a list of files (see the
                module docstring for how files are grouped into cases), or ``{case id: [channel files]}``.
            output_dir: created if missing; outputs are ``{case}{ext}`` (JPEG inputs give ``.png``).
            save_probabilities: also write ``{case}.npz`` with ``probabilities`` ``(K, *S)`` float32 and
                ``class_values`` ``(K,)``.
            progress: show a tqdm bar over cases.

        Returns:
            The written label files, in case order.

        Raises:
            FileNotFoundError: no inputs. ValueError: an output would overwrite an input, the output folder is an
            images/labels folder of an nnU-Net dataset, or a case's channel count does not match the plan (names
            the files). ImageReadError: an unreadable input (names it).
        """
        from tqdm import tqdm

        cases = find_cases(inputs)
        out_dir = Path(output_dir)
        dataset_parts = ("imagesTr", "imagesTs", "labelsTr", "labelsTs")
        resolved = out_dir.resolve()
        if resolved.name in dataset_parts and (resolved.parent / "dataset.json").is_file():
            raise ValueError(f"output {out_dir} is a folder of the nnU-Net dataset {out_dir.parent}: predictions "
                             f"would replace its files; choose another output folder")
        inputs_resolved = {f.resolve() for files in cases.values() for f in files}
        plan_out: dict[str, tuple[Path, Path | None]] = {}
        for case, files in cases.items():
            ext = image_extension(files[0])
            ext = ".png" if ext in (".jpg", ".jpeg") else ext
            target = out_dir / f"{case}{ext}"
            npz = out_dir / f"{case}.npz" if save_probabilities else None
            for p in (target, npz):
                if p is not None and p.resolve() in inputs_resolved:
                    raise ValueError(f"output {p} would overwrite an input file: choose another output folder")
            plan_out[case] = (target, npz)
        out_dir.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for case, files in tqdm(cases.items(), desc="predict", unit="case", disable=not progress):
            names = ", ".join(str(f) for f in files)
            image, meta = load_case_files(files)
            image = self._fit_channels(image, files, names)
            labels, probs = self.predict_case(image, meta, name=names)
            target, npz = plan_out[case]
            written.append(write_image(labels, meta, target, label=True))
            if npz is not None:
                np.savez_compressed(npz, probabilities=probs.astype(np.float32), class_values=self.class_values)
        return written

    def _fit_channels(self, image: np.ndarray, files: Sequence[Path], names: str) -> np.ndarray:
        """Drop the alpha channel of RGBA natural images when the plan wants 3 channels; else check the count."""
        c_plan = len(self.plan.channel_names)
        if image.shape[0] == 4 and c_plan == 3 and len(files) == 1 and image.ndim == 3:
            return image[:3]
        if image.shape[0] != c_plan:
            raise ValueError(f"{names}: case has {image.shape[0]} channel(s) but the model was trained on {c_plan} "
                             f"{self.plan.channel_names}; name multi-channel files {{case}}_0000, {{case}}_0001, ...")
        return image
