"""``mambaseg demo``: the end-to-end workflow on real data from PyPI, and the operator timing demo.

``mambaseg demo`` (and ``make demo``) runs, on a fresh machine that can reach PyPI, the whole path from data to
report with the library functions: fetch the pyradiomics 3.0.1 sample cases (:mod:`mambaseg.data.sample_data`)
-> write the nnU-Net raw dataset ``Dataset990_PyRadiomicsLesions`` -> :func:`~mambaseg.data.check.check_dataset`
-> train a small 2D Mamba model slice-wise (:func:`mambaseg.training.trainer.train`) -> predict the held-out case
with its geometry (:class:`~mambaseg.inference.predictor.Predictor`) -> Dice / HD95
(:func:`~mambaseg.evaluation.evaluate.evaluate_folders`). Output folder layout (default ``demo_out``)::

    OUT/raw/Dataset990_PyRadiomicsLesions/   the dataset (imagesTr, labelsTr, imagesTs, labelsTs, splits.json)
    OUT/run/                                 run folder (config.yaml, plan.json, log.csv, checkpoint_latest.pt ...)
    OUT/predictions/lung2.nrrd               prediction of the held-out case, same geometry as its image
    OUT/evaluation/{cases.csv,summary.json}  metrics
    OUT/demo.json                            written last: marks a finished demo (re-used unless --overwrite)

``mambaseg demo --operator`` (or any of ``--length/--dim/--d-state``) is the operator demo: it checks the chunked
selective scan against the sequential specification, then times it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

#: Default model of the workflow demo: UltraLight VM-UNet (49k parameters, Mamba blocks) at its paper size, the zoo
#: model that trains fastest on a CPU. It fits the four training cases in a few minutes but does not find the held-out
#: lung2 lesion (Dice 0 after 400 iterations, and after 1200: training loss 0.59 -> 0.14, one CT case to learn from);
#: the demo shows the workflow, not segmentation quality (README).
DEFAULT_MODEL = "ultralight_vm_unet"
DEFAULT_ITERATIONS = 400
DEFAULT_PATCH = (160, 160)
DEFAULT_BATCH = 8
DEFAULT_SEED = 0
DEFAULT_OUT = "demo_out"
#: TrainConfig values the demo sets on top of the model family's preset.
DEFAULT_TRAIN_OVERRIDES: dict[str, Any] = {}
_OPERATOR_FLAGS = ("length", "dim", "d_state")
_WORKFLOW_FLAGS = ("out", "model", "minutes", "iterations", "patch_size", "batch_size", "cache", "overwrite")


def add_demo_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``demo`` on the top-level sub-parsers (workflow flags and the operator demo's flags)."""
    p = subparsers.add_parser(
        "demo", help="end-to-end workflow on real data from PyPI: fetch, dataset, check, train, predict, evaluate "
                     "(--operator: the selective-scan check and timing)",
        description="Fetch the pyradiomics 3.0.1 lesion cases from PyPI, build an nnU-Net raw dataset, check it, "
                    "train a small 2D Mamba model slice-wise, predict the held-out case and evaluate it. "
                    "With --operator: check and time the selective scan instead.")
    p.add_argument("--out", help=f"output folder (default {DEFAULT_OUT}); a finished demo there is re-used")
    p.add_argument("--model", help=f"registered 2D-capable model (default {DEFAULT_MODEL})")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--iterations", type=int,
                        help=f"training iterations (default {DEFAULT_ITERATIONS}; reproducible with the fixed seed)")
    budget.add_argument("--minutes", type=float, help="train for this many minutes instead (wall clock)")
    p.add_argument("--patch-size", type=int, nargs=2, metavar=("H", "W"),
                   help=f"training patch (default {DEFAULT_PATCH[0]} {DEFAULT_PATCH[1]})")
    p.add_argument("--batch-size", type=int, help=f"patches per iteration (default {DEFAULT_BATCH})")
    p.add_argument("--cache", help="download cache (default $MAMBASEG_CACHE/pyradiomics-3.0.1 or "
                                   "~/.cache/mambaseg/pyradiomics-3.0.1)")
    p.add_argument("--overwrite", action="store_true", default=None, help="run again even if OUT holds a finished demo")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    op = p.add_argument_group("operator demo (--operator)")
    op.add_argument("--operator", action="store_true", help="check and time the selective scan instead")
    op.add_argument("--length", type=int, help="sequence length L of the timed scan (default 4096)")
    op.add_argument("--dim", type=int, help="channels D of the timed scan (default 96)")
    op.add_argument("--d-state", type=int, help="state size N of the timed scan (default 16)")
    return p


def run_demo_command(args: argparse.Namespace) -> int:
    """Dispatch ``mambaseg demo``: the operator demo with ``--operator`` (or its flags), else the workflow."""
    operator_given = [f for f in _OPERATOR_FLAGS if getattr(args, f, None) is not None]
    if args.operator or operator_given:
        workflow_given = [f for f in _WORKFLOW_FLAGS if getattr(args, f, None) is not None]
        if workflow_given:
            flags = ", ".join("--" + f.replace("_", "-") for f in workflow_given)
            print(f"mambaseg demo: {flags} belong to the workflow demo, not to the operator demo", file=sys.stderr)
            return 2
        return run_demo(length=args.length or 4096, dim=args.dim or 96, d_state=args.d_state or 16)
    return run_workflow(out=args.out or DEFAULT_OUT, model=args.model or DEFAULT_MODEL, iterations=args.iterations,
                        minutes=args.minutes, patch_size=args.patch_size, batch_size=args.batch_size,
                        cache_dir=args.cache, overwrite=bool(args.overwrite), progress=args.progress)


# ------------------------------------------------------------------------------------------------ workflow demo
def _fmt_vec(v) -> str:
    return "(" + ", ".join(f"{float(x):.4g}" for x in v) + ")"


def _step(n: int, title: str) -> float:
    print(f"\n[{n}/6] {title}", flush=True)
    return time.perf_counter()


def _done(t0: float) -> None:
    print(f"      ({time.perf_counter() - t0:.1f} s)", flush=True)


def _fmt_metric(v: Any, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "inf (nothing predicted, or the lesion missed)" if unit else "n/a"
    return f"{float(v):.4f}{unit}" if not unit else f"{float(v):.2f}{unit}"


def _print_results(record: dict[str, Any]) -> None:
    print("\nresults on the held-out case " + record["test_case"] + ":")
    for name, m in record["metrics"].items():
        print(f"   {name}: Dice {_fmt_metric(m['dice'])}, HD95 {_fmt_metric(m['hd95'], ' mm')}")
    print("\nwhere everything is:")
    for key in ("dataset", "run_dir", "predictions", "cases_csv", "summary_json", "record"):
        print(f"   {key:13s} {record['paths'][key]}")


def run_workflow(out: str | Path = DEFAULT_OUT, model: str = DEFAULT_MODEL, *, iterations: int | None = None,
                 minutes: float | None = None, patch_size: list[int] | tuple[int, int] | None = None,
                 batch_size: int | None = None, seed: int = DEFAULT_SEED, cache_dir: str | Path | None = None,
                 overwrite: bool = False, device: str = "auto", model_kwargs: dict[str, Any] | None = None,
                 test_case: str | None = None, train_overrides: dict[str, Any] | None = None,
                 progress: bool = True) -> int:
    """Run the end-to-end demo and print every step (see the module docstring for the output layout).

    Args:
        out: output folder; if it holds a finished demo (``demo.json``) it is reported and re-used.
        model: registered model name (a 2D or 2D/3D model; 2D on the volumes, slice by slice).
        iterations: training iterations (default :data:`DEFAULT_ITERATIONS` when ``minutes`` is not given).
        minutes: wall-clock training budget instead of ``iterations`` (not reproducible).
        patch_size: 2D training patch (default :data:`DEFAULT_PATCH`).
        batch_size: patches per iteration (default :data:`DEFAULT_BATCH`).
        seed: seed of weights, sampling and augmentation.
        cache_dir: download cache (default :func:`mambaseg.data.sample_data.default_cache_dir`).
        overwrite: run everything again even if ``out`` holds a finished demo.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...
        model_kwargs: extra keyword arguments of the model.
        test_case: the held-out case (default :data:`mambaseg.data.sample_data.DEFAULT_TEST_CASE`).
        train_overrides: further :class:`~mambaseg.training.trainer.TrainConfig` values (default
            :data:`DEFAULT_TRAIN_OVERRIDES`; the model family's preset fills the rest).
        progress: show progress bars.

    Returns:
        Exit code: 0 done, 1 a step failed (the message says which and what to do).
    """
    from mambaseg.data.sample_data import DEFAULT_TEST_CASE, SampleDataError

    if iterations is not None and minutes is not None:
        print("mambaseg demo: give --iterations or --minutes, not both", file=sys.stderr)
        return 2
    if iterations is None and minutes is None:
        iterations = DEFAULT_ITERATIONS
    out = Path(out)
    record_path = out / "demo.json"
    settings = {"model": model, "iterations": iterations, "minutes": minutes,
                "patch_size": list(patch_size or DEFAULT_PATCH), "batch_size": batch_size or DEFAULT_BATCH,
                "seed": seed, "model_kwargs": dict(model_kwargs or {}),
                "test_case": test_case or DEFAULT_TEST_CASE,
                "train_overrides": dict(DEFAULT_TRAIN_OVERRIDES if train_overrides is None else train_overrides)}
    settings = json.loads(json.dumps(settings))  # as demo.json stores them (tuples -> lists)
    if record_path.is_file() and not overwrite:
        try:
            record = json.loads(record_path.read_text())
        except (OSError, json.JSONDecodeError):
            record = None
        if record is not None and "metrics" in record:
            print(f"mambaseg demo: {out} already holds a finished demo ({record.get('finished', '?')}, "
                  f"{record['total_seconds']:.0f} s); re-using it. Pass --overwrite to run it again.")
            if record.get("settings") != settings:
                print(f"   note: it was run with {record.get('settings')}, not with the options given now")
            _print_results(record)
            return 0
    try:
        return _workflow(out, settings, cache_dir, overwrite, device, progress)
    except SampleDataError as err:
        print(f"\nmambaseg demo: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; run `mambaseg demo --out {out}` again to continue training from "
              f"{out / 'run' / 'checkpoint_latest.pt'}", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"\nmambaseg demo: error: {err}\n(pass --overwrite to start {out} afresh)", file=sys.stderr)
        return 1


def _workflow(out: Path, settings: dict[str, Any], cache_dir, overwrite: bool, device: str, progress: bool) -> int:
    import datetime as _dt

    import numpy as np
    import torch

    from mambaseg.data.check import check_dataset, format_problems
    from mambaseg.data.io import read_image
    from mambaseg.data.plan import Plan
    from mambaseg.data.sample_data import (
        ARCHIVE_NAME,
        CASE_MODALITY,
        default_cache_dir,
        fetch_pyradiomics_cases,
        make_demo_dataset,
    )
    from mambaseg.evaluation.evaluate import evaluate_folders
    from mambaseg.inference.predictor import Predictor, run_split_files
    from mambaseg.models import model_info
    from mambaseg.training.trainer import TrainConfig, train

    t_start = time.perf_counter()
    info = model_info(settings["model"])  # unknown model: ValueError naming close ones
    if 2 not in info.spatial_dims:
        raise ValueError(f"the demo trains a 2D model slice-wise; {settings['model']} supports "
                         f"{info.spatial_dims}D only")
    print(f"mambaseg demo | torch {torch.__version__} | {torch.get_num_threads()} threads | output {out}")

    t = _step(1, "fetch the sample data (pyradiomics 3.0.1 source archive from PyPI)")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cases = fetch_pyradiomics_cases(cache)
    print(f"      archive {cache / ARCHIVE_NAME} (SHA-256 verified), {len(cases)} cases:")
    for case, image, _ in cases:
        arr, meta = read_image(image)
        print(f"        {case:8s} {CASE_MODALITY[case]:3s} shape {tuple(arr.shape)} spacing "
              f"{_fmt_vec(meta.spacing)} mm")
    _done(t)

    t = _step(2, "build the nnU-Net raw dataset")
    test_case = settings["test_case"]
    dataset = make_demo_dataset(out / "raw", cache, test_case=test_case)
    train_cases = [c for c, _, _ in cases if c != test_case]
    siblings = [c for c in train_cases if CASE_MODALITY[c] == CASE_MODALITY[test_case]]
    print(f"      {dataset}\n      imagesTr/labelsTr: {', '.join(train_cases)}; imagesTs/labelsTs: {test_case} "
          f"(held out; same-modality case(s) in training: {', '.join(siblings) or 'none'})\n"
          f"      one channel 'MRI/CT' with per-image z-score (mixing modalities is a demo simplification); "
          f"labels background 0, lesion 1")
    _done(t)

    t = _step(3, "check the dataset (mambaseg data check)")
    problems = check_dataset(dataset)
    errors = [p for p in problems if p.severity == "error"]
    print("      " + (format_problems(problems).replace("\n", "\n      ") if problems else "no problems found"))
    if errors:
        print(f"mambaseg demo: the dataset has {len(errors)} error(s); stopping", file=sys.stderr)
        return 1
    _done(t)

    run_dir = out / "run"
    resume = (run_dir / "checkpoint_latest.pt").is_file() and not overwrite
    budget = (f"{settings['iterations']} iterations" if settings["iterations"] is not None
              else f"{settings['minutes']} minutes")
    t = _step(4, f"train {settings['model']} (2D, slice-wise) for {budget}, seed {settings['seed']}"
              + (" - resuming the run found in OUT/run" if resume else ""))
    losses: list[float] = []
    cfg = TrainConfig(data=str(dataset), model=settings["model"], out=str(run_dir),
                      model_kwargs={**({"spatial_dims": 2} if len(info.spatial_dims) > 1 else {}),
                                    **settings["model_kwargs"]},
                      iterations=settings["iterations"], time_budget_minutes=settings["minutes"],
                      patch_size=settings["patch_size"], batch_size=settings["batch_size"], seed=settings["seed"],
                      device=device, resume=resume, overwrite=overwrite and not resume, progress=progress,
                      **settings["train_overrides"])
    result = train(cfg, callbacks=[lambda ev, st: losses.append(st["loss"]) if ev == "iteration" else None])
    plan = Plan.load(run_dir / "plan.json")
    print(f"      plan: patch {plan.patch_size}, batch {plan.batch_size}, slices along axis {plan.slice_axis}, "
          f"in-plane target spacing {plan.target_spacing} mm, normalisation {plan.normalization}")
    if losses:
        k = max(1, len(losses) // 10)
        print(f"      {result.iterations} iterations in {result.seconds:.1f} s; training loss "
              f"{np.mean(losses[:k]):.3f} (first {k}) -> {np.mean(losses[-k:]):.3f} (last {k})")
    else:
        print(f"      {result.iterations} iterations ({result.seconds:.1f} s); nothing left to train")
    print(f"      no validation case: {test_case} is never used for training or model selection; the final "
          f"weights (checkpoint_latest.pt) are used")
    _done(t)

    t = _step(5, f"predict the held-out case {test_case} (slice by slice, written as NRRD)")
    predictor = Predictor.from_run(run_dir, checkpoint="latest", device=device)
    n_params = sum(p.numel() for p in predictor.model.parameters())
    pred_dir = out / "predictions"
    (pred_dir / f"{test_case}.nrrd").unlink(missing_ok=True)
    written = predictor.predict_files(run_split_files(run_dir, "test"), pred_dir, progress=progress)
    image, im_meta = read_image(dataset / "imagesTs" / f"{test_case}_0000.nrrd")
    pred, pr_meta = read_image(written[0])
    same = (pred.shape == image.shape and np.allclose(pr_meta.spacing, im_meta.spacing)
            and np.allclose(pr_meta.origin, im_meta.origin) and np.allclose(pr_meta.direction, im_meta.direction))
    print(f"      model {settings['model']}: {n_params:,} parameters, device {predictor.device}")
    print(f"      input  {dataset / 'imagesTs' / f'{test_case}_0000.nrrd'}: shape {tuple(image.shape)}, spacing "
          f"{_fmt_vec(im_meta.spacing)}, origin {_fmt_vec(im_meta.origin)}")
    print(f"      output {written[0]}: shape {tuple(pred.shape)}, spacing {_fmt_vec(pr_meta.spacing)}, origin "
          f"{_fmt_vec(pr_meta.origin)}")
    print(f"      same geometry (shape, spacing, origin, direction): {same}; predicted lesion voxels "
          f"{int((pred > 0).sum()):,}")
    _done(t)

    t = _step(6, "evaluate against labelsTs (Dice, HD95 per class)")
    eval_dir = out / "evaluation"
    summary = evaluate_folders(pred_dir, dataset / "labelsTs", out=eval_dir)
    metrics = {r["label_name"]: {"dice": r.get("dice"), "hd95": r.get("hd95"), "n_ref": r.get("n_ref"),
                                 "n_pred": r.get("n_pred")} for r in summary["metric_per_case"]}
    for name, m in metrics.items():
        print(f"      {name}: reference {m['n_ref']:,} voxels, predicted {m['n_pred']:,}")
    _done(t)

    total = time.perf_counter() - t_start
    record = {
        "finished": _dt.datetime.now().isoformat(timespec="seconds"), "total_seconds": total,
        "settings": settings, "test_case": test_case, "train_cases": train_cases, "metrics": metrics,
        "iterations": result.iterations, "train_seconds": result.seconds, "same_geometry": bool(same),
        "paths": {"dataset": str(dataset), "run_dir": str(run_dir), "predictions": str(written[0]),
                  "cases_csv": str(eval_dir / "cases.csv"), "summary_json": str(eval_dir / "summary.json"),
                  "record": str(out / "demo.json")},
    }
    (out / "demo.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    _print_results(record)
    print(f"\ntotal time {total:.0f} s ({total / 60:.1f} min)")
    return 0


# ------------------------------------------------------------------------------------------------ operator demo
def _inputs(batch, dim, length, d_state, groups, seed=0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, length, generator=gen)
    delta = 0.1 * torch.randn(batch, dim, length, generator=gen)
    A = -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(dim, 1)  # S4D-real, as mamba_ssm initialises
    B = torch.randn(batch, groups, d_state, length, generator=gen)
    C = torch.randn(batch, groups, d_state, length, generator=gen)
    delta_bias = torch.log(torch.expm1(torch.full((dim,), 0.01)))  # softplus^-1(0.01)
    D = torch.ones(dim)
    return [u, delta, A, B, C], dict(D=D, delta_bias=delta_bias, delta_softplus=True)


def _run(backend, tensors, kwargs):
    from ..ops import selective_scan

    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    start = time.perf_counter()
    out = selective_scan(*leaves, backend=backend, **kwargs)
    out.square().mean().backward()
    return out.detach(), [t.grad for t in leaves], time.perf_counter() - start


def run_demo(length: int = 4096, dim: int = 96, d_state: int = 16) -> int:
    """Operator demo (``mambaseg demo --operator``): the chunked scan against the specification, then timed."""
    import torch

    from ..ops import list_backends
    from ..ops.scan_orders import get_scan_order

    torch.manual_seed(0)
    print(f"mambaseg operator demo | torch {torch.__version__} | {torch.get_num_threads()} threads")
    print(f"backends runnable on CPU here: {', '.join(list_backends(torch.zeros(1)))}")

    print("\n1) SS2D cross-scan of a 2x8x9x7 feature map (VMamba order, 4 directions) and its exact merge")
    order = get_scan_order("cross")
    x = torch.randn(2, 8, 9, 7)
    seq = order.flatten(x)
    print(f"   flatten {tuple(x.shape)} -> {tuple(seq.shape)}; merge(flatten(x)) == 4x: "
          f"{torch.equal(order.merge(seq, (9, 7)), 4 * x)}")

    print("\n2) chunked scan vs the sequential specification (B=2, D=16, L=1000, N=16, 4 groups)")
    tensors, kwargs = _inputs(2, 16, 1000, 16, 4)
    ref_out, ref_grads, _ = _run("reference", tensors, kwargs)
    out, grads, _ = _run("chunked", tensors, kwargs)
    names = ["u", "delta", "A", "B", "C"]
    worst = [("out", (out - ref_out).abs().max().item())]
    worst += [(f"d{n}", ((g - r).abs().max() / r.abs().max()).item()) for n, g, r in zip(names, grads, ref_grads)]
    print("   max error: " + ", ".join(f"{n} {e:.1e}" for n, e in worst) + " (gradients relative to their max)")

    print(f"\n3) forward+backward time at Mamba-UNet stage-1 size (B=1, D={dim}, L={length}, N={d_state})")
    tensors, kwargs = _inputs(1, dim, length, d_state, 1)
    times = {}
    for backend in ("chunked", "reference"):
        runs = 3 if backend == "chunked" else 1
        times[backend] = min(_run(backend, tensors, kwargs)[2] for _ in range(runs))
        print(f"   {backend:9s} {times[backend] * 1e3:8.1f} ms")
    print(f"   chunked is {times['reference'] / times['chunked']:.1f}x faster than the sequential specification")
    ok = all(e < 1e-3 for _, e in worst)
    print("\nresult: " + ("OK, the chunked scan matches the specification" if ok else "MISMATCH"))
    return 0 if ok else 1


def print_backends() -> int:
    """``mambaseg backends``: the selective-scan backends runnable on each device of this machine."""
    import torch

    from ..ops import list_backends

    probes = {"cpu": torch.zeros(1)}
    if torch.cuda.is_available():
        probes["cuda"] = torch.zeros(1, device="cuda")
    for device, probe in probes.items():
        print(f"{device}: {', '.join(list_backends(probe))}")
    return 0
