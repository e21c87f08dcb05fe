"""``run_benchmark``: train, predict and evaluate several models under one protocol, resumable.

The comparison protocol of DESIGN.md ("Comparison protocol"): every model and seed sees the same split, the same
preprocessing, the same budget (iterations or wall-clock minutes) and the same training overrides; the test cases
never influence training or checkpoint selection; per-case metrics are the primary record. Nothing here is new
machinery: it chains :func:`mambaseg.training.trainer.train`, :class:`mambaseg.inference.Predictor` (best checkpoint,
predictions written in each input's geometry), :func:`mambaseg.evaluation.evaluate.evaluate_folders` and
:mod:`mambaseg.benchmark.efficiency`.

Split (one for every run, written once to ``OUT/split.json``):

* ``folds=None``: seeded holdout 80/10/10 (:func:`mambaseg.data.splits.make_splits`, ``split_seed`` 0 by default):
  train / val (checkpoint selection) / test (reported).
* ``folds=K``: K-fold cross-validation (:func:`mambaseg.data.splits.make_folds`, ``split_seed`` 12345 by default,
  nnU-Net's folds). The test cases of fold ``f`` are that fold's out-of-fold cases (nnU-Net's "val"); checkpoint
  selection uses an inner validation set of ``max(1, round(0.1 n))`` of the fold's training cases (a seeded
  permutation), so the reported cases are never used to pick the checkpoint. ``OUT/split_fold{f}.json`` holds
  each fold's train/val/test.

Layout::

    OUT/benchmark.json     protocol (dataset, budget, split, overrides, model kwargs), models, seeds, versions,
                           git commit, and every call (command line, start/end, failures)
    OUT/split.json         the split (+ seed and rule); OUT/split_fold{f}.json with folds
    OUT/reference/fold{f}/ symlinks (copies where links fail) to the test labels of fold f
    OUT/runs/{model}/seed{s}_fold{f}/
        config.yaml plan.json splits.json seeds.json environment.json log.csv checkpoint_*.pt ...   (trainer)
        train_result.json  iterations, seconds, best validation Dice (written when training returns)
        predictions/       test cases predicted with checkpoint_best.pt, in the input geometry
        evaluation/        cases.csv, summary.json (evaluate_folders against the test labels only)
        efficiency.json    params, FLOPs incl. the scan, latency, peak memory, training time, device
        done.json          summary, written last (tmp + os.replace)
        error.txt          traceback of a failed attempt (removed when the run later succeeds)

Resume: a run with ``done.json`` is skipped; a run with ``checkpoint_latest.pt`` but no ``train_result.json`` is
resumed (``TrainConfig.resume``); otherwise only the missing steps are redone (``predictions/`` and
``evaluation/`` are written to a temporary folder and renamed, so a killed step leaves nothing half-written; new
predictions invalidate the evaluation). A later call must use the same protocol; it may add models or seeds
(error naming ``OUT/benchmark.json`` otherwise).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import statistics
import time
import traceback
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["make_split_record", "measure_efficiency", "run_benchmark"]

#: TrainConfig fields the benchmark sets itself (not allowed in ``train_overrides``).
CONTROLLED_FIELDS = ("data", "model", "out", "model_kwargs", "seed", "fold", "split", "split_seed", "splits_file",
                     "iterations", "epochs", "time_budget_minutes", "resume", "overwrite", "device", "progress")
LATENCY_REPEATS = 5


# ------------------------------------------------------------------------------------------------ small helpers
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(obj: Any) -> Any:
    """A JSON round trip (tuples -> lists, NaN/inf -> None), so stored and new protocols compare equal."""
    from mambaseg.evaluation.aggregate import to_jsonable

    return to_jsonable(json.loads(json.dumps(obj, default=str)))


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _normalise_budget(budget: Mapping[str, float] | None) -> dict[str, float]:
    if not isinstance(budget, Mapping) or len(budget) != 1 or next(iter(budget)) not in ("iterations", "minutes"):
        raise ValueError(f"budget must be {{'iterations': N}} or {{'minutes': M}}, got {budget!r}")
    key, value = next(iter(budget.items()))
    if not value or float(value) <= 0:
        raise ValueError(f"budget {key} must be positive, got {value!r}")
    return {"iterations": int(value)} if key == "iterations" else {"minutes": float(value)}


def _normalise_seeds(seeds: int | Sequence[int]) -> list[int]:
    out = list(range(int(seeds))) if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise ValueError(f"seeds must be a positive count or distinct integers, got {seeds!r}")
    return out


def _check_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    from dataclasses import fields

    from mambaseg.training.trainer import TrainConfig

    overrides = dict(overrides or {})
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"train_overrides: unknown TrainConfig fields {unknown}; valid: {sorted(names)}")
    controlled = sorted(set(overrides) & set(CONTROLLED_FIELDS))
    if controlled:
        raise ValueError(f"train_overrides: {controlled} are set by the benchmark itself (use its arguments)")
    return _jsonable(overrides)


def _check_models(models: Sequence[str], model_kwargs: Mapping[str, Mapping[str, Any]] | None
                  ) -> tuple[list[str], dict[str, dict[str, Any]]]:
    from mambaseg.models import model_info

    models = [models] if isinstance(models, str) else list(models)
    if not models or len(set(models)) != len(models):
        raise ValueError(f"models must be distinct registered model names, got {models!r}")
    for m in models:
        model_info(m)  # unknown name: ValueError with close matches, before any training starts
    kwargs = {str(k): dict(v) for k, v in (model_kwargs or {}).items()}
    stray = sorted(set(kwargs) - set(models))
    if stray:
        raise ValueError(f"model_kwargs are keyed by model name; {stray} are not among the models {models}")
    return models, _jsonable(kwargs)


# ------------------------------------------------------------------------------------------------ split
def _inner_validation(train: list[str], seed: int) -> tuple[list[str], list[str]]:
    """(train, val): ``max(1, round(0.1 n))`` cases of ``train`` picked by a seeded permutation of the sorted ids."""
    keys = sorted(train)
    n_val = max(1, round(0.1 * len(keys)))
    perm = np.random.default_rng(seed).permutation(len(keys))
    val = sorted(keys[i] for i in perm[:n_val])
    return sorted(set(keys) - set(val)), val


def make_split_record(cases: Sequence[str], folds: int | None = None, split_seed: int | None = None
                      ) -> dict[str, Any]:
    """The benchmark's split of ``cases`` (see the module docstring).

    Returns:
        ``{"rule", "seed", "folds": K | None, "splits": [{"train", "val", "test"}, ...]}`` with one entry for the
        holdout split, ``K`` entries for cross-validation; ids sorted within each list.

    Raises:
        ValueError: too few cases for non-empty train, val and test sets.
    """
    from mambaseg.data.splits import make_folds, make_splits

    if folds is None:
        seed = 0 if split_seed is None else int(split_seed)
        s = make_splits(cases, seed=seed)
        splits = [{"train": s["train"], "val": s["val"], "test": s["test"]}]
        rule = ("holdout 80/10/10: mambaseg.data.splits.make_splits (numpy default_rng(seed) permutation of the "
                "sorted ids; val and test = round(0.1 n) cases each)")
    else:
        seed = 12345 if split_seed is None else int(split_seed)
        splits = []
        for fold in make_folds(cases, int(folds), seed):
            train, val = _inner_validation(fold["train"], seed)
            splits.append({"train": train, "val": val, "test": fold["val"]})
        rule = (f"{folds}-fold CV: mambaseg.data.splits.make_folds (nnU-Net folds); test = the fold's out-of-fold "
                f"cases; val (checkpoint selection) = max(1, round(0.1 n)) of the fold's training cases by "
                f"numpy default_rng(seed) permutation; train = the rest")
    for i, s in enumerate(splits):
        empty = [k for k in ("train", "val", "test") if not s[k]]
        if empty:
            raise ValueError(f"{len(cases)} cases are too few for the split ({rule}): split {i} has empty {empty}")
    return {"rule": rule, "seed": seed, "folds": folds, "splits": splits}


def _trainer_split_files(out: Path, record: dict[str, Any]) -> list[Path]:
    """Write ``OUT/split.json`` (and per-fold files); returns the file each fold's runs read."""
    if record["folds"] is None:
        s = record["splits"][0]
        _write_json_atomic(out / "split.json", {**s, "seed": record["seed"], "rule": record["rule"]})
        return [out / "split.json"]
    _write_json_atomic(out / "split.json", record)
    files = []
    for f, s in enumerate(record["splits"]):
        files.append(out / f"split_fold{f}.json")
        _write_json_atomic(files[-1], {**s, "fold": f, "seed": record["seed"], "rule": record["rule"]})
    return files


def _stored_split_record(out: Path) -> dict[str, Any] | None:
    path = out / "split.json"
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    if "splits" in stored:
        return stored
    return {"rule": stored.get("rule"), "seed": stored.get("seed"), "folds": None,
            "splits": [{k: stored.get(k) for k in ("train", "val", "test")}]}


def _reference_folder(out: Path, raw, fold: int, test_cases: list[str]) -> Path:
    """``OUT/reference/fold{f}/``: the test labels only, linked (or copied) under their own names."""
    ref = out / "reference" / f"fold{fold}"
    ref.mkdir(parents=True, exist_ok=True)
    wanted = {}
    for case in test_cases:
        label = raw.label_file(case)
        if label is None:
            raise FileNotFoundError(f"test case {case!r} has no label file in {raw.path / 'labelsTr'}")
        wanted[label.name] = label.resolve()
    for f in ref.iterdir():
        if f.name not in wanted:
            f.unlink()
    for name, src in wanted.items():
        dst = ref / name
        if dst.is_symlink() or dst.exists():
            if dst.is_symlink() and Path(os.readlink(dst)) == src:
                continue
            dst.unlink()
        try:
            dst.symlink_to(src)
        except OSError:
            shutil.copy2(src, dst)
    return ref


# ------------------------------------------------------------------------------------------------ efficiency
def _proc_status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _release_free_heap() -> bool:
    """glibc ``malloc_trim(0)``: give freed heap pages back to the OS, so that a forward pass re-faults the memory it
    uses and the RSS peak measures it (without it, memory kept from earlier work hides the forward's needs)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        return False
    return True


@torch.no_grad()
def measure_efficiency(model: torch.nn.Module, input_shape: Sequence[int], device: str | torch.device,
                       repeats: int = LATENCY_REPEATS) -> dict[str, Any]:
    """Parameters, FLOPs (the selective scan included), forward latency and peak memory of ``model``.

    Args:
        model: the network (evaluation mode is set for the measurement).
        input_shape: ``(1, C, *patch)``: batch 1 at the plan's patch size.
        device: where to measure.
        repeats: timed forward passes after one warm-up; the median is reported.

    Returns:
        ``{"params", "flops", "flops_scan", "latency_ms_median", "latency_ms_all", "peak_memory_bytes",
        "peak_memory_method", "device", "device_name"}``. Peak memory on CUDA is
        ``torch.cuda.max_memory_allocated`` during one forward (weights included); on CPU (Linux) the growth of
        the process's peak resident set (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) over the
        resident set before the forward, after glibc's ``malloc_trim`` released the free heap (activations and
        temporaries, weights excluded); None where neither is available.
    """
    from mambaseg.benchmark.efficiency import count_flops, count_parameters

    device = torch.device(device)
    model = model.to(device).eval()
    x = torch.randn(*input_shape, device=device)
    flops = count_flops(model, input_shape)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model(x)  # warm-up (kernel selection, Numba JIT, allocator)
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model(x)
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    peak, method = None, "unavailable on this platform"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        model(x)
        sync()
        peak, method = int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated, one forward"
    else:
        try:
            trimmed = _release_free_heap()
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            before = _proc_status_bytes("VmRSS")
            model(x)
            after = _proc_status_bytes("VmHWM")
            if before is not None and after is not None:
                peak = max(0, after - before)
                method = ("CPU peak RSS growth during one forward (VmHWM - VmRSS, /proc/self/clear_refs reset"
                          + (", after glibc malloc_trim)" if trimmed else "; free heap not released: underestimates)"))
        except OSError:
            pass
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"params": count_parameters(model), "flops": flops["total"], "flops_scan": flops["scan"],
            "flops_input_shape": list(input_shape), "latency_ms_median": statistics.median(times),
            "latency_ms_all": times, "latency_protocol": f"batch 1, 1 warm-up, median of {repeats}",
            "peak_memory_bytes": peak, "peak_memory_method": method, "device": str(device), "device_name": name}


# ------------------------------------------------------------------------------------------------ one run
def _test_dice(summary: dict[str, Any]) -> tuple[float, dict[str, float | None], dict[str, float | None]]:
    overall = summary["overall"]["metrics"]["dice"]["mean_of_class_means"]
    per_class = {k: c["metrics"]["dice"]["mean"] for k, c in summary["classes"].items()}
    pooled = {k: c["pooled_dice"] for k, c in summary["classes"].items()}
    return (math.nan if overall is None else float(overall)), per_class, pooled


def _run_one(ctx: dict[str, Any], model: str, seed: int, fold: int) -> dict[str, Any]:
    """Train / predict / evaluate / measure one run, doing only the missing steps; returns its done.json."""
    from mambaseg.inference import Predictor
    from mambaseg.training.trainer import TrainConfig, train

    run_dir = ctx["out"] / "runs" / model / f"seed{seed}_fold{fold}"
    done_file = run_dir / "done.json"
    if done_file.is_file():
        return {**json.loads(done_file.read_text()), "state": "skipped"}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "error.txt").unlink(missing_ok=True)
    t_start = time.monotonic()
    train_file = run_dir / "train_result.json"
    if train_file.is_file():
        state, fresh = "completed", False
        result = json.loads(train_file.read_text())
    else:
        resume = (run_dir / "checkpoint_latest.pt").is_file()
        state, fresh = ("resumed" if resume else "trained"), True
        for stale in ("predictions", "evaluation"):  # outputs of an earlier training are invalid now
            shutil.rmtree(run_dir / stale, ignore_errors=True)
        (run_dir / "efficiency.json").unlink(missing_ok=True)
        budget = ctx["budget"]
        cfg = TrainConfig(**{**ctx["overrides"], "data": str(ctx["raw"].path), "model": model, "out": str(run_dir),
                             "model_kwargs": dict(ctx["model_kwargs"].get(model, {})), "seed": seed, "fold": 0,
                             "split": "holdout", "splits_file": str(ctx["split_files"][fold]),
                             "iterations": budget.get("iterations"), "time_budget_minutes": budget.get("minutes"),
                             "resume": resume, "overwrite": not resume, "device": ctx["device"],
                             "progress": ctx["progress"]})
        res = train(cfg)
        result = {"iterations": res.iterations, "seconds": res.seconds, "best_val_dice": res.best_dice,
                  "best_iteration": res.best_iteration, "last_val_dice": res.last_dice, "finished": _now()}
        _write_json_atomic(train_file, _jsonable(result))
    checkpoint = "best" if (run_dir / "checkpoint_best.pt").is_file() else "latest"
    predictor = None
    pred_dir, eval_dir = run_dir / "predictions", run_dir / "evaluation"
    redo = fresh or not pred_dir.is_dir()
    if redo:
        predictor = Predictor.from_run(run_dir, checkpoint=checkpoint, device=ctx["device"])
        tmp = run_dir / "predictions.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        files = [f for case in ctx["splits"][fold]["test"] for f in ctx["raw"].image_files(case)]
        predictor.predict_files(files, tmp, progress=False)
        _replace_dir(tmp, pred_dir)
    if redo or not (eval_dir / "summary.json").is_file():
        from mambaseg.evaluation.evaluate import evaluate_folders

        tmp = run_dir / "evaluation.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        evaluate_folders(pred_dir, ctx["references"][fold], labels=ctx["labels"], out=tmp)
        _replace_dir(tmp, eval_dir)
    eff_file = run_dir / "efficiency.json"
    if fresh or not eff_file.is_file():
        predictor = predictor or Predictor.from_run(run_dir, checkpoint=checkpoint, device=ctx["device"])
        plan = predictor.plan
        eff = measure_efficiency(predictor.model, (1, len(plan.channel_names), *plan.patch_size), predictor.device)
        eff.update(training_seconds=result["seconds"], training_iterations=result["iterations"],
                   patch_size=list(plan.patch_size), measured=_now())
        _write_json_atomic(eff_file, _jsonable(eff))
    eff = json.loads(eff_file.read_text())
    summary = json.loads((eval_dir / "summary.json").read_text())
    dice, per_class, pooled = _test_dice(summary)
    done = {"model": model, "seed": seed, "fold": fold, "state": state, "run_dir": str(run_dir),
            "test_dice": dice, "test_dice_definition": "mean over classes of the per-image mean Dice (test cases)",
            "test_dice_per_class": per_class, "pooled_dice_per_class": pooled,
            "n_test_cases": len(ctx["splits"][fold]["test"]), "checkpoint": f"checkpoint_{checkpoint}.pt",
            "best_val_dice": result["best_val_dice"], "iterations": result["iterations"],
            "training_seconds": result["seconds"], "params": eff["params"], "flops": eff["flops"],
            "latency_ms": eff["latency_ms_median"], "peak_memory_bytes": eff["peak_memory_bytes"],
            "device": eff["device"], "step_seconds": time.monotonic() - t_start, "finished": _now()}
    _write_json_atomic(done_file, _jsonable(done))
    return done


def _guarded_run(ctx: dict[str, Any], model: str, seed: int, fold: int, threads: int | None = None
                 ) -> dict[str, Any]:
    """:func:`_run_one`, with a failure recorded in the run folder (``error.txt``) and returned as a summary."""
    if threads is not None:  # a worker process: its share of the CPU threads
        torch.set_num_threads(threads)
    try:
        return _run_one(ctx, model, seed, fold)
    except Exception as err:  # noqa: BLE001 - recorded in the run folder; the other runs go on
        run_dir = ctx["out"] / "runs" / model / f"seed{seed}_fold{fold}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        return {"model": model, "seed": seed, "fold": fold, "state": "failed", "run_dir": str(run_dir),
                "test_dice": None, "error": f"{type(err).__name__}: {err}"}


def _execute(ctx: dict[str, Any], jobs: list[tuple[str, int, int]], workers: int):
    """Yields each job's summary: in order in this process (``workers == 1``), else as the worker processes
    (spawned, each with ``threads // workers`` torch threads) finish them."""
    if workers <= 1 or len(jobs) <= 1:
        for m, s, f in jobs:
            yield _guarded_run(ctx, m, s, f)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, torch.get_num_threads() // workers)
    child_ctx = {**ctx, "progress": False}  # no interleaved progress bars; the parent prints a line per run
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_guarded_run, child_ctx, m, s, f, threads) for m, s, f in jobs]
        for fut in as_completed(futures):
            yield fut.result()


# ------------------------------------------------------------------------------------------------ protocol
def _open_record(out: Path, protocol: dict[str, Any], split: dict[str, Any], models: list[str],
                 model_kwargs: dict[str, dict[str, Any]], seeds: list[int], resume: bool) -> dict[str, Any]:
    """The benchmark.json record to continue (after checking the protocol) or a new one."""
    path = out / "benchmark.json"
    if not path.is_file():
        if (out / "runs").is_dir():
            raise FileExistsError(f"{out / 'runs'} exists but {path} does not: the protocol of those runs is unknown; "
                                  f"choose another output folder")
        return {"protocol": protocol, "models": [], "model_kwargs": {}, "seeds": [], "calls": []}
    if not resume:
        raise FileExistsError(f"{path} exists: this folder holds a benchmark; continue it with resume=True or "
                              f"choose another output folder")
    record = json.loads(path.read_text())
    old = record.get("protocol", {})
    diff = sorted(k for k in set(old) | set(protocol) if old.get(k) != protocol.get(k))
    diff += [f"model_kwargs[{m}]" for m in models if m in record.get("models", [])
             and record.get("model_kwargs", {}).get(m, {}) != model_kwargs.get(m, {})]
    stored_split = _stored_split_record(out)
    if not diff and stored_split is not None and stored_split["splits"] != split["splits"]:
        diff.append(f"split (the cases of {protocol['dataset']} differ from {out / 'split.json'})")
    if diff:
        def detail(key: str) -> str:
            if key in protocol or key in old:
                return f"{key}: recorded {old.get(key)!r}, now {protocol.get(key)!r}"
            if key.startswith("model_kwargs["):
                m = key[len("model_kwargs["):-1]
                return f"{key}: recorded {record.get('model_kwargs', {}).get(m, {})!r}, now {model_kwargs.get(m, {})!r}"
            return key

        details = [detail(k) for k in diff]
        raise ValueError(f"{path} records a different protocol ({'; '.join(details)}); a benchmark can only be "
                         f"continued with the same protocol, adding models or seeds. Use another output folder.")
    return record


def run_benchmark(data: str | Path, models: Sequence[str], seeds: int | Sequence[int], out: str | Path,
                  folds: int | None = None, budget: Mapping[str, float] | None = None,
                  model_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                  train_overrides: Mapping[str, Any] | None = None, resume: bool = True, progress: bool = True,
                  *, split_seed: int | None = None, device: str = "auto",
                  command: Sequence[str] | None = None, workers: int = 1) -> dict[str, Any]:
    """Train, predict and evaluate every model x seed (x fold) under one protocol (see the module docstring).

    Args:
        data: nnU-Net raw dataset folder.
        models: registered model names.
        seeds: a count ``n`` (seeds ``0..n-1``) or explicit seeds.
        out: benchmark folder.
        folds: None = holdout 80/10/10; ``K`` = K-fold cross-validation.
        budget: ``{"iterations": N}`` or ``{"minutes": M}`` per run, the same for every model.
        model_kwargs: ``{model name: {keyword: value}}`` for :func:`mambaseg.create_model`.
        train_overrides: other :class:`~mambaseg.training.trainer.TrainConfig` fields for every run (e.g.
            ``batch_size``, ``patch_size``, ``target_spacing``, ``val_every``); unset ones follow each family's
            preset.
        resume: continue a benchmark already in ``out`` (False: refuse to touch one).
        progress: print a line per run (and the trainer's progress bar).
        split_seed: seed of the split (default 0 for holdout, 12345 for folds).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` ... for training, prediction and efficiency.
        command: the command line that started it (recorded).
        workers: runs trained at the same time, each in its own process with ``torch threads // workers``
            threads (1: one after the other in this process). With more than one, each run's latency and memory
            are measured while other runs train: use 1 where those figures matter.

    Returns:
        ``{"out", "benchmark_file", "runs": [done.json of each run + "state"], "failures": [{"model", "seed",
        "fold", "error", "error_file"}], "exit_code": 0 | 1}``.

    Raises:
        ValueError: bad arguments, too few cases, or a protocol different from the one recorded in
            ``OUT/benchmark.json``. FileExistsError: ``out`` holds a benchmark and ``resume`` is False.
    """
    from mambaseg.data.nnunet_raw import RawDataset
    from mambaseg.training.trainer import _git_commit, environment_info

    models, kwargs = _check_models(models, model_kwargs)
    seeds, budget_n, overrides = _normalise_seeds(seeds), _normalise_budget(budget), _check_overrides(train_overrides)
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if folds is not None and int(folds) < 2:
        raise ValueError(f"folds must be None (holdout) or >= 2, got {folds}")
    raw = RawDataset(data)
    if raw.has_regions:
        raise ValueError(f"{raw.path}: region-based labels are not supported by the benchmark")
    split = make_split_record(raw.cases, folds, split_seed)
    out = Path(out)
    protocol = _jsonable({"dataset": str(raw.path.resolve()), "folds": folds, "split_seed": split["seed"],
                          "split_rule": split["rule"], "budget": budget_n, "train_overrides": overrides,
                          "efficiency": f"batch 1 at the plan's patch size; latency median of {LATENCY_REPEATS} "
                                        f"after 1 warm-up"})
    record = _open_record(out, protocol, split, models, kwargs, seeds, resume)
    out.mkdir(parents=True, exist_ok=True)
    split_files = _trainer_split_files(out, split)
    import mambaseg

    call = {"command": shlex.join(command) if command else None, "models": models, "seeds": seeds,
            "workers": int(workers),
            "device": device, "started": _now(), "finished": None, "failures": None,
            "git_commit": _git_commit(Path(mambaseg.__file__).resolve().parent), "environment": environment_info()}
    record.update(models=list(dict.fromkeys(record["models"] + models)),
                  seeds=sorted(set(record["seeds"]) | set(seeds)),
                  model_kwargs={**record["model_kwargs"], **kwargs}, split_file=str(out / "split.json"),
                  git_commit=call["git_commit"], environment=call["environment"])
    record.setdefault("started", call["started"])
    record["calls"].append(call)
    record["finished"] = None
    _write_json_atomic(out / "benchmark.json", _jsonable(record))

    labels = {k: int(v) for k, v in raw.labels.items() if k != "ignore" and int(v) != 0}
    ctx = {"out": out, "raw": raw, "budget": budget_n, "overrides": overrides, "model_kwargs": kwargs,
           "splits": split["splits"], "split_files": split_files, "device": device, "progress": progress,
           "labels": labels,
           "references": [_reference_folder(out, raw, f, s["test"]) for f, s in enumerate(split["splits"])]}
    jobs = [(m, s, f) for f in range(len(split["splits"])) for s in seeds for m in models]
    if progress:
        print(f"benchmark: {len(models)} model(s) x {len(seeds)} seed(s) x {len(split['splits'])} fold(s) = "
              f"{len(jobs)} runs, budget {budget_n}, into {out}", flush=True)
    runs, failures = [], []
    for i, summary in enumerate(_execute(ctx, jobs, workers), 1):
        m, s, f = summary["model"], summary["seed"], summary["fold"]
        if summary["state"] == "failed":
            failures.append({"model": m, "seed": s, "fold": f, "error": summary["error"],
                             "error_file": str(Path(summary["run_dir"]) / "error.txt")})
        runs.append(summary)
        if progress:
            d = summary.get("test_dice")
            dice = "n/a" if d is None or (isinstance(d, float) and math.isnan(d)) else f"{d:.4f}"
            print(f"[{i}/{len(jobs)}] {m:<24} seed {s:<3} fold {f:<2} {summary['state']:<9} test Dice {dice}"
                  + (f"  ({summary['error']})" if "error" in summary else ""), flush=True)
    call.update(finished=_now(), failures=failures)
    record["finished"] = call["finished"]
    _write_json_atomic(out / "benchmark.json", _jsonable(record))
    return {"out": str(out), "benchmark_file": str(out / "benchmark.json"), "runs": runs, "failures": failures,
            "exit_code": 1 if failures else 0}
