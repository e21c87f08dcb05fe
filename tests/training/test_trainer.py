"""``train()`` and ``mambaseg train`` on real Kvasir-SEG / ACDC subsets: run folder, loss, resume, refusal, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from mambaseg.training.checkpoint import load_checkpoint
from mambaseg.training.trainer import TrainConfig, resolve_config, train

RUN_FILES = ("config.yaml", "plan.json", "splits.json", "seeds.json", "environment.json", "log.csv", "train.log",
             "checkpoint_latest.pt", "checkpoint_best.pt")



@pytest.fixture(scope="module")
def kvasir(tmp_path_factory, shared_data) -> Path:
    from mambaseg.data.convert import convert_folders_2d

    return convert_folders_2d(shared_data("kvasir_seg"), tmp_path_factory.mktemp("raw"), 1, "Kvasir", limit=12)


@pytest.fixture(scope="module")
def acdc(tmp_path_factory, shared_data) -> Path:
    from mambaseg.data.convert import convert_acdc_h5

    return convert_acdc_h5(shared_data("acdc_ssl4mis"), tmp_path_factory.mktemp("raw"), 27, "ACDC", limit=4)


def _cfg(data: Path, out: Path, model: str = "unet_test", **kw) -> TrainConfig:
    base = {"data": str(data), "model": model, "out": str(out), "iterations": 20, "val_every": 20,
            "patch_size": [64, 64], "batch_size": 4, "progress": False}
    return TrainConfig(**{**base, **kw})


class _Losses:
    def __init__(self, stop_at: int | None = None):
        self.values, self.stop_at = [], stop_at

    def __call__(self, event, state):
        if event == "iteration":
            self.values.append(state["loss"])
            if state["iteration"] == self.stop_at:
                raise KeyboardInterrupt


@pytest.mark.parametrize("model", ["unet_test", "umamba_bot_test"])
def test_short_run_writes_run_folder_and_learns(kvasir, tmp_path, model):
    losses = _Losses()
    res = train(_cfg(kvasir, tmp_path / "run", model, iterations=24, val_every=24), callbacks=[losses])
    run = res.run_dir
    for f in RUN_FILES:
        assert (run / f).is_file(), f
    assert res.iterations == 24 and 0.0 <= res.best_dice <= 1.0
    first, last = sum(losses.values[:8]) / 8, sum(losses.values[-8:]) / 8
    assert last < first, losses.values
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"] == model and cfg["optimizer"] == "sgd" and cfg["momentum"] == 0.99  # nnU-Net preset
    assert cfg["resolved_preset"] == "nnunet" and cfg["loss"] == "dice_ce"
    split = json.loads((run / "splits.json").read_text())
    assert split["train"] and split["val"] and not set(split["train"]) & set(split["val"])
    env = json.loads((run / "environment.json").read_text())
    assert {"mambaseg", "torch", "numpy", "monai", "SimpleITK", "python", "platform", "git_commit"} <= set(env)
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert rows[-1]["iteration"] == "24" and "dice_foreground" in rows[-1] and "lr" in rows[-1]
    assert len(list((run / "preprocessed").glob("*.npy"))) == 2 * (len(split["train"]) + len(split["val"]))
    ck = load_checkpoint(run / "checkpoint_latest.pt")
    assert {"model", "optimizer", "scheduler", "grad_scaler", "iteration", "best_dice", "rng", "sampler"} <= set(ck)
    assert ck["iteration"] == 24 and ck["sampler"]["position"] == 24


def test_resume_equals_uninterrupted(kvasir, tmp_path):
    full = train(_cfg(kvasir, tmp_path / "full", iterations=12, val_every=6))
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C after iteration 6 saves checkpoint_latest.pt
        train(_cfg(kvasir, tmp_path / "split", iterations=12, val_every=6), callbacks=[_Losses(stop_at=5)])
    assert load_checkpoint(tmp_path / "split" / "checkpoint_latest.pt")["iteration"] == 5
    resumed = train(_cfg(kvasir, tmp_path / "split", iterations=12, val_every=6, resume=True))
    assert resumed.iterations == full.iterations == 12
    a = load_checkpoint(tmp_path / "full" / "checkpoint_latest.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "checkpoint_latest.pt")["model"]
    for k in a:  # bitwise on CPU in practice; the contract is 1e-6
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), k
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = list(csv.DictReader((tmp_path / "split" / "log.csv").open()))
    assert [r["iteration"] for r in log] == ["6", "12"]  # resumed run appends to the log


def test_refuses_to_overwrite_and_clear_errors(kvasir, tmp_path):
    out = tmp_path / "run"
    train(_cfg(kvasir, out, iterations=2, val_every=2, val_max_cases=0))
    with pytest.raises(FileExistsError, match=str(out).replace("\\", "\\\\")):
        train(_cfg(kvasir, out, iterations=2))
    res = train(_cfg(kvasir, out, iterations=2, val_every=2, overwrite=True, augmentation=False, val_max_cases=0))
    assert res.iterations == 2
    with pytest.raises(ValueError, match="Did you mean"):
        train(_cfg(kvasir, tmp_path / "x", model="unet_tset"))
    with pytest.raises(FileNotFoundError, match="mambaseg data check"):
        train(_cfg(tmp_path / "nope", tmp_path / "y"))
    with pytest.raises(ValueError, match="3D model"):  # fails while planning, after train.log was opened
        train(_cfg(kvasir, tmp_path / "z", model_kwargs={"spatial_dims": 3}, patch_size=None))
    import logging

    left = [h for h in logging.getLogger("mambaseg.training").handlers if isinstance(h, logging.FileHandler)]
    assert left == [], f"failed runs left their train.log attached: {[h.baseFilename for h in left]}"


def test_overwrite_or_resume_with_bad_input_loses_nothing(kvasir, tmp_path):
    """A failing --overwrite keeps the old run; labels outside dataset.json and resuming on other data are refused."""
    import shutil

    import numpy as np

    from mambaseg.data.io import read_image, write_image

    out = tmp_path / "run"
    train(_cfg(kvasir, out, iterations=2, val_every=2))
    kept = {n: (out / n).read_bytes() for n in ("checkpoint_latest.pt", "config.yaml", "plan.json", "log.csv",
                                                 "splits.json", "train.log")}
    bad = shutil.copytree(kvasir, tmp_path / "raw" / kvasir.name)
    case = json.loads((out / "splits.json").read_text())["train"][0]
    mask, _ = read_image(bad / "labelsTr" / f"{case}.png")
    write_image(mask.astype(np.uint8) * 255, None, bad / "labelsTr" / f"{case}.png", label=True)  # 0/255 mask
    with pytest.raises(ValueError, match=rf"{case}\.png: label value\(s\) \[255\] are not in"):
        train(_cfg(bad, out, iterations=2, overwrite=True))
    for name, content in kept.items():
        assert (out / name).read_bytes()[: len(content)] == content, name  # train.log only grows
    with pytest.raises(ValueError, match=r"label value\(s\) \[255\]"):  # a copy: resumed, its files read again
        train(_cfg(bad, out, iterations=3, resume=True))
    other = shutil.copytree(kvasir, tmp_path / "other" / kvasir.name)
    dj = json.loads((other / "dataset.json").read_text())
    (other / "dataset.json").write_text(json.dumps({**dj, "description": "another dataset"}))
    with pytest.raises(ValueError, match="was trained on"):
        train(_cfg(other, out, iterations=3, resume=True))
    assert (out / "config.yaml").read_bytes() == kept["config.yaml"]
    train(_cfg(kvasir, out, iterations=2, val_every=2, overwrite=True))
    assert (out / "train.log").read_text().count("finished 2 iterations") == 1  # the old run's log is gone


def test_cli_reports_unreadable_inputs_without_a_traceback(kvasir, tmp_path, capsys):
    import shutil

    from mambaseg.cli.main import main

    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 1
    assert f"{tmp_path / 'bad.yaml'} is not valid YAML" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path)]) == 1  # a folder
    assert str(tmp_path) in capsys.readouterr().err
    data = shutil.copytree(kvasir, tmp_path / "raw" / kvasir.name)
    image = sorted((data / "imagesTr").iterdir())[0]
    image.write_bytes(image.read_bytes()[:2000])  # truncated
    argv = ["train", "--data", str(data), "--model", "unet_test", "--out", str(tmp_path / "run"), "--iterations",
            "1", "--patch-size", "64", "64", "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("mambaseg train: error:") and image.name in err and "Traceback" not in err


def test_presets_and_overrides():
    cfg, name = resolve_config(TrainConfig(data="d", model="mamba_unet_test", out="o"))
    assert name == "mamba_unet" and (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay) == ("sgd", 0.01, 0.9, 1e-4)
    assert (cfg.loss, cfg.batch_size, cfg.patch_size, cfg.iterations, cfg.schedule) == (
        "ssl4mis", 24, [224, 224], 10_000, "poly")
    cfg, _ = resolve_config(TrainConfig(data="d", model="mamba_unet_test", out="o", lr=0.1, epochs=3))
    assert cfg.lr == 0.1 and cfg.epochs == 3 and cfg.iterations is None
    cfg, name = resolve_config(TrainConfig(data="d", model="vm_unet_test", out="o"))
    assert (name, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.schedule, cfg.loss) == (
        "vm_unet", "adamw", 1e-3, 1e-2, "cosine", "bce_dice")
    cfg, name = resolve_config(TrainConfig(data="d", model="swin_umamba_test", out="o"))
    assert (name, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.schedule) == ("swin_umamba", "adamw", 1e-4, 0.05,
                                                                            "cosine")
    cfg, name = resolve_config(TrainConfig(data="d", model="umamba_enc_test", out="o"))
    assert (name, cfg.nesterov, cfg.momentum, cfg.weight_decay, cfg.deep_supervision) == (
        "nnunet", True, 0.99, 3e-5, "auto")
    with pytest.raises(ValueError, match="only one of"):
        resolve_config(TrainConfig(data="d", model="unet_test", out="o", iterations=3, epochs=2))


def test_2d_model_on_acdc_volumes_and_time_budget(acdc, tmp_path):
    res = train(_cfg(acdc, tmp_path / "acdc", "unet_test", iterations=None, time_budget_minutes=0.02,
                     val_every=10_000, val_max_cases=1, batch_size=2))
    assert res.iterations >= 1 and set(res.history[-1]) >= {"dice_RV", "dice_MYO", "dice_LV"}
    plan = json.loads((tmp_path / "acdc" / "plan.json").read_text())
    assert plan["slice_axis"] == 0 and plan["spatial_dims"] == 2


def test_cli_parse_and_end_to_end(kvasir, tmp_path, capsys):
    from mambaseg.cli.main import build_parser, main
    from mambaseg.cli.train import config_values

    p = build_parser()
    with pytest.raises(SystemExit):
        p.parse_args(["train", "--iterations", "3", "--epochs", "2"])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"data": str(kvasir), "model": "unet_test", "epochs": 5,
                                                     "lr": 0.5, "seed": 3}))
    args = p.parse_args(["train", "--config", str(tmp_path / "c.yaml"), "--iterations", "4", "--lr", "0.02",
                         "--no-augmentation", "--patch-size", "64", "64"])
    vals = config_values(args)
    assert vals["iterations"] == 4 and "epochs" not in vals and vals["lr"] == 0.02 and vals["seed"] == 3
    assert vals["augmentation"] is False and vals["patch_size"] == [64, 64] and "resume" not in vals
    out = tmp_path / "cli_run"
    argv = ["train", "--data", str(kvasir), "--model", "unet_test", "--out", str(out), "--iterations", "3",
            "--val-every", "3", "--patch-size", "64", "64", "--batch-size", "2", "--no-progress"]
    assert main(argv) == 0
    assert "run folder" in capsys.readouterr().out and (out / "checkpoint_latest.pt").is_file()
    assert main(argv) == 1 and "--overwrite" in capsys.readouterr().err
    assert main(argv + ["--resume", "--iterations", "5"]) == 0  # resume extends the budget to 5 iterations
    assert load_checkpoint(out / "checkpoint_latest.pt")["iteration"] == 5
    capsys.readouterr()

    # the run's held-out cases (the dataset split's test list, in imagesTr) -> predict --split test -> evaluate
    test_cases = json.loads((kvasir / "splits.json").read_text())["test"]
    run_split = json.loads((out / "splits.json").read_text())
    assert run_split["test"] == test_cases and not set(test_cases) & set(run_split["train"] + run_split["val"])
    pred = tmp_path / "pred"
    assert main(["predict", "--run", str(out), "--split", "test", "--output", str(pred), "--checkpoint", "latest",
                 "--device", "cpu", "--no-progress"]) == 0
    assert sorted(p.name for p in pred.iterdir()) == sorted(f"{c}.png" for c in test_cases)
    assert main(["evaluate", "--pred", str(pred), "--ref", str(kvasir / "labelsTr")]) == 1
    assert "--pred-cases-only" in capsys.readouterr().err  # the default still wants every reference
    assert main(["evaluate", "--pred", str(pred), "--ref", str(kvasir / "labelsTr"), "--pred-cases-only"]) == 0
    summary = json.loads((pred / "summary.json").read_text())
    assert sorted(r["case_id"] for r in summary["metric_per_case"]) == sorted(test_cases)
    assert summary["provenance"]["cases"] == "predicted cases only"
    assert main(["predict", "--run", str(out), "--input", str(kvasir), "--output", str(tmp_path / "p2")]) == 1
    err = capsys.readouterr().err
    assert "without imagesTs" in err and "--split test" in err
    assert run_split["dataset"] == str(kvasir.resolve())
    del run_split["test"]  # a run from before the test list was recorded
    (out / "splits.json").write_text(json.dumps(run_split))
    assert main(["predict", "--run", str(out), "--split", "test", "--output", str(pred)]) == 1
    assert "records no 'test' cases" in capsys.readouterr().err
    assert main(argv + ["--resume", "--iterations", "6"]) == 0  # resuming it does not invent a test list
    assert "test" not in json.loads((out / "splits.json").read_text())


def test_workers_give_the_same_batches(kvasir, tmp_path):
    """Batch i depends on (seed, i) only, so DataLoader workers change nothing."""
    for nw in (0, 1):
        train(_cfg(kvasir, tmp_path / f"w{nw}", iterations=3, val_every=3, batch_size=2, num_workers=nw,
                   val_max_cases=0))
    a = load_checkpoint(tmp_path / "w0" / "checkpoint_latest.pt")["model"]
    b = load_checkpoint(tmp_path / "w1" / "checkpoint_latest.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
