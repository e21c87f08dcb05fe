"""`mambaseg compare` on fake benchmark folders: statistics equal direct scipy calls on the same per-case vectors
(tolerance 1e-9), seed averaging on a hand-made example, unfinished runs listed and unused, plots are PNGs, CLI."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from mambaseg.cli.compare import add_compare_parser, run_compare_command
from mambaseg.study.compare import MEAN_CLASS, compare_runs, pareto_front

TOL = 1e-9
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLUMNS = ["case_id", "label", "label_name", "empty", "dice", "hd95", "nsd", "worst_distance_mm"]


def make_run(root: Path, model: str, seed: int, values: dict[str, dict[str, dict[str, float]]], fold: int = 0,
             done: bool = True, efficiency: dict | None = None) -> Path:
    """A benchmark run folder ``root/runs/<model>/seed<s>_fold<f>`` with cases.csv from ``{case: {class: {m: v}}}``."""
    run = root / "runs" / model / f"seed{seed}_fold{fold}"
    (run / "evaluation").mkdir(parents=True)
    (run / "config.yaml").write_text(f"model: {model}\nseed: {seed}\nfold: {fold}\n")
    with open(run / "evaluation" / "cases.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for case, classes in values.items():
            for i, (cls, m) in enumerate(classes.items(), start=1):
                w.writerow([case, i, cls, "none"] + [repr(float(m.get(k, 0.0))) for k in ("dice", "hd95", "nsd")]
                           + [repr(float(m.get("worst", 100.0)))])
    if efficiency is not None:
        (run / "efficiency.json").write_text(json.dumps(efficiency))
    if done:
        (run / "done.json").write_text("{}")
    return run


def dice_runs(root: Path, model: str, table: np.ndarray, cases: list[str], **kw) -> None:
    """One run per row of ``table`` (seeds x cases) with Dice = table, HD95 = 10 (1 - Dice), NSD = Dice^2."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "benchmark.json").write_text(json.dumps({"models": [model], "seeds": list(range(len(table))),
                                                      "git_commit": "abc123"}))
    for s, row in enumerate(table):
        make_run(root, model, s, {c: {"1": {"dice": v, "hd95": 10 * (1 - v), "nsd": v * v}}
                                  for c, v in zip(cases, row)}, **kw)


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and width > 50 and height > 50


def holm_slow(p: list[float]) -> list[float]:
    """Holm by its definition: adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))."""
    m, order = len(p), sorted(range(len(p)), key=lambda i: p[i])
    adj, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def test_two_models_match_scipy_and_seed_average(tmp_path):
    rng = np.random.default_rng(0)
    cases = [f"c{i:02d}" for i in range(24)]
    a = 0.80 + 0.05 * rng.random((3, 24))
    b = 0.78 + 0.05 * rng.random((3, 24))
    dice_runs(tmp_path / "bench", "net_a", a, cases, efficiency={"params": 1e6, "flops": {"total": 2e9},
                                                                 "latency_ms": 5.0, "train_seconds": 10.0})
    bench_style = {"params": 2e6, "flops": 1e9, "latency_ms_median": 8.0, "peak_memory_bytes": 3 * 2**20,
                   "training_seconds": 12.0, "training_iterations": 100, "device": "cpu", "device_name": None}
    dice_runs(tmp_path / "bench", "net_b", b[:, :23], cases[:23], efficiency=bench_style)  # benchmark.py's names
    res = compare_runs([tmp_path / "bench"], tmp_path / "out", metrics=("dice", "hd95"), n_boot=2000, seed=3)

    va, vb = a.mean(axis=0), b[:, :23].mean(axis=0)  # the case is the unit: seeds averaged first
    t = res["tests"]["1"]["dice"]
    assert t["n_common"] == 23 and t["n_dropped"] == 1 and t["friedman"] is None
    (pair,) = t["pairs"]
    assert pair["pvalue"] == pytest.approx(sps.wilcoxon(va[:23], vb).pvalue, abs=TOL)
    assert pair["pvalue_holm"] == pytest.approx(pair["pvalue"], abs=TOL)  # one comparison: Holm is the identity
    assert pair["mean_diff"] == pytest.approx(np.mean(va[:23] - vb), abs=TOL)
    ref_ci = sps.bootstrap((va[:23], vb), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True,
                           n_resamples=2000, method="percentile", rng=np.random.default_rng(3)).confidence_interval
    assert (pair["ci_low"], pair["ci_high"]) == (pytest.approx(ref_ci.low, abs=TOL), pytest.approx(ref_ci.high,
                                                                                                     abs=TOL))
    # HD95: lower is better, the other direction
    hd = res["tests"]["1"]["hd95"]["pairs"][0]
    assert hd["pvalue"] == pytest.approx(sps.wilcoxon(10 * (1 - va[:23]), 10 * (1 - vb)).pvalue, abs=TOL)

    s = res["summary"]["net_a"]["1"]["dice"]
    assert s["n_cases"] == 24 and s["n_seeds"] == 3 and s["n_runs"] == 3
    assert s["mean"] == pytest.approx(va.mean(), abs=TOL) and s["median"] == pytest.approx(np.median(va), abs=TOL)
    assert s["std"] == pytest.approx(va.std(ddof=1), abs=TOL)
    assert s["seed_std"] == pytest.approx(a.mean(axis=1).std(ddof=1), abs=TOL)
    ci = sps.bootstrap((va,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(3))
    assert s["ci_low"] == pytest.approx(ci.confidence_interval.low, abs=TOL)

    assert res["efficiency"]["net_a"]["flops"] == 2e9 and res["efficiency"]["net_b"]["flops"] == 1e9
    eff_b = res["efficiency"]["net_b"]
    assert (eff_b["latency_ms"], eff_b["peak_memory_mb"], eff_b["train_seconds"], eff_b["iterations"]) == (
        8.0, 3.0, 12.0, 100.0) and eff_b["device"] == ["cpu"] and eff_b["n_runs"] == 3
    assert res["pareto"]["flops"]["front"] == ["net_b", "net_a"]  # net_a: more FLOPs and higher Dice
    out = tmp_path / "out"
    with open(out / "per_case.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 24 + 3 * 23 and {"model", "seed", "fold", "case", "class", "dice"} <= set(rows[0])
    for name in ("dice_box", "pareto_flops", "pareto_latency"):
        assert is_png(out / f"{name}.png")
    assert not (out / "cd_diagram.png").exists()
    report = (out / "report.md").read_text()
    assert "abc123" in report and "![Per-case dice](dice_box.png)" in report
    assert json.loads((out / "compare.json").read_text())["tests"]["1"]["dice"]["pairs"][0]["pvalue"] == \
        pair["pvalue"]
    assert "little power" not in report  # 23 paired cases


def test_reference_vector_end_to_end(tmp_path):
    """reference/metrics.md 4.2 through compare (the bare functions are tested in test_eval_statistics.py)."""
    a = np.array([0.91, 0.88, 0.93, 0.85, 0.90, 0.87, 0.92, 0.89, 0.86, 0.94])
    b = np.array([0.89, 0.87, 0.92, 0.86, 0.88, 0.85, 0.91, 0.88, 0.84, 0.93])
    cases = [f"c{i}" for i in range(10)]
    dice_runs(tmp_path / "bench", "a", a[None], cases)
    dice_runs(tmp_path / "bench", "b", b[None], cases)
    res = compare_runs([tmp_path / "bench"], tmp_path / "out", metrics=("dice",), plots=False)
    (pair,) = res["tests"]["1"]["dice"]["pairs"]
    assert pair["pvalue"] == pytest.approx(14 / 1024, abs=TOL)
    assert (pair["ci_low"], pair["ci_high"]) == (pytest.approx(0.006, abs=5e-4), pytest.approx(0.017, abs=5e-4))
    assert pair["significant"] and pair["better"] == "a"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "significant at 0.05 after Holm" in report and "little power" in report  # n = 10 < 20


@pytest.mark.parametrize("reference", [None, "m1"])
def test_three_models_friedman_holm(tmp_path, reference):
    rng = np.random.default_rng(1)
    cases = [f"c{i:02d}" for i in range(15)]
    tables = {f"m{k}": 0.7 + 0.02 * k + 0.1 * rng.random((2, 15)) for k in range(3)}
    for m, tab in tables.items():
        dice_runs(tmp_path / "bench", m, tab, cases,
                  efficiency={"params": 1e5 * (1 + int(m[1])), "flops": 1e8 * (3 - int(m[1])), "latency_ms": 2.0})
    res = compare_runs([tmp_path / "bench"], tmp_path / "out", metrics=("dice",), reference=reference, n_boot=500)
    vals = {m: t.mean(axis=0) for m, t in tables.items()}
    t = res["tests"]["1"]["dice"]
    models = t["models"]
    ref_fr = sps.friedmanchisquare(*(vals[m] for m in models))
    assert t["friedman"]["statistic"] == pytest.approx(ref_fr.statistic, abs=TOL)
    assert t["friedman"]["pvalue"] == pytest.approx(ref_fr.pvalue, abs=TOL)
    ranks = sps.rankdata(-np.c_[tuple(vals[m] for m in models)], axis=1).mean(axis=0)
    assert [t["friedman"]["average_ranks"][m] for m in models] == pytest.approx(ranks.tolist(), abs=TOL)
    q = sps.studentized_range.ppf(0.95, 3, np.inf) / math.sqrt(2)
    assert t["friedman"]["nemenyi_cd"] == pytest.approx(q * math.sqrt(3 * 4 / (6 * 15)), abs=TOL)
    expected_pairs = ([("m0", "m1"), ("m0", "m2"), ("m1", "m2")] if reference is None
                      else [("m1", "m0"), ("m1", "m2")])
    assert [(p["model_a"], p["model_b"]) for p in t["pairs"]] == expected_pairs
    raw = [sps.wilcoxon(vals[x], vals[y]).pvalue for x, y in expected_pairs]
    assert [p["pvalue"] for p in t["pairs"]] == pytest.approx(raw, abs=TOL)
    assert [p["pvalue_holm"] for p in t["pairs"]] == pytest.approx(holm_slow(raw), abs=TOL)
    for p in t["pairs"]:
        assert p["significant"] == (t["friedman"]["pvalue"] <= 0.05 and p["pvalue_holm"] <= 0.05)
    out = tmp_path / "out"
    for name in ("dice_box", "pareto_flops", "pareto_latency", "cd_diagram"):
        assert is_png(out / f"{name}.png")
    assert "Friedman chi2" in (out / "report.md").read_text()
    assert res["pareto"]["flops"]["front"] == pareto_front(
        {m: (res["efficiency"][m]["flops"], res["summary"][m]["1"]["dice"]["mean"]) for m in models})


def test_pareto_front():
    pts = {"a": (1.0, 0.5), "b": (2.0, 0.7), "c": (3.0, 0.6), "d": (3.0, 0.9), "e": (float("nan"), 1.0)}
    assert pareto_front(pts) == ["a", "b", "d"]  # c dominated by b (cheaper and better); e has no cost


def test_seed_averaging_hand_example_and_unfinished(tmp_path):
    bench = tmp_path / "bench"
    nan, inf = float("nan"), float("inf")
    # seed 0: c1 Dice 0.8, c2 0.6; seed 1: c1 0.6, c2 both empty (NaN, not applicable); class "b" as well
    make_run(bench, "net", 0, {"c1": {"a": {"dice": 0.8, "hd95": 2.0}, "b": {"dice": 0.4, "hd95": 4.0}},
                               "c2": {"a": {"dice": 0.6, "hd95": inf, "worst": 50.0}, "b": {"dice": 0.2}}})
    make_run(bench, "net", 1, {"c1": {"a": {"dice": 0.6, "hd95": 6.0}, "b": {"dice": 0.0, "hd95": 8.0}},
                               "c2": {"a": {"dice": nan, "hd95": nan}, "b": {"dice": 0.4}}})
    unfinished = make_run(bench, "net", 2, {"c1": {"a": {"dice": 0.0}, "b": {"dice": 0.0}}}, done=False)
    res = compare_runs([bench], tmp_path / "out", metrics=("dice", "hd95"), plots=False)
    s = res["summary"]["net"]["a"]["dice"]
    assert s["n_cases"] == 2 and s["mean"] == pytest.approx((0.7 + 0.6) / 2, abs=TOL)  # c2: NaN seed ignored
    assert s["per_seed_mean"] == {"0": pytest.approx(0.7, abs=TOL), "1": pytest.approx(0.6, abs=TOL)}
    assert s["seed_std"] == pytest.approx(np.std([0.7, 0.6], ddof=1), abs=TOL)
    assert s["n_runs"] == 2 and s["n_seeds"] == 2  # the unfinished seed 2 is not used
    hd = res["summary"]["net"]["a"]["hd95"]  # inf -> worst_distance_mm 50, counted
    assert hd["mean"] == pytest.approx((4.0 + 50.0) / 2, abs=TOL) and hd["n_substituted"] == 1
    # mean over classes per run and case first: seed0 c1 0.6, c2 0.4; seed1 c1 0.3, c2 0.4 (only b defined)
    m = res["summary"]["net"][MEAN_CLASS]["dice"]
    assert m["mean"] == pytest.approx(((0.6 + 0.3) / 2 + 0.4) / 2, abs=TOL)
    assert res["primary_class"] == MEAN_CLASS
    assert [u["path"] for u in res["unfinished"]] == [str(unfinished.resolve())]
    with open(tmp_path / "out" / "per_case.csv") as fh:
        assert {r["seed"] for r in csv.DictReader(fh)} == {"0", "1"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "not used" in report and "seed2_fold0" in report and "only one model" in report
    assert "replaced by the image diagonal (a mask was empty: a miss counts as the worst distance): net hd95 " \
        "(class a): 1." in report  # the primary class is the mean over classes: counted per class
    assert "Cases undefined in every seed" not in report  # c2's Dice is defined in seed 0
    # a single run folder works as input too, and the unfinished one alone is an error naming the reason
    one = compare_runs([bench / "runs" / "net" / "seed0_fold0"], tmp_path / "one", metrics=("dice",), plots=False)
    assert one["summary"]["net"]["a"]["dice"]["mean"] == pytest.approx(0.7, abs=TOL)
    with pytest.raises(ValueError, match="no done.json"):
        compare_runs([unfinished], tmp_path / "none", plots=False)
    with pytest.raises(ValueError, match="reference model"):
        compare_runs([bench], tmp_path / "x", metrics=("dice",), reference="nope", plots=False)
    with pytest.raises(ValueError, match="not in the runs"):
        compare_runs([bench], tmp_path / "x", metrics=("iou",), plots=False)


def test_cli(tmp_path, capsys):
    rng = np.random.default_rng(2)
    cases = [f"c{i}" for i in range(8)]
    dice_runs(tmp_path / "bench", "x", 0.8 + 0.1 * rng.random((2, 8)), cases)
    dice_runs(tmp_path / "bench", "y", 0.7 + 0.1 * rng.random((2, 8)), cases)
    parser = argparse.ArgumentParser(prog="mambaseg")
    add_compare_parser(parser.add_subparsers(dest="command"))
    argv = ["compare", str(tmp_path / "bench"), "--out", str(tmp_path / "out"), "--metrics", "dice,hd95",
            "--reference", "y", "--n-boot", "200", "--no-plots", "--reproduce", "bash study.sh"]
    assert run_compare_command(parser.parse_args(argv), argv) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "y vs x" in printed and "| x |" in printed
    res = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert res["metrics"] == ["dice", "hd95"] and res["reference"] == "y" and "--reference y" in res["command"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "--reference y" in report
    assert report.splitlines()[2] == "Reproduce the whole study (training included) with: `bash study.sh`"
    bad = ["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]
    assert run_compare_command(parser.parse_args(bad), bad) == 1
    assert "not a folder" in capsys.readouterr().err


def test_evaluate_folders_output_agrees_with_its_summary(tmp_path):
    """Real cases.csv from evaluate_folders (a missed class: HD95 inf; a both-empty class: NaN): with one seed the
    comparison's per-class mean, NaN and substitution counts equal evaluate_folders' own summary."""
    import SimpleITK as sitk

    from mambaseg.evaluation.evaluate import evaluate_folders

    def write(arr, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        img = sitk.GetImageFromArray(arr.astype(np.uint8))
        img.SetSpacing((1.0, 1.0, 2.0))
        sitk.WriteImage(img, str(path))

    rng = np.random.default_rng(4)
    refs = []
    for i in range(4):
        ref = np.zeros((4, 10, 10), np.uint8)
        ref[1:3, 2:6, 2:6] = 1
        if i != 3:
            ref[1:3, 7:9, 6:9] = 2  # case 3: class 2 absent from the reference
        write(ref, tmp_path / "ref" / f"case{i}.nii.gz")
        refs.append(ref)
    summaries = {}
    for model in ("good", "bad"):
        run = make_run(tmp_path / "bench", model, 0, {})  # folders only; cases.csv is replaced below
        for i, ref in enumerate(refs):
            pred = np.where(rng.random(ref.shape) < (0.05 if model == "good" else 0.2), 0, ref)
            if model == "bad" and i == 0:
                pred[pred == 2] = 0  # a missed structure: HD95 inf -> worst distance
            write(pred, run / "predictions" / f"case{i}.nii.gz")
        summaries[model] = evaluate_folders(run / "predictions", tmp_path / "ref", labels=[1, 2],
                                            out=run / "evaluation")
    res = compare_runs([tmp_path / "bench"], tmp_path / "out", metrics=("dice", "hd95", "nsd"), n_boot=200,
                       plots=False)
    for model, summary in summaries.items():
        for cls in ("1", "2"):
            for metric in ("dice", "hd95", "nsd"):
                ours, theirs = res["summary"][model][cls][metric], summary["classes"][cls]["metrics"][metric]
                assert ours["mean"] == pytest.approx(theirs["mean"], abs=TOL)
                assert (ours["n_cases"], ours["n_nan"], ours["n_substituted"]) == (
                    theirs["n"], theirs["n_nan"], theirs["n_substituted"])
    assert res["summary"]["bad"]["2"]["hd95"]["n_substituted"] == 1
    assert res["tests"]["2"]["dice"]["n_common"] == 3 and res["tests"]["2"]["dice"]["n_dropped"] == 1


def test_direction_follows_the_signed_ranks_and_a_disagreeing_mean_is_said(tmp_path):
    """A beats B by 0.01 on 19 cases and loses by 0.5 on one: the Wilcoxon test rejects in A's favour while the mean
    difference favours B. The report must not call B better (a review found it did)."""
    cases = [f"c{i:02d}" for i in range(20)]
    b = np.full(20, 0.70)
    a = b + 0.01
    a[7] = b[7] - 0.5
    dice_runs(tmp_path / "bench", "net_a", a[None], cases)
    dice_runs(tmp_path / "bench", "net_b", b[None], cases)
    res = compare_runs([tmp_path / "bench"], tmp_path / "out", metrics=("dice", "hd95"), n_boot=500)
    (pair,) = res["tests"]["1"]["dice"]["pairs"]
    assert pair["significant"] and pair["mean_diff"] < 0
    assert sps.wilcoxon(a, b, alternative="greater").pvalue < 0.001  # the ranks favour A
    d = np.round(a - b, 6)
    assert pair["signed_rank_sum"] == pytest.approx(np.sum(np.sign(d) * sps.rankdata(np.abs(d))), abs=TOL)
    assert pair["signed_rank_sum"] > 0
    assert pair["better"] == "net_a" and pair["mean_agrees"] is False
    hd = res["tests"]["1"]["hd95"]["pairs"][0]  # HD95 = 10 (1 - Dice): lower is better, same verdict
    assert hd["better"] == "net_a" and hd["mean_agrees"] is False
    report = (tmp_path / "out" / "report.md").read_text()
    assert "net_b is better" not in report and "net_a is better" not in report
    assert "no single winner: the signed ranks favour net_a, the mean difference favours net_b" in report
    assert "Neither is better overall" in report


def test_agreeing_directions_keep_the_plain_verdict(tmp_path):
    cases = [f"c{i:02d}" for i in range(20)]
    b = np.linspace(0.5, 0.7, 20)
    dice_runs(tmp_path / "bench", "net_a", (b - 0.02)[None], cases)
    dice_runs(tmp_path / "bench", "net_b", b[None], cases)
    res = compare_runs([tmp_path / "bench"], tmp_path / "out", metrics=("dice",), n_boot=500)
    (pair,) = res["tests"]["1"]["dice"]["pairs"]
    assert pair["better"] == "net_b" and pair["mean_agrees"] and pair["significant"]
    assert "net_b is better than net_a on dice" in (tmp_path / "out" / "report.md").read_text()


def test_report_counts_cases_undefined_in_every_seed(tmp_path):
    cases = [f"c{i:02d}" for i in range(6)]
    a = np.array([[0.8, 0.7, np.nan, 0.6, 0.9, 0.5]] * 2)  # c02 both empty in both seeds
    dice_runs(tmp_path / "bench", "net_a", a, cases)
    dice_runs(tmp_path / "bench", "net_b", np.full((2, 6), 0.6), cases)
    for run in (tmp_path / "bench" / "runs").glob("*/*"):  # what evaluate_folders records with the cases
        (run / "evaluation" / "summary.json").write_text(json.dumps({"provenance": {"nsd_tolerance_mm": 2.0}}))
    res = compare_runs([tmp_path / "bench"], tmp_path / "out", metrics=("dice",), n_boot=200, plots=False)
    assert res["summary"]["net_a"]["1"]["dice"]["n_nan"] == 1
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Cases undefined in every seed and left out (e.g. Dice with both masks empty): net_a dice: 1." in report
    assert "NSD tolerance of these runs: 2.0 mm (4 run(s))." in report


def test_pareto_plot_draws_each_models_ci(tmp_path, monkeypatch):
    from mambaseg.study import plots

    made = []
    real = plots._figure
    monkeypatch.setattr(plots, "_figure", lambda w, h: made.append(real(w, h)) or made[-1])
    plots.pareto_plot({"a": (1e9, 0.80), "b": (2e9, 0.81)}, ["a", "b"], tmp_path / "p.png", "FLOPs", "Dice",
                      {"a": (0.70, 0.85), "b": (None, None)})
    assert is_png(tmp_path / "p.png")
    (ax,) = made[0].axes
    bars = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(bars) == 1  # b has no CI: no bar
    (segment,) = bars[0].lines[2][0].get_segments()
    assert segment[:, 1].tolist() == pytest.approx([0.70, 0.85])
