"""Compare finished benchmark runs: per-case table, per-model summaries, paired statistics, efficiency, report.

Follows the comparison protocol of DESIGN.md and reference/metrics.md section 4.2 (per-case tables as the primary
record; paired Wilcoxon signed-rank with a paired bootstrap CI for two models; Friedman, then Holm-corrected
pairwise Wilcoxon, average ranks and the Nemenyi critical difference for more). The tests themselves live in
:mod:`mambaseg.evaluation.statistics`; this module only decides which per-case vectors enter them.

Conventions:

* **Inputs**: a benchmark folder (``benchmark.json`` and/or ``runs/<model>/<run>/``) contributes all its runs; a
  single run folder contributes itself, a folder of run folders (``runs/<model>/``) each of them. A run is
  *finished* when ``done.json`` exists and it has ``evaluation/cases.csv``; every other run is listed as
  unfinished (with the reason) and never used. Model, seed and fold come from the run's ``config.yaml``
  (``model``, ``seed``, ``fold``), else from the folder names ``<model>/seed<s>_fold<f>``.
* **Missing values** (as :mod:`mambaseg.evaluation.aggregate`): NaN (not applicable, e.g. both masks empty) is
  excluded and counted; an infinite distance (one mask empty: a missed or hallucinated structure) is replaced by the
  row's ``worst_distance_mm`` (image diagonal in mm) and counted, so misses make a model worse, never better.
* **The case is the statistical unit**: a model's value for (case, class) is the mean over every run (seeds, and
  folds that evaluated the case) of that model with a defined value; NaN when no run has one. "Mean over classes"
  (key :data:`MEAN_CLASS`, only with more than one class) is first taken per run and case (mean over the classes
  with a defined value), then averaged over runs in the same way.
* **Summaries** per model, class and metric: mean, median, std (ddof=1) and a percentile bootstrap CI (level
  ``1 - alpha``) of the mean over cases; ``seed_std`` is the std (ddof=1) over seeds of the per-seed mean, which
  shows seed variance without treating seeds as independent samples.
* **Paired tests** use only cases with a defined value for every compared model (``n_dropped`` says how many were
  left out). Two models: :func:`paired_wilcoxon` and :func:`paired_bootstrap_mean_diff_ci`. More: :func:`friedman`;
  pairwise Wilcoxon over all pairs (or each model against ``reference``) Holm-corrected within one class and metric,
  each with a paired bootstrap CI (level ``1 - alpha``, not adjusted); a pair is called *significant* only when the
  Friedman test rejects at ``alpha`` and its Holm-adjusted p-value is ``<= alpha``. No correction is made across
  metrics or classes: the first metric on "mean over classes" (or the only class) is the primary comparison.
  A significant pair's winner (``better``) is the model its signed ranks favour (W+ - W-); when the mean difference
  favours the other one, ``mean_agrees`` is False and the report names no single winner.
* **Metrics** are those of ``mambaseg evaluate`` (:mod:`mambaseg.evaluation.metrics`): HD95 is the larger of the
  two directed 95th percentiles of the boundary distances (linear interpolation, as MONAI and MetricsReloaded);
  NSD counts boundary points within a tolerance in mm, which each run's ``evaluation/summary.json`` records.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.aggregate import to_jsonable
from ..evaluation.metrics import ALL_METRICS, DISTANCE_METRICS
from ..evaluation.statistics import (
    bootstrap_ci,
    friedman,
    holm,
    nemenyi_cd,
    paired_bootstrap_mean_diff_ci,
    paired_wilcoxon,
)

__all__ = ["MEAN_CLASS", "compare_runs", "find_runs", "load_case_records", "pareto_front"]

PathLike = str | Path
MEAN_CLASS = "mean_over_classes"
SMALL_N = 20
EFFICIENCY_KEYS = ("params", "flops", "latency_ms", "peak_memory_mb", "train_seconds", "iterations")
_EFFICIENCY_ALIASES = {"params": [("params", 1.0)], "flops": [("flops", 1.0)],
                       "latency_ms": [("latency_ms", 1.0), ("latency_ms_median", 1.0)],
                       "peak_memory_mb": [("peak_memory_mb", 1.0), ("peak_memory_bytes", 1.0 / 2**20)],
                       "train_seconds": [("train_seconds", 1.0), ("training_seconds", 1.0)],
                       "iterations": [("iterations", 1.0), ("training_iterations", 1.0)]}
_EFFICIENCY_INFO = {"device": ("device_name", "device"), "memory_kind": ("memory_kind", "peak_memory_method"),
                    "input_shape": ("input_shape", "flops_input_shape")}
_RUN_NAME = re.compile(r"seed(?P<seed>-?\d+)(?:_fold(?P<fold>[^/_]+))?\Z")


# ------------------------------------------------------------------------------------------------ discovering runs
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from err


def _is_run(folder: Path) -> bool:
    return any((folder / n).exists() for n in ("done.json", "config.yaml", "efficiency.json", "evaluation"))


def _run_identity(folder: Path) -> dict[str, Any]:
    """Model, seed and fold of a run folder: config.yaml first, then the folder names."""
    ident: dict[str, Any] = {"model": None, "seed": None, "fold": None}
    config = folder / "config.yaml"
    if config.is_file():
        import yaml

        try:
            cfg = yaml.safe_load(config.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{config}: not valid YAML ({err})") from err
        if isinstance(cfg, dict):
            ident.update({k: cfg.get(k) for k in ident})
    match = _RUN_NAME.match(folder.name)
    if ident["model"] in (None, ""):
        ident["model"] = folder.parent.name if match else folder.name
    if ident["seed"] is None and match:
        ident["seed"] = int(match["seed"])
    if ident["fold"] is None and match and match["fold"] is not None:
        fold = match["fold"]
        ident["fold"] = int(fold) if fold.lstrip("-").isdigit() else fold
    ident["model"] = str(ident["model"])
    return ident


def find_runs(paths: Iterable[PathLike]) -> dict[str, Any]:
    """Find the run folders under benchmark folders and/or single run folders.

    Args:
        paths: benchmark OUT folders (``benchmark.json``, ``runs/<model>/<run>/``), run folders, or folders of
            run folders.

    Returns:
        ``{"finished": [run], "unfinished": [run + "reason"], "benchmarks": [{"path", "benchmark", "split"}]}``;
        a run is ``{"path", "model", "seed", "fold"}``.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a path is neither a benchmark nor a run folder, or two different folders claim the same model,
            seed and fold.
    """
    benchmarks, run_dirs = [], []
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            raise FileNotFoundError(f"compare: {path} is not a folder")
        if (path / "benchmark.json").is_file() or (path / "runs").is_dir():
            bench = _read_json(path / "benchmark.json") if (path / "benchmark.json").is_file() else None
            split = _read_json(path / "split.json") if (path / "split.json").is_file() else None
            benchmarks.append({"path": str(path.resolve()), "benchmark": bench, "split": split})
            runs_root = path / "runs"
            if runs_root.is_dir():
                run_dirs += [r for m in sorted(runs_root.iterdir()) if m.is_dir() for r in sorted(m.iterdir())
                             if r.is_dir()]
        elif _is_run(path):
            run_dirs.append(path)
        elif any(_is_run(child) for child in path.iterdir() if child.is_dir()):  # runs/<model>/
            run_dirs += [child for child in sorted(path.iterdir()) if child.is_dir() and _is_run(child)]
        else:
            raise ValueError(f"compare: {path} is neither a benchmark folder (benchmark.json, runs/), a run folder "
                             "(done.json, config.yaml, evaluation/) nor a folder of run folders")
    finished, unfinished, seen = [], [], {}
    for folder in dict.fromkeys(r.resolve() for r in run_dirs):
        run = {"path": str(folder), **_run_identity(folder)}
        if not (folder / "done.json").is_file():
            failed = (folder / "error.txt").is_file()
            unfinished.append({**run, "reason": "failed (error.txt), no done.json" if failed else
                               "no done.json (unfinished)"})
            continue
        if not (folder / "evaluation" / "cases.csv").is_file():
            unfinished.append({**run, "reason": "done.json but no evaluation/cases.csv"})
            continue
        key = (run["model"], run["seed"], run["fold"])
        if key in seen:
            raise ValueError(f"compare: two run folders are model {key[0]!r}, seed {key[1]}, fold {key[2]}: "
                             f"{seen[key]} and {folder}; compare them in separate calls")
        seen[key] = folder
        finished.append(run)
    return {"finished": finished, "unfinished": unfinished, "benchmarks": benchmarks}


# ------------------------------------------------------------------------------------------------ per-case records
def _float(text: str | None) -> float:
    if text is None or text.strip() == "":
        return math.nan
    return float(text)


def load_case_records(run: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a run's ``evaluation/cases.csv`` as records (model, seed, fold, case, class, empty, metrics...).

    Returns:
        ``(records, metric_names)``; metric values keep NaN and inf as written.
    """
    path = Path(run["path"]) / "evaluation" / "cases.csv"
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        metric_names = [m for m in ALL_METRICS if m in cols]
        if "case_id" not in cols or not metric_names:
            raise ValueError(f"{path}: expected a case_id column and metric columns ({', '.join(ALL_METRICS)}), "
                             f"got {cols}")
        records = []
        for row in reader:
            cls = row.get("label_name") or row.get("label") or "1"
            rec = {"model": run["model"], "seed": run["seed"], "fold": run["fold"], "case": row["case_id"],
                   "class": cls, "empty": row.get("empty", ""), "worst_distance_mm": _float(row.get(
                       "worst_distance_mm"))}
            try:
                rec.update({m: _float(row[m]) for m in metric_names})
            except ValueError as err:
                raise ValueError(f"{path}: case {row['case_id']!r}: {err}") from err
            records.append(rec)
    return records, metric_names


def analysis_value(record: dict[str, Any], metric: str) -> tuple[float, bool]:
    """Value that enters statistics: NaN stays NaN; inf distance -> the row's worst distance.

    Returns:
        ``(value, substituted)``.
    """
    v = record.get(metric, math.nan)
    if math.isinf(v):
        if metric not in DISTANCE_METRICS:
            raise ValueError(f"{metric} is infinite for model {record['model']} case {record['case']}")
        worst = record.get("worst_distance_mm", math.nan)
        if not math.isfinite(worst):
            raise ValueError(f"{metric} is inf for model {record['model']} case {record['case']} class "
                             f"{record['class']} but cases.csv has no worst_distance_mm to substitute")
        return float(worst), True
    return float(v), False


def _unit_values(records: Sequence[dict[str, Any]], metric: str, classes: Sequence[str]) -> list[dict[str, Any]]:
    """One value per (model, seed, fold, case, class incl. MEAN_CLASS) after substitution."""
    out, per_run_case = [], {}
    for r in records:
        v, sub = analysis_value(r, metric)
        out.append({"model": r["model"], "seed": r["seed"], "fold": r["fold"], "case": r["case"],
                    "class": r["class"], "value": v, "substituted": sub})
        per_run_case.setdefault((r["model"], r["seed"], r["fold"], r["case"]), []).append(v)
    if len(classes) > 1:
        for (model, seed, fold, case), vals in per_run_case.items():
            finite = [v for v in vals if not math.isnan(v)]
            out.append({"model": model, "seed": seed, "fold": fold, "case": case, "class": MEAN_CLASS,
                        "value": float(np.mean(finite)) if finite else math.nan, "substituted": False})
    return out


def _seed_averaged(units: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], float]:
    """``{(model, class, case): mean over runs of the defined values (NaN if none)}``."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for u in units:
        groups.setdefault((u["model"], u["class"], u["case"]), []).append(u["value"])
    return {k: (float(np.mean(f)) if (f := [v for v in vals if not math.isnan(v)]) else math.nan)
            for k, vals in groups.items()}


# ------------------------------------------------------------------------------------------------ statistics
def _summary(values: np.ndarray, units: Sequence[dict[str, Any]], n_nan: int, alpha: float, n_boot: int,
             seed: int) -> dict[str, Any]:
    by_seed: dict[Any, dict[str, list[float]]] = {}
    for u in units:
        if not math.isnan(u["value"]):
            by_seed.setdefault(u["seed"], {}).setdefault(u["case"], []).append(u["value"])
    seed_means = {s: float(np.mean([np.mean(v) for v in cases.values()])) for s, cases in by_seed.items()}
    n = int(values.size)
    ci = bootstrap_ci(values, np.mean, n_resamples=n_boot, confidence=1 - alpha, seed=seed) if n else None
    return {
        "n_cases": n, "n_nan": int(n_nan), "n_substituted": int(sum(u["substituted"] for u in units)),
        "n_runs": len({(u["seed"], u["fold"]) for u in units}), "n_seeds": len({u["seed"] for u in units}),
        "mean": float(values.mean()) if n else None, "median": float(np.median(values)) if n else None,
        "std": float(values.std(ddof=1)) if n > 1 else None,
        "ci_low": ci.low if ci else None, "ci_high": ci.high if ci else None, "ci_level": 1 - alpha,
        "per_seed_mean": {str(s): m for s, m in sorted(seed_means.items(), key=lambda kv: str(kv[0]))},
        "seed_std": float(np.std(list(seed_means.values()), ddof=1)) if len(seed_means) > 1 else None,
    }


def _pair_result(a: np.ndarray, b: np.ndarray, names: tuple[str, str], alpha: float, n_boot: int,
                 seed: int) -> dict[str, Any]:
    w = paired_wilcoxon(a, b)
    ci = paired_bootstrap_mean_diff_ci(a, b, n_resamples=n_boot, confidence=1 - alpha, seed=seed)
    return {"model_a": names[0], "model_b": names[1], "n": int(a.size), "mean_diff": w.mean_diff,
            "median_diff": w.median_diff, "ci_low": ci.low, "ci_high": ci.high, "ci_level": 1 - alpha,
            "statistic": w.statistic, "pvalue": w.pvalue, "n_nonzero": w.n_nonzero,
            "signed_rank_sum": w.signed_rank_sum}


def paired_statistics(case_values: dict[str, dict[str, float]], metric: str, alpha: float = 0.05,
                      reference: str | None = None, n_boot: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Paired tests for one class and metric.

    Args:
        case_values: ``{model: {case: seed-averaged value (NaN = undefined)}}``, models in report order.
        metric: metric name (sets the direction of ranks and "better").
        alpha: significance level (Holm family = the pairs of this call).
        reference: compare every model against this one instead of all pairs (> 2 models).
        n_boot: bootstrap resamples; seed: bootstrap seed.

    Returns:
        JSON-able dict: ``models``, ``cases`` (the common cases, sorted), ``n_common``, ``n_dropped``,
        ``higher_is_better``, ``friedman`` (>= 3 models) with ``average_ranks`` and ``nemenyi_cd``, ``pairs``
        (each with ``pvalue_holm``, ``significant``, ``better``: the model the signed ranks favour, and
        ``mean_agrees``: whether the mean difference favours it too), ``note`` when tests could not run.
    """
    models = list(case_values)
    higher = metric not in DISTANCE_METRICS
    all_cases = sorted(set().union(*(v.keys() for v in case_values.values())))
    common = [c for c in all_cases if all(not math.isnan(case_values[m].get(c, math.nan)) for m in models)]
    out: dict[str, Any] = {"models": models, "metric": metric, "higher_is_better": higher, "alpha": alpha,
                           "cases": common, "n_common": len(common), "n_dropped": len(all_cases) - len(common),
                           "friedman": None, "pairs": [], "reference": reference, "note": None}
    if len(models) < 2:
        out["note"] = "only one model: nothing to compare"
        return out
    if len(common) < 2:
        out["note"] = f"{len(common)} case(s) defined for every model: too few for a paired test"
        return out
    table = np.array([[case_values[m][c] for m in models] for c in common])
    gate = True
    if len(models) >= 3:
        fr = friedman(table, higher_is_better=higher)
        gate = fr.pvalue <= alpha
        out["friedman"] = {"statistic": fr.statistic, "pvalue": fr.pvalue, "significant": bool(gate),
                           "average_ranks": dict(zip(models, fr.average_ranks.tolist())),
                           "nemenyi_cd": nemenyi_cd(len(models), len(common), alpha)}
    if reference is not None and len(models) >= 3:
        pairs = [(models.index(reference), j) for j in range(len(models)) if models[j] != reference]
    else:
        pairs = [(i, j) for i in range(len(models)) for j in range(i + 1, len(models))]
    rows = [_pair_result(table[:, i], table[:, j], (models[i], models[j]), alpha, n_boot, seed) for i, j in pairs]
    for row, p_adj in zip(rows, holm([r["pvalue"] for r in rows])):
        row["pvalue_holm"] = float(p_adj)
        row["significant"] = bool(gate and p_adj <= alpha)
        # "better" is the side the signed-rank test points to (the test whose p is reported); the mean difference
        # can point the other way when a few large differences outweigh many small ones: flagged, and said
        toward_a = row["signed_rank_sum"] > 0 if higher else row["signed_rank_sum"] < 0
        mean_toward_a = row["mean_diff"] > 0 if higher else row["mean_diff"] < 0
        if row["signed_rank_sum"] == 0:
            toward_a = mean_toward_a
        row["better"] = row["model_a"] if toward_a else row["model_b"]
        row["mean_agrees"] = bool(toward_a == mean_toward_a or row["mean_diff"] == 0)
    out["pairs"] = rows
    return out


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Models not dominated in (cost lower is better, score higher is better), sorted by cost.

    Args:
        points: ``{model: (cost, score)}``; models with a non-finite coordinate are ignored.
    """
    ok = {m: p for m, p in points.items() if all(v is not None and math.isfinite(v) for v in p)}
    front = [m for m, (c, s) in ok.items()
             if not any(c2 <= c and s2 >= s and (c2 < c or s2 > s) for m2, (c2, s2) in ok.items() if m2 != m)]
    return sorted(front, key=lambda m: ok[m][0])


# ------------------------------------------------------------------------------------------------ efficiency
def _efficiency_number(eff: dict[str, Any], key: str) -> float | None:
    """One efficiency number, accepting the names and units of both efficiency.json layouts."""
    for name, scale in _EFFICIENCY_ALIASES[key]:
        v = eff.get(name)
        if isinstance(v, dict):
            v = v.get("total")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v) * scale
    return None


def efficiency_table(runs: Sequence[dict[str, Any]], models: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Mean over a model's finished runs of each ``efficiency.json`` number.

    Accepted names: ``params``; ``flops`` (a number, or a dict whose ``total`` is used); ``latency_ms`` or
    ``latency_ms_median``; ``peak_memory_mb`` or ``peak_memory_bytes`` (converted to MiB); ``train_seconds`` or
    ``training_seconds``; ``iterations`` or ``training_iterations``. ``device``, ``memory_kind`` /
    ``peak_memory_method`` and ``input_shape`` / ``flops_input_shape`` are listed as the distinct values seen.
    """
    values: dict[str, dict[str, list[float]]] = {m: {} for m in models}
    info: dict[str, dict[str, set]] = {m: {k: set() for k in _EFFICIENCY_INFO} for m in models}
    n_files = dict.fromkeys(models, 0)
    for run in runs:
        path = Path(run["path"]) / "efficiency.json"
        if not path.is_file():
            continue
        eff, m = _read_json(path), run["model"]
        n_files[m] += 1
        for key in EFFICIENCY_KEYS:
            v = _efficiency_number(eff, key)
            if v is not None:
                values[m].setdefault(key, []).append(v)
        for key, names in _EFFICIENCY_INFO.items():
            v = next((eff[n] for n in names if eff.get(n) is not None), None)
            if v is not None:
                info[m][key].add(v if isinstance(v, str) else json.dumps(v))
    table = {}
    for m in models:
        row: dict[str, Any] = {"n_runs": n_files[m]}
        row.update({k: float(np.mean(values[m][k])) if values[m].get(k) else None for k in EFFICIENCY_KEYS})
        row.update({k: sorted(v) for k, v in info[m].items()})
        table[m] = row
    return table


# ------------------------------------------------------------------------------------------------ orchestration
def _write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    def fmt(v: Any) -> Any:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else ("inf" if math.isinf(v) else repr(v))
        return "" if v is None else v

    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: fmt(r.get(k)) for k in columns} for r in rows)


def _provenance(found: dict[str, Any]) -> dict[str, Any]:
    commits, versions, nsd_tolerances = {}, {}, {}
    for run in found["finished"]:
        env_path = Path(run["path"]) / "environment.json"
        if env_path.is_file():
            env = _read_json(env_path)
            commits.setdefault(str(env.get("git_commit")), []).append(run["path"])
            versions.setdefault(str(env.get("mambaseg")), []).append(run["path"])
        summary_path = Path(run["path"]) / "evaluation" / "summary.json"
        if summary_path.is_file():
            tol = (_read_json(summary_path).get("provenance") or {}).get("nsd_tolerance_mm")
            nsd_tolerances.setdefault(str(tol), []).append(run["path"])
    return {"benchmarks": found["benchmarks"], "git_commits": {k: len(v) for k, v in commits.items()},
            "mambaseg_versions": {k: len(v) for k, v in versions.items()},
            "nsd_tolerance_mm": {k: len(v) for k, v in nsd_tolerances.items()}}


def compare_runs(paths: Sequence[PathLike] | PathLike, out: PathLike, metrics: Sequence[str] = ("dice", "hd95", "nsd"),
                 reference: str | None = None, alpha: float = 0.05, n_boot: int = 10000, seed: int = 0, *,
                 command: str | None = None, plots: bool = True, reproduce: str | None = None) -> dict[str, Any]:
    """Compare the finished runs found in ``paths`` and write the report into ``out``.

    Args:
        paths: benchmark OUT folders and/or single run folders.
        out: output folder: ``per_case.csv``, ``summary.csv``, ``compare.json``, ``report.md`` and the PNG plots.
        metrics: metrics to summarise and test (columns of ``cases.csv``); the first is the primary one.
        reference: model to compare every other model against (default: all pairs).
        alpha: significance level; CIs have level ``1 - alpha``.
        n_boot: bootstrap resamples; seed: bootstrap seed.
        command: the command line, written in the report header.
        reproduce: the one command that reproduces the whole study (benchmark and comparison), written at the top.
        plots: write the PNG plots (needs matplotlib).

    Returns:
        The JSON-able content of ``compare.json``.

    Raises:
        ValueError: no finished run, unknown metric or reference model, bad alpha.
    """
    from .. import __version__

    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics is empty")
    found = find_runs(paths)
    if not found["finished"]:
        listed = "; ".join(f"{r['path']}: {r['reason']}" for r in found["unfinished"]) or "none found"
        raise ValueError(f"compare: no finished run (done.json and evaluation/cases.csv) in {list(map(str, paths))}"
                         f" ({listed})")
    records: list[dict[str, Any]] = []
    available: set[str] = set()
    for run in found["finished"]:
        recs, names = load_case_records(run)
        records += recs
        available.update(names)
    missing = [m for m in metrics if m not in available]
    if missing:
        raise ValueError(f"metrics {missing} are not in the runs' cases.csv (available: {sorted(available)})")
    models = sorted({r["model"] for r in records})
    if reference is not None and reference not in models:
        raise ValueError(f"reference model {reference!r} is not among the compared models {models}")
    if reference is not None:
        models = [reference] + [m for m in models if m != reference]
    classes = list(dict.fromkeys(r["class"] for r in records))
    stat_classes = ([MEAN_CLASS] if len(classes) > 1 else []) + classes
    primary_class = stat_classes[0]

    summary: dict[str, dict[str, dict[str, Any]]] = {}
    tests: dict[str, dict[str, Any]] = {}
    seed_averaged: dict[str, dict[tuple[str, str, str], float]] = {}
    for metric in dict.fromkeys(metrics + (["dice"] if "dice" in available else [])):
        units = _unit_values(records, metric, classes)
        avg = seed_averaged[metric] = _seed_averaged(units)
        if metric not in metrics:
            continue
        for cls in stat_classes:
            per_model = {}
            for m in models:
                vals = {c: v for (mm, cc, c), v in avg.items() if mm == m and cc == cls}
                finite = np.array([v for v in vals.values() if not math.isnan(v)])
                mu = [u for u in units if u["model"] == m and u["class"] == cls]
                s = _summary(finite, mu, len(vals) - finite.size, alpha, n_boot, seed)
                summary.setdefault(m, {}).setdefault(cls, {})[metric] = s
                per_model[m] = vals
            tests.setdefault(cls, {})[metric] = paired_statistics(per_model, metric, alpha, reference, n_boot, seed)

    efficiency = efficiency_table(found["finished"], models)
    primary_metric = metrics[0]
    score_metric = "dice" if "dice" in available else primary_metric
    score = {m: (summary[m][primary_class][score_metric]["mean"] if score_metric in metrics else float(np.nanmean(
        [v for (mm, cc, _), v in seed_averaged[score_metric].items() if mm == m and cc == primary_class])))
        for m in models}
    pareto = {}
    for cost in ("flops", "latency_ms"):
        pts = {m: (efficiency[m][cost], score[m]) for m in models if efficiency[m][cost] is not None}
        pareto[cost] = {"points": pts, "front": pareto_front(pts)}

    per_case_columns = ["model", "seed", "fold", "case", "class", "empty"] + [m for m in ALL_METRICS
                                                                             if m in available] + ["worst_distance_mm"]
    result: dict[str, Any] = {
        "command": command, "reproduce": reproduce, "mambaseg_version": __version__,
        "inputs": [str(Path(p).resolve()) for p in paths],
        "provenance": _provenance(found), "metrics": metrics, "primary_metric": primary_metric,
        "primary_class": primary_class, "classes": classes, "models": models, "reference": reference,
        "alpha": alpha, "n_boot": n_boot, "seed": seed, "small_n": SMALL_N,
        "runs": found["finished"], "unfinished": found["unfinished"],
        "summary": summary, "tests": tests, "efficiency": efficiency, "pareto": pareto, "score_metric": score_metric,
        "conventions": __doc__.split("Conventions:", 1)[1].strip(),
    }
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "per_case.csv", records, per_case_columns)
    summary_rows = [{"model": m, "class": c, "metric": k, **{kk: vv for kk, vv in s.items() if kk != "per_seed_mean"}}
                    for m in models for c in stat_classes for k, s in summary[m][c].items()]
    _write_csv(out_dir / "summary.csv", summary_rows, ["model", "class", "metric", "n_cases", "n_nan",
                                                       "n_substituted", "n_runs", "n_seeds", "mean", "median", "std",
                                                       "ci_low", "ci_high", "ci_level", "seed_std"])
    images: dict[str, str | None] = {}
    if plots:
        from .plots import write_plots

        box_values = {m: [v for (mm, cc, _), v in sorted(seed_averaged[score_metric].items())
                          if mm == m and cc == primary_class and not math.isnan(v)] for m in models}
        score_ci = {m: (summary[m][primary_class][score_metric]["ci_low"],
                        summary[m][primary_class][score_metric]["ci_high"]) for m in models
                    if primary_class in summary[m] and score_metric in summary[m][primary_class]}
        images = write_plots(out_dir, box_values, score_metric, primary_class, pareto,
                             tests[primary_class][primary_metric], score_ci)
    result["images"] = images
    from .report import write_report

    result = to_jsonable(result)
    write_report(out_dir / "report.md", result)
    (out_dir / "compare.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    return result
