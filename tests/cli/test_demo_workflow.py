"""``mambaseg demo``: the end-to-end workflow on the pyradiomics sample data, and the sample-data module.

The data come from PyPI (the pyradiomics 3.0.1 source archive, 34 MB, downloaded once per test session into a
pytest tmp folder, or into ``$MAMBASEG_CACHE`` when it is set). Without network access to PyPI the tests that need
the data are skipped, except in CI (env ``CI=true``), where the registries are reachable and they must run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mambaseg.cli.main import main
from mambaseg.data import sample_data
from mambaseg.data.check import check_dataset
from mambaseg.data.io import read_image
from mambaseg.data.sample_data import SampleDataError, fetch_pyradiomics_cases, make_demo_dataset


@pytest.fixture(scope="session")
def pyradiomics_cache(tmp_path_factory) -> Path:
    """Cache folder holding the verified archive and its extracted NRRD files (downloaded once per session)."""
    cache = (sample_data.default_cache_dir() if os.environ.get("MAMBASEG_CACHE")
             else tmp_path_factory.mktemp("mambaseg-cache") / "pyradiomics-3.0.1")
    try:
        fetch_pyradiomics_cases(cache)
    except SampleDataError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must reach PyPI for the demo data: {err}")
        pytest.skip(f"pyradiomics 3.0.1 sample data not downloadable from PyPI (no network?): "
                    f"{str(err).splitlines()[0]}")
    return cache


@pytest.fixture(scope="session")
def demo_dataset(pyradiomics_cache, tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("raw"), pyradiomics_cache)


def test_fetch_gives_five_cases_and_reuses_the_cache(pyradiomics_cache, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("the cached archive should have been re-used")

    monkeypatch.setattr(sample_data, "_download", no_download)
    cases = fetch_pyradiomics_cases(pyradiomics_cache)
    assert [c for c, _, _ in cases] == ["brain1", "brain2", "breast1", "lung1", "lung2"]
    assert all(img.is_file() and lab.is_file() for _, img, lab in cases)
    assert sample_data._sha256(pyradiomics_cache / sample_data.ARCHIVE_NAME) == sample_data.ARCHIVE_SHA256


def test_download_failure_says_what_to_run_by_hand(tmp_path, monkeypatch):
    monkeypatch.setattr(sample_data, "_pip_download", lambda dest, timeout: "pip exited with 1: no network")
    monkeypatch.setattr(sample_data, "_direct_download", lambda dest, timeout: "URLError: no network")
    with pytest.raises(SampleDataError) as info:
        fetch_pyradiomics_cases(tmp_path / "cache")
    message = str(info.value)
    assert "pip download --no-deps --no-binary :all:" in message and "pyradiomics==3.0.1" in message
    assert str(tmp_path / "cache") in message and sample_data.ARCHIVE_SHA256 in message


def test_download_with_a_wrong_checksum_is_refused(tmp_path, monkeypatch):
    def fake(dest, timeout):
        (dest / sample_data.ARCHIVE_NAME).write_bytes(b"not the archive")

    monkeypatch.setattr(sample_data, "_pip_download", fake)
    monkeypatch.setattr(sample_data, "_direct_download", fake)
    with pytest.raises(SampleDataError, match="differs from the pinned"):
        fetch_pyradiomics_cases(tmp_path / "cache")
    assert not (tmp_path / "cache" / sample_data.ARCHIVE_NAME).exists()


def test_demo_dataset_is_a_clean_nnunet_dataset(demo_dataset):
    assert demo_dataset.name == "Dataset990_PyRadiomicsLesions"
    errors = [p for p in check_dataset(demo_dataset) if p.severity == "error"]
    assert errors == []
    dj = json.loads((demo_dataset / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "MRI/CT"} and dj["labels"] == {"background": 0, "lesion": 1}
    assert dj["file_ending"] == ".nrrd" and dj["numTraining"] == 4
    assert sorted(p.name for p in (demo_dataset / "imagesTs").iterdir()) == ["lung2_0000.nrrd"]
    assert sorted(p.name for p in (demo_dataset / "labelsTs").iterdir()) == ["lung2.nrrd"]
    assert sorted(p.name for p in (demo_dataset / "imagesTr").iterdir()) == [
        "brain1_0000.nrrd", "brain2_0000.nrrd", "breast1_0000.nrrd", "lung1_0000.nrrd"]
    assert json.loads((demo_dataset / "splits.json").read_text()) == {
        "train": ["brain1", "brain2", "breast1", "lung1"], "val": []}
    for label in [*(demo_dataset / "labelsTr").iterdir(), demo_dataset / "labelsTs" / "lung2.nrrd"]:
        arr, meta = read_image(label)
        assert arr.dtype == np.uint8 and set(np.unique(arr).tolist()) == {0, 1}, label
        image, image_meta = read_image(demo_dataset / ("imagesTs" if label.parent.name == "labelsTs" else "imagesTr")
                                       / f"{label.name[:-5]}_0000.nrrd")
        assert image.shape == arr.shape and np.allclose(image_meta.spacing, meta.spacing)


def test_demo_dataset_moves_cases_when_the_test_case_changes(pyradiomics_cache, tmp_path):
    make_demo_dataset(tmp_path, pyradiomics_cache)
    folder = make_demo_dataset(tmp_path, pyradiomics_cache, test_case="brain2")
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["brain2_0000.nrrd"]
    assert (folder / "imagesTr" / "lung2_0000.nrrd").is_file() and (folder / "labelsTr" / "lung2.nrrd").is_file()
    assert [p for p in check_dataset(folder) if p.severity == "error"] == []
    with pytest.raises(ValueError, match="unknown test case"):
        make_demo_dataset(tmp_path, pyradiomics_cache, test_case="liver1")


def test_demo_workflow_end_to_end_then_reuses_the_finished_run(pyradiomics_cache, tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--model", "ultralight_vm_unet_test", "--iterations", "4",
            "--patch-size", "160", "160", "--batch-size", "2", "--cache", str(pyradiomics_cache), "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    for step in ("[1/6] fetch", "[2/6] build", "[3/6] check", "[4/6] train", "[5/6] predict", "[6/6] evaluate"):
        assert step in text
    assert "0 error(s)" in text or "no problems found" in text
    assert "same geometry (shape, spacing, origin, direction): True" in text
    assert "lesion: Dice" in text and "HD95" in text and "total time" in text
    record = json.loads((out / "demo.json").read_text())
    assert record["iterations"] == 4 and record["test_case"] == "lung2" and record["same_geometry"]
    run_split = json.loads((out / "run" / "splits.json").read_text())  # no test list in the split: imagesTs
    assert run_split["test"] == ["lung2"] and "lung2" not in run_split["train"] + run_split["val"]
    assert set(record["metrics"]) == {"lesion"} and 0.0 <= record["metrics"]["lesion"]["dice"] <= 1.0
    for key in ("predictions", "cases_csv", "summary_json"):
        assert Path(record["paths"][key]).is_file()
    pred, pred_meta = read_image(out / "predictions" / "lung2.nrrd")
    image, image_meta = read_image(out / "raw" / "Dataset990_PyRadiomicsLesions" / "imagesTs" / "lung2_0000.nrrd")
    assert pred.shape == image.shape and np.allclose(pred_meta.origin, image_meta.origin)

    assert main(argv) == 0  # a finished demo is reported, not run again
    assert "already holds a finished demo" in capsys.readouterr().out


def test_operator_demo_flags_do_not_mix_with_the_workflow(capsys):
    assert main(["demo", "--length", "64", "--iterations", "3"]) == 2
    assert "--iterations" in capsys.readouterr().err
