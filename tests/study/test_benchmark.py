"""``run_benchmark`` / ``mambaseg benchmark`` on a tiny synthetic 2D dataset: outputs, one split, resume, protocol."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mambaseg import create_model
from mambaseg.data.io import read_image, write_image
from mambaseg.data.nnunet_raw import generate_dataset_json
from mambaseg.data.splits import make_folds
from mambaseg.study.benchmark import make_split_record, run_benchmark

MODELS = ["unet_test", "ultralight_vm_unet_test"]
OVERRIDES = {"batch_size": 2, "patch_size": [32, 32], "val_every": 3}
N_CASES = 16  # holdout 80/10/10 -> 12 train, 2 val, 2 test


def make_squares_dataset(root: Path, n_cases: int = N_CASES, size: int = 32) -> Path:
    """Grey PNG images with noise and one bright square (label 1) each; returns the dataset folder."""
    folder = root / "Dataset901_Squares"
    rng = np.random.default_rng(0)
    for i in range(n_cases):
        img = rng.integers(0, 60, (size, size)).astype(np.uint8)
        lab = np.zeros((size, size), np.uint8)
        side = int(rng.integers(6, 14))
        y, x = (int(v) for v in rng.integers(0, size - side, 2))
        lab[y:y + side, x:x + side] = 1
        img[lab == 1] += 150
        write_image(img, None, folder / "imagesTr" / f"sq{i:02d}_0000.png")
        write_image(lab, None, folder / "labelsTr" / f"sq{i:02d}.png", label=True)
    generate_dataset_json(folder, {0: "grey"}, {"background": 0, "square": 1}, n_cases, ".png")
    return folder


def _run(data: Path, out: Path, **kw):
    """The fixture's benchmark call (2 models x 2 seeds, 3 iterations each), with ``kw`` changed."""
    args = {"budget": {"iterations": 3}, "train_overrides": OVERRIDES, "progress": False, "device": "cpu", **kw}
    return run_benchmark(data, MODELS, 2, out, **args)


def _run_dirs(out: Path) -> list[Path]:
    return sorted(out.glob("runs/*/seed*_fold*"))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    data = make_squares_dataset(root)
    result = _run(data, root / "out")
    return data, root / "out", result


def test_every_run_has_predictions_evaluation_efficiency(bench):
    data, out, result = bench
    assert result["exit_code"] == 0 and not result["failures"]
    assert sorted((r["model"], r["seed"]) for r in result["runs"]) == sorted((m, s) for m in MODELS for s in (0, 1))
    assert {r["state"] for r in result["runs"]} == {"trained"}
    split = json.loads((out / "split.json").read_text())
    runs = _run_dirs(out)
    assert len(runs) == 4
    for run in runs:
        for f in ("config.yaml", "plan.json", "checkpoint_best.pt", "log.csv", "environment.json", "done.json"):
            assert (run / f).is_file(), (run, f)
        preds = sorted(p.name for p in (run / "predictions").iterdir())
        assert preds == [f"{c}.png" for c in split["test"]]  # test cases only
        for name in preds:
            pred, _ = read_image(run / "predictions" / name)
            ref, _ = read_image(data / "labelsTr" / name)
            assert pred.shape == ref.shape and set(np.unique(pred)) <= {0, 1}
        rows = list(csv.DictReader((run / "evaluation" / "cases.csv").open()))
        assert sorted(r["case_id"] for r in rows) == split["test"]
        done = json.loads((run / "done.json").read_text())
        dice = [float(r["dice"]) for r in rows if r["dice"] != "nan"]
        assert done["test_dice"] == pytest.approx(float(np.mean(dice)), abs=1e-9)  # one class: mean of cases
        assert 0.0 <= done["test_dice"] <= 1.0
        eff = json.loads((run / "efficiency.json").read_text())
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        model = create_model(cfg["model"], in_channels=1, num_classes=2)
        assert eff["params"] == sum(p.numel() for p in model.parameters())
        assert eff["flops"] > 0 and eff["flops_input_shape"] == [1, 1, 32, 32]
        assert (eff["flops_scan"] > 0) == (cfg["model"] == "ultralight_vm_unet_test")
        assert len(eff["latency_ms_all"]) == 5 and eff["latency_ms_median"] == pytest.approx(
            float(np.median(eff["latency_ms_all"])))
        assert eff["training_iterations"] == 3 and eff["training_seconds"] > 0 and eff["device"] == "cpu"
        assert eff["peak_memory_bytes"] is None or eff["peak_memory_bytes"] >= 0
    record = json.loads((out / "benchmark.json").read_text())
    assert record["protocol"]["budget"] == {"iterations": 3} and record["protocol"]["train_overrides"] == OVERRIDES
    assert record["models"] == MODELS and record["seeds"] == [0, 1] and record["finished"]
    assert {"torch", "numpy", "git_commit"} <= set(record["environment"]) and "git_commit" in record


def test_one_split_for_all_runs_disjoint(bench):
    data, out, _ = bench
    split = json.loads((out / "split.json").read_text())
    train, val, test = (set(split[k]) for k in ("train", "val", "test"))
    assert len(train) == 12 and len(val) == 2 and len(test) == 2 and split["seed"] == 0
    assert not (train & val or train & test or val & test)
    assert train | val | test == {f"sq{i:02d}" for i in range(N_CASES)}
    for run in _run_dirs(out):
        used = json.loads((run / "splits.json").read_text())
        assert set(used["train"]) == train and set(used["val"]) == val, run
        assert used["source"] == str(out / "split.json")  # read from the benchmark's file, not re-derived
    refs = sorted(p.name for p in (out / "reference" / "fold0").iterdir())
    assert refs == [f"{c}.png" for c in sorted(test)]


def _mtimes(out: Path, name: str) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.glob(f"runs/*/*/{name}")}


def test_second_call_skips_everything(bench):
    data, out, _ = bench
    done, ckpt = _mtimes(out, "done.json"), _mtimes(out, "checkpoint_latest.pt")
    result = _run(data, out)
    assert {r["state"] for r in result["runs"]} == {"skipped"} and result["exit_code"] == 0
    assert _mtimes(out, "done.json") == done and _mtimes(out, "checkpoint_latest.pt") == ckpt
    assert len(json.loads((out / "benchmark.json").read_text())["calls"]) >= 2


def test_missing_steps_are_redone_only_for_that_run(bench):
    data, out, _ = bench
    target = _run_dirs(out)[0]
    (target / "done.json").unlink()
    shutil.rmtree(target / "predictions")
    done, ckpt = _mtimes(out, "done.json"), _mtimes(out, "checkpoint_latest.pt")
    eff, ev = _mtimes(out, "efficiency.json"), _mtimes(out, "evaluation/summary.json")
    result = _run(data, out)
    states = {Path(r["run_dir"]): r["state"] for r in result["runs"]}
    assert states.pop(target) == "completed" and set(states.values()) == {"skipped"}
    assert (target / "done.json").is_file() and len(list((target / "predictions").iterdir())) == 2
    assert _mtimes(out, "checkpoint_latest.pt") == ckpt and _mtimes(out, "efficiency.json") == eff  # no retraining
    new_ev = _mtimes(out, "evaluation/summary.json")
    assert new_ev[target / "evaluation" / "summary.json"] != ev[target / "evaluation" / "summary.json"]
    assert {k: v for k, v in new_ev.items() if target not in k.parents} == {
        k: v for k, v in ev.items() if target not in k.parents}
    new_done = _mtimes(out, "done.json")
    assert {k: new_done[k] for k in done} == done and target / "done.json" in new_done


def test_run_without_train_result_resumes_from_its_checkpoint(bench):
    """A run killed after its last checkpoint (no train_result.json, no done.json) resumes instead of restarting."""
    data, out, _ = bench
    target = _run_dirs(out)[1]
    (target / "train_result.json").unlink()
    (target / "done.json").unlink()
    ckpt = (target / "checkpoint_latest.pt").stat().st_mtime_ns
    result = _run(data, out)
    run = next(r for r in result["runs"] if Path(r["run_dir"]) == target)
    assert run["state"] == "resumed" and run["iterations"] == 3
    assert (target / "checkpoint_latest.pt").stat().st_mtime_ns == ckpt  # nothing left to train
    assert yaml.safe_load((target / "config.yaml").read_text())["resume"] is True
    assert {r["state"] for r in result["runs"] if Path(r["run_dir"]) != target} == {"skipped"}


def test_cross_validation_split_record():
    cases = [f"c{i:02d}" for i in range(15)]
    record = make_split_record(cases, folds=3)
    folds = make_folds(cases, 3, 12345)
    assert [s["test"] for s in record["splits"]] == [f["val"] for f in folds]  # out-of-fold test = the fold's val
    for s, f in zip(record["splits"], folds):
        assert sorted(s["train"] + s["val"]) == f["train"] and len(s["val"]) == 1
        assert not set(s["train"]) & set(s["val"])  # checkpoint selection never sees the test cases
    assert sorted(c for s in record["splits"] for c in s["test"]) == cases
    with pytest.raises(ValueError, match="too few"):
        make_split_record(cases[:3])


def test_plan_target_spacing_override(bench):
    from mambaseg.data.nnunet_raw import RawDataset
    from mambaseg.data.planning import make_plan

    raw = RawDataset(bench[0])
    plan = make_plan(raw, "unet_test", cases=raw.cases[:4], target_spacing=[4, 2])
    assert plan.target_spacing == [4.0, 2.0] and plan.extra["median_shape"] == [8.0, 16.0]
    assert make_plan(raw, "unet_test", cases=raw.cases[:4]).target_spacing is None  # natural images: no resampling
    with pytest.raises(ValueError, match="target_spacing"):
        make_plan(raw, "unet_test", cases=raw.cases[:4], target_spacing=[2])


def test_protocol_change_is_refused(bench):
    data, out, _ = bench
    with pytest.raises(ValueError, match=r"benchmark\.json records a different protocol \(budget: recorded "
                                         r"\{'iterations': 3\}, now \{'iterations': 4\}\)"):
        _run(data, out, budget={"iterations": 4})
    with pytest.raises(ValueError, match=r"benchmark\.json.*train_overrides"):
        _run(data, out, train_overrides={**OVERRIDES, "batch_size": 4})
    with pytest.raises(ValueError, match=r"benchmark\.json.*folds"):
        _run(data, out, folds=2)
    with pytest.raises(ValueError, match=r"model_kwargs\[unet_test\]: recorded \{\}, now \{'n_stages': 2\}"):
        _run(data, out, model_kwargs={"unet_test": {"n_stages": 2}})


def test_cli_target_spacing_failures_and_added_seed(tmp_path, capsys):
    """CLI end to end: resampled training with predictions at the original size, a failing run recorded while the
    other goes on (exit code 1), then a call that only adds a seed."""
    from mambaseg.cli.main import main

    data = make_squares_dataset(tmp_path, n_cases=10)
    out = tmp_path / "cli"
    argv = ["benchmark", "--data", str(data), "--models", "unet_test,ultralight_vm_unet_test", "--seeds", "1",
            "--iterations", "2", "--out", str(out), "--batch-size", "2", "--patch-size", "16", "16",
            "--target-spacing", "2", "2", "--val-every", "2", "--device", "cpu", "--no-progress",
            "--model-kwargs", '{"ultralight_vm_unet_test": {"no_such_argument": 1}}']
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "unet_test" in captured.out and "1 run(s) failed" in captured.err
    good, bad = out / "runs" / "unet_test" / "seed0_fold0", out / "runs" / "ultralight_vm_unet_test" / "seed0_fold0"
    assert (good / "done.json").is_file() and not (bad / "done.json").exists()
    assert "no_such_argument" in (bad / "error.txt").read_text()
    plan = json.loads((good / "plan.json").read_text())
    assert plan["target_spacing"] == [2.0, 2.0] and "given" in plan["extra"]["rules"]["target_spacing"]
    assert np.load(next((good / "preprocessed").glob("*_seg.npy"))).shape == (16, 16)
    pred, _ = read_image(next((good / "predictions").iterdir()))
    assert pred.shape == (32, 32)  # written back at the input size
    record = json.loads((out / "benchmark.json").read_text())
    assert record["calls"][0]["command"].startswith("mambaseg benchmark --data")
    assert record["protocol"]["train_overrides"]["target_spacing"] == [2.0, 2.0]
    assert main([*argv[:3], "--models", "unet_test", "--seeds", "0,3", *argv[7:-2]]) == 0  # adds seed 3
    assert (out / "runs" / "unet_test" / "seed3_fold0" / "done.json").is_file()
    assert json.loads((out / "benchmark.json").read_text())["seeds"] == [0, 3]
    assert "model unet_test" not in (bad / "train.log").read_text()  # the failed run's log handler was closed
    assert math.isfinite(json.loads((good / "done.json").read_text())["latency_ms"])


def test_workers_give_the_same_runs_as_one_process(bench, tmp_path):
    """Two worker processes: every run finishes with the same trained weights' results as in one process (same seeds,
    same data order, single-threaded math), and the benchmark records the call's worker count."""
    data, out, result = bench
    parallel = _run(data, tmp_path / "out", workers=2)
    assert parallel["exit_code"] == 0 and len(parallel["runs"]) == len(result["runs"])
    one = {(r["model"], r["seed"]): r["test_dice"] for r in result["runs"]}
    two = {(r["model"], r["seed"]): r["test_dice"] for r in parallel["runs"]}
    assert one.keys() == two.keys()
    for key in one:
        assert two[key] == pytest.approx(one[key], abs=1e-6), key
    calls = json.loads((tmp_path / "out" / "benchmark.json").read_text())["calls"]
    assert calls[-1]["workers"] == 2
    with pytest.raises(ValueError, match="workers"):
        _run(data, tmp_path / "out3", workers=0)
