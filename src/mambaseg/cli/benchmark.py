"""``mambaseg benchmark``: train, predict and evaluate several models under one protocol (resumable).

Examples::

    mambaseg benchmark --data raw/Dataset001_Kvasir --models unet,ultralight_vm_unet --seeds 3 --iterations 2000 \\
        --out bench/kvasir --batch-size 8 --patch-size 128 128 --target-spacing 4 4
    mambaseg benchmark ... --seeds 0,1,2,3         # the same command again continues; a new seed is added
    mambaseg benchmark --data ... --models vm_unet --seeds 3 --folds 5 --minutes 30 --out bench/cv \\
        --model-kwargs '{"vm_unet": {"scan": "snake"}}'

Run again with the same arguments to continue after an interruption: finished runs are skipped, interrupted ones
resume from their latest checkpoint. Layout and rules: :mod:`mambaseg.study.benchmark`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from typing import Any


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> ``[0, 1, 2]``; ``"0,1,2"`` or ``"7,"`` -> those seeds."""
    try:
        if "," not in text:
            n = int(text)
            if n < 1:
                raise ValueError
            return list(range(n))
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (3 = seeds 0,1,2) or a list (0,1,2), got {text!r}"
                                         ) from None


def _json_mapping(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--model-kwargs is not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--model-kwargs must be a JSON object keyed by model name, got {text!r}")
    return value


def add_benchmark_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``benchmark`` on the top-level sub-parsers."""
    p = subparsers.add_parser("benchmark", help="train, predict and evaluate several models under one protocol")
    p.add_argument("--data", required=True, help="nnU-Net raw dataset folder (DatasetXXX_Name)")
    p.add_argument("--models", required=True, help="comma-separated registered model names")
    p.add_argument("--seeds", required=True, type=parse_seeds, help="a count (3 = seeds 0,1,2) or a list (0,1,2)")
    p.add_argument("--folds", type=int, help="K-fold cross-validation (default: seeded holdout 80/10/10)")
    p.add_argument("--split-seed", type=int, help="seed of the split (default 0 for holdout, 12345 for folds)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--iterations", type=int, help="training iterations per run")
    budget.add_argument("--minutes", type=float, help="wall-clock training minutes per run")
    p.add_argument("--out", required=True, help="benchmark folder (continued when it already holds this benchmark)")
    p.add_argument("--batch-size", type=int, help="batch size for every model (default: each family's preset)")
    p.add_argument("--patch-size", type=int, nargs="+", help="patch size for every model (H W or D H W)")
    p.add_argument("--target-spacing", type=float, nargs="+",
                   help="resample to this spacing (array order); natural 2D images have spacing 1")
    p.add_argument("--val-every", type=int, help="validate every N iterations")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1 ...")
    p.add_argument("--model-kwargs", type=_json_mapping, default=None,
                   help='JSON keyed by model name, e.g. \'{"vm_unet": {"scan": "snake"}}\'')
    p.add_argument("--set", dest="train_set", action="append", default=[], metavar="KEY=VALUE", type=_key_value,
                   help="any other training setting for every run, e.g. --set optimizer=adamw --set lr=1e-3 "
                        "(keys: `mambaseg train` YAML keys; values parsed as YAML)")
    p.add_argument("--workers", type=int, default=1,
                   help="runs trained at the same time, each in its own process with threads / workers torch threads "
                        "(default 1; with more, latency and memory are measured while other runs train)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines or bars")
    return p


def _key_value(text: str) -> tuple[str, Any]:
    """``"lr=1e-3"`` -> ``("lr", 0.001)`` (the value parsed as YAML: numbers, booleans, lists)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def _mean_sd(values: Sequence[float], fmt: str) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def format_table(runs: Sequence[dict[str, Any]]) -> str:
    """One row per model: finished runs, test Dice (mean ± sample sd over runs), params, GFLOPs, latency, memory,
    training time (means over runs)."""
    head = (f"{'model':<24}{'runs':>6}{'test Dice':>18}{'params':>12}{'GFLOPs':>10}{'latency ms':>12}"
            f"{'peak MB':>9}{'train s':>9}")
    lines = [head, "-" * len(head)]
    for model in dict.fromkeys(r["model"] for r in runs):
        rs = [r for r in runs if r["model"] == model]
        ok = [r for r in rs if r["state"] != "failed"]

        def avg(key: str, ok=ok) -> float | None:
            vals = [r[key] for r in ok if r.get(key) is not None]
            return statistics.mean(vals) if vals else None

        params, flops, lat, mem, secs = (avg(k) for k in ("params", "flops", "latency_ms", "peak_memory_bytes",
                                                          "training_seconds"))
        lines.append(f"{model:<24}{f'{len(ok)}/{len(rs)}':>6}{_mean_sd([r['test_dice'] for r in ok], '{:.4f}'):>18}"
                     f"{'n/a' if params is None else f'{params:,.0f}':>12}"
                     f"{'n/a' if flops is None else f'{flops / 1e9:.3g}':>10}"
                     f"{'n/a' if lat is None else f'{lat:.1f}':>12}{'n/a' if mem is None else f'{mem / 2**20:.1f}':>9}"
                     f"{'n/a' if secs is None else f'{secs:.0f}':>9}")
    lines.append("test Dice = mean over classes of the per-image mean Dice on the test cases, then mean ± sd over "
                 "seeds/folds;\nFLOPs include the selective scan (batch 1, plan patch size); peak MB as "
                 "efficiency.json's peak_memory_method says\n(CUDA: max allocated; CPU: RSS growth of one forward).")
    return "\n".join(lines)


def run_benchmark_command(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Run ``mambaseg benchmark``; returns 0, or 1 when a run failed or the arguments are invalid."""
    import logging

    from ..study.benchmark import run_benchmark

    overrides = dict(args.train_set)
    overrides.update({k: getattr(args, k) for k in ("batch_size", "patch_size", "target_spacing", "val_every")
                      if getattr(args, k) is not None})
    budget = {"iterations": args.iterations} if args.iterations is not None else {"minutes": args.minutes}
    log = logging.getLogger("mambaseg.training")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
        log.addHandler(handler)
    try:
        result = run_benchmark(args.data, [m.strip() for m in args.models.split(",") if m.strip()], args.seeds,
                               args.out, folds=args.folds, budget=budget, model_kwargs=args.model_kwargs,
                               train_overrides=overrides, progress=not args.no_progress, split_seed=args.split_seed,
                               device=args.device, command=["mambaseg", *(argv if argv is not None else sys.argv[1:])],
                               workers=args.workers)
    except KeyboardInterrupt:
        print(f"interrupted; run the same command again to continue ({args.out})", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"mambaseg benchmark: error: {e}", file=sys.stderr)
        return 1
    print(format_table(result["runs"]))
    print(f"benchmark folder: {result['out']} (protocol in {result['benchmark_file']})")
    if result["failures"]:
        print(f"{len(result['failures'])} run(s) failed:", file=sys.stderr)
        for f in result["failures"]:
            print(f"  {f['model']} seed {f['seed']} fold {f['fold']}: {f['error']} (see {f['error_file']})",
                  file=sys.stderr)
    return result["exit_code"]
