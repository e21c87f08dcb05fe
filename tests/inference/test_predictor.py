"""Tests of mambaseg.inference.predictor: run folders, geometry-preserving outputs, 2D/3D, resampling, TTA."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml
from PIL import Image

from mambaseg import create_model
from mambaseg.cli.main import main as cli_main
from mambaseg.data.io import ImageMeta, ImageReadError, read_image
from mambaseg.data.plan import Plan
from mambaseg.inference.predictor import Predictor, find_cases
from mambaseg.training.checkpoint import save_checkpoint


def make_run(root: Path, *, channels=("c0",), norm=None, spatial_dims=3, num_classes=3, patch=None,
             target_spacing=None, slice_axis=None, checkpoints=("best",), seed=0) -> Path:
    """A run folder with plan.json, config.yaml and a freshly initialised unet_test checkpoint."""
    root.mkdir(parents=True, exist_ok=True)
    plan = Plan(spatial_dims=spatial_dims, channel_names=list(channels),
                normalization=list(norm or ["zscore"] * len(channels)),
                labels={"background": 0, **{f"class{k}": k for k in range(1, num_classes)}},
                num_classes=num_classes, patch_size=list(patch or [8, 16, 16][-spatial_dims:]), batch_size=2,
                target_spacing=target_spacing, slice_axis=slice_axis)
    plan.save(root / "plan.json")
    (root / "config.yaml").write_text(yaml.safe_dump({"model": "unet_test", "model_kwargs": {},
                                                      "lr": 0.01, "unused_key": [1, 2]}))
    torch.manual_seed(seed)
    model = create_model("unet_test", in_channels=len(channels), num_classes=num_classes, spatial_dims=spatial_dims)
    for name in checkpoints:
        save_checkpoint(root / f"checkpoint_{name}.pt", {"model": model.state_dict(), "iteration": 3})
    return root


def _rotation_direction():
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


def _write_nifti(arr: np.ndarray, path: Path, spacing=(0.7, 0.8, 2.0), origin=(10.0, -20.0, 5.5),
                 direction=None) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction or _rotation_direction())
    sitk.WriteImage(img, str(path))
    return img


def test_3d_nifti_geometry_kept_two_channels(tmp_path):
    run = make_run(tmp_path / "run", channels=("T1", "T2"))
    inp = tmp_path / "in"
    inp.mkdir()
    rng = np.random.default_rng(0)
    for case in ("caseA", "caseB"):
        for c in range(2):
            _write_nifti(rng.normal(size=(11, 21, 18)).astype(np.float32), inp / f"{case}_{c:04d}.nii.gz")
    assert list(find_cases(inp)) == ["caseA", "caseB"]
    pred = Predictor.from_run(run, device="cpu")
    written = pred.predict_files(inp, tmp_path / "out", save_probabilities=True, progress=False)
    assert [p.name for p in written] == ["caseA.nii.gz", "caseB.nii.gz"]
    ref = sitk.ReadImage(str(inp / "caseA_0000.nii.gz"))
    out = sitk.ReadImage(str(written[0]))
    assert out.GetSize() == ref.GetSize()
    np.testing.assert_allclose(out.GetSpacing(), ref.GetSpacing())
    np.testing.assert_allclose(out.GetOrigin(), ref.GetOrigin())
    np.testing.assert_allclose(out.GetDirection(), ref.GetDirection(), atol=1e-6)
    arr = sitk.GetArrayFromImage(out)
    assert arr.dtype == np.uint8 and arr.min() >= 0 and arr.max() < 3
    probs = np.load(tmp_path / "out" / "caseA.npz")["probabilities"]
    assert probs.shape == (3, 11, 21, 18) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(0), arr)


def test_2d_rgb_png_and_jpg_give_png_masks(tmp_path):
    run = make_run(tmp_path / "run", channels=("R", "G", "B"), norm=["rgb"] * 3, spatial_dims=2, num_classes=2)
    inp = tmp_path / "in"
    inp.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (37, 29, 3), dtype=np.uint8)).save(inp / "polyp1.png")
    Image.fromarray(rng.integers(0, 255, (20, 41, 3), dtype=np.uint8)).save(inp / "polyp2.jpg")
    written = Predictor.from_run(run, device="cpu").predict_files(inp, tmp_path / "out", progress=False)
    assert sorted(p.name for p in written) == ["polyp1.png", "polyp2.png"]
    for p, shape in zip(sorted(written), [(37, 29), (20, 41)]):
        arr, _ = read_image(p)
        assert arr.shape == shape and arr.max() <= 1
    assert (inp / "polyp2.jpg").exists() and not (inp / "polyp2.png").exists()


def test_2d_model_on_3d_volume_slice_by_slice(tmp_path):
    run = make_run(tmp_path / "run", norm=["none"], spatial_dims=2, patch=[16, 16], slice_axis=0)
    pred = Predictor.from_run(run, device="cpu")
    vol = np.random.default_rng(2).normal(size=(1, 5, 20, 24)).astype(np.float32)
    meta = ImageMeta.identity(3)
    labels, probs = pred.predict_case(vol, meta)
    assert labels.shape == (5, 20, 24) and probs.shape == (3, 5, 20, 24)
    lab2, prob2 = pred.predict_case(vol[:, 3], ImageMeta.identity(2))  # slice 3 alone as a 2D image
    np.testing.assert_allclose(probs[:, 3], prob2, atol=1e-5)
    np.testing.assert_array_equal(labels[3], lab2)
    # slicing along another axis
    pred.plan.slice_axis = 2
    labels_x, _ = pred.predict_case(vol, meta)
    assert labels_x.shape == (5, 20, 24)


def test_resampling_round_trip_on_original_grid(tmp_path):
    run = make_run(tmp_path / "run", target_spacing=[1.0, 1.6, 1.4])
    pred = Predictor.from_run(run, device="cpu")
    seen = []
    original = pred.predict_logits
    pred.predict_logits = lambda data: (seen.append(data.shape), original(data))[1]
    inp = tmp_path / "img.nii.gz"
    _write_nifti(np.random.default_rng(3).normal(size=(6, 20, 14)).astype(np.float32), inp,
                 spacing=(0.7, 0.8, 2.0))
    (out,) = pred.predict_files(inp, tmp_path / "out", save_probabilities=True, progress=False)
    assert seen == [(1, 12, 10, 7)]  # (z, y, x) spacing (2.0, 0.8, 0.7) -> (1.0, 1.6, 1.4)
    ref, rm = read_image(inp)
    arr, om = read_image(out)
    assert arr.shape == ref.shape
    np.testing.assert_allclose(om.spacing, rm.spacing)
    np.testing.assert_allclose(om.origin, rm.origin)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "img.npz")["probabilities"].sum(0), 1.0, atol=1e-5)


def test_tta_runs_and_is_mirror_average(tmp_path):
    run = make_run(tmp_path / "run", spatial_dims=2, patch=[16, 16], norm=["none"])
    img = np.random.default_rng(4).normal(size=(1, 16, 16)).astype(np.float32)
    plain = Predictor.from_run(run, device="cpu")
    tta = Predictor.from_run(run, device="cpu", tta=True)
    labels, probs = tta.predict_case(img, ImageMeta.identity(2))
    assert labels.shape == (16, 16) and probs.shape == (3, 16, 16)
    x = torch.from_numpy(img)[None]
    with torch.no_grad():
        m = plain.model
        expected = (m(x) + m(x.flip(2)).flip(2) + m(x.flip(3)).flip(3) + m(x.flip(2, 3)).flip(2, 3)) / 4
    np.testing.assert_allclose(probs, torch.softmax(expected[0], 0).numpy(), atol=1e-5)


def test_sliding_window_equals_whole_image_at_patch_size(tmp_path):
    run = make_run(tmp_path / "run", patch=[8, 16, 16], norm=["none"])
    pred = Predictor.from_run(run, device="cpu")
    data = np.random.default_rng(5).normal(size=(1, 8, 16, 16)).astype(np.float32)
    with torch.no_grad():
        whole = pred.model(torch.from_numpy(data)[None])[0]
    np.testing.assert_allclose(pred.predict_logits(data).numpy(), whole.numpy(), rtol=1e-5, atol=1e-5)


def test_channel_mismatch_and_input_errors(tmp_path):
    run = make_run(tmp_path / "run", channels=("T1", "T2"))
    pred = Predictor.from_run(run, device="cpu")
    inp = tmp_path / "in"
    inp.mkdir()
    _write_nifti(np.zeros((4, 8, 8), np.float32), inp / "single.nii.gz")
    with pytest.raises(ValueError, match=r"single\.nii\.gz.*1 channel.*trained on 2"):
        pred.predict_files(inp / "single.nii.gz", tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="would overwrite an input"):
        pred.predict_files(inp / "single.nii.gz", inp, progress=False)
    (tmp_path / "Dataset001_X" / "labelsTr").mkdir(parents=True)
    (tmp_path / "Dataset001_X" / "dataset.json").write_text("{}")
    with pytest.raises(ValueError, match="labelsTr is a folder of the nnU-Net dataset"):  # the references
        pred.predict_files(inp / "single.nii.gz", tmp_path / "Dataset001_X" / "labelsTr", progress=False)
    (inp / "broken.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(ImageReadError, match="broken.nii.gz"):
        pred.predict_files(inp / "broken.nii.gz", tmp_path / "out", progress=False)
    (inp / "x_0000.nii.gz").write_bytes(b"")
    (inp / "x_0002.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"x_0001.*missing"):
        find_cases(inp)


def test_4d_nifti_channels_first_and_duplicate_case_ids(tmp_path):
    run = make_run(tmp_path / "run", channels=("T1", "T2"))
    img = sitk.JoinSeries([sitk.GetImageFromArray(np.random.default_rng(7).normal(size=(4, 8, 8)).astype(np.float32))
                           for _ in range(2)])  # (t=2, z, y, x) as MSD stores multi-modal volumes
    img.SetSpacing((0.5, 0.6, 2.0, 1.0))
    sitk.WriteImage(img, str(tmp_path / "msd.nii.gz"))
    (out,) = Predictor.from_run(run, device="cpu").predict_files(tmp_path / "msd.nii.gz", tmp_path / "out",
                                                                 progress=False)
    arr, meta = read_image(out)
    assert arr.shape == (4, 8, 8) and np.allclose(meta.spacing, (2.0, 0.6, 0.5))
    dup = tmp_path / "dup"
    dup.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(dup / "a.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(dup / "a.bmp")
    with pytest.raises(ValueError, match="same case id 'a'"):
        find_cases(dup)


def test_from_run_errors(tmp_path):
    run = make_run(tmp_path / "run", checkpoints=("latest",))
    with pytest.raises(FileNotFoundError, match=r"checkpoint_best\.pt.*checkpoint='latest'"):
        Predictor.from_run(run)
    assert Predictor.from_run(run, checkpoint="latest", device="cpu").plan.num_classes == 3
    (run / "plan.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"plan\.json"):
        Predictor.from_run(run, checkpoint="latest")


def test_cli_predict_then_evaluate(tmp_path, capsys):
    run = make_run(tmp_path / "run", spatial_dims=2, patch=[16, 16], num_classes=2)
    inp = tmp_path / "imagesTs"
    inp.mkdir()
    rng = np.random.default_rng(6)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (24, 20), dtype=np.uint8)).save(inp / f"case{i}_0000.png")
    rc = cli_main(["predict", "--run", str(run), "--input", str(inp), "--output", str(tmp_path / "pred"),
                   "--device", "cpu", "--no-progress", "--tta"])
    assert rc == 0 and sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["case0.png", "case1.png"]
    refs = tmp_path / "labelsTs"
    refs.mkdir()
    for i in range(2):
        lab = np.zeros((24, 20), np.uint8)
        lab[5:15, 4:12] = 1
        Image.fromarray(lab).save(refs / f"case{i}.png")
    rc = cli_main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(refs), "--labels", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "mean Dice" in out and "pooled Dice" in out
    assert (tmp_path / "pred" / "summary.json").is_file() and (tmp_path / "pred" / "cases.csv").is_file()
    rc = cli_main(["predict", "--run", str(tmp_path / "nope"), "--input", str(inp), "--output", str(tmp_path)])
    assert rc == 1 and "run folder not found" in capsys.readouterr().err


@pytest.mark.slow
def test_brats_two_volumes(tmp_path, shared_data):
    """Real data: two BraTS 2015 volumes (155x240x240, Flair + T1c), a 2D unet_test slice by slice, geometry kept.

    (A 3D unet_test takes about 10 s per volume at one CPU thread; the 2D path keeps this test at a few seconds.)
    """
    folder = shared_data("brats2015_deepmedic") / "test"
    cases = sorted(p for p in folder.iterdir() if p.is_dir())[:2]
    run = make_run(tmp_path / "run", channels=("Flair", "T1c"), norm=["none", "none"], num_classes=5,
                   spatial_dims=2, patch=[128, 128], slice_axis=0)
    pred = Predictor.from_run(run, device="cpu", overlap=0.0)
    start = time.perf_counter()
    for case in cases:
        inp = tmp_path / "in" / case.name
        inp.mkdir(parents=True)
        for c, name in enumerate(("Flair_subtrMeanDivStd", "T1c_subtrMeanDivStd")):
            os.symlink(case / f"{name}.nii.gz", inp / f"{case.name}_{c:04d}.nii.gz")
        (out,) = pred.predict_files(inp, tmp_path / "out", progress=False)
        arr, om = read_image(out)
        ref, rm = read_image(case / "OTMultiClass.nii.gz")
        assert arr.shape == ref.shape == (155, 240, 240)
        np.testing.assert_allclose(om.spacing, rm.spacing)
        np.testing.assert_allclose(om.origin, rm.origin)
        np.testing.assert_allclose(om.direction, rm.direction)
        assert arr.max() < 5
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize("model_name, patch", [("swin_unet_test", 32), ("umamba_enc", 128)])
def test_from_run_rebuilds_the_model_the_trainer_built(tmp_path, model_name, patch):
    """Models sized by the patch (``img_size`` sets Swin window sizes, ``input_size`` U-Mamba Enc's stages) must be
    rebuilt at the run's patch size, or the checkpoint does not load (a Swin-UNet trained at 64x64 did not)."""
    from mambaseg.models import create_model_for_plan, model_info

    info = model_info(model_name)
    assert "img_size" in info.default_cfg or info.default_cfg.get("input_size") == "auto"
    run = make_run(tmp_path / "run", channels=("c0", "c1", "c2"), spatial_dims=2, num_classes=2, patch=[patch, patch])
    (run / "config.yaml").write_text(yaml.safe_dump({"model": model_name, "model_kwargs": {}}))
    plan = Plan.load(run / "plan.json")
    torch.manual_seed(0)
    trained = create_model_for_plan(model_name, plan)  # what the trainer builds for this plan
    with pytest.raises(RuntimeError):  # the patch size does change the model: a default build cannot load it
        create_model(model_name, in_channels=3, num_classes=2).load_state_dict(trained.state_dict())
    save_checkpoint(run / "checkpoint_best.pt", {"model": trained.state_dict(), "iteration": 1})
    pred = Predictor.from_run(run, device="cpu")
    x = torch.randn(1, 3, patch, patch)
    trained.eval()
    with torch.no_grad():
        want = trained(x)
        got = pred.model(x)
    want = want[0] if isinstance(want, (list, tuple)) else want
    torch.testing.assert_close(got, want)
