"""``mambaseg compare``: per-case tables, paired statistics, efficiency and plots of benchmark runs.

Example::

    mambaseg compare bench_out/ --out comparison/ --metrics dice,hd95 --reference unet --alpha 0.05

Writes ``per_case.csv``, ``summary.csv``, ``compare.json``, ``report.md`` and PNG plots into ``--out`` and prints
the summary table of the primary metric and class.
"""

from __future__ import annotations

import argparse
import shlex
import sys


def add_compare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``compare`` on the top-level sub-parsers."""
    p = subparsers.add_parser("compare", help="compare benchmark runs: per-case statistics, efficiency, report")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="benchmark output folders and/or run folders")
    p.add_argument("--out", required=True, help="folder for report.md, compare.json, summary.csv, per_case.csv, PNGs")
    p.add_argument("--metrics", default="dice,hd95,nsd",
                   help="comma-separated metrics from cases.csv; the first is the primary one (default dice,hd95,nsd)")
    p.add_argument("--reference", default=None, help="compare every model against this one (default: all pairs)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level; CIs have level 1 - alpha")
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    p.add_argument("--reproduce", default=None, metavar="COMMAND",
                   help="the one command that reproduces the whole study; written at the top of the report")
    return p


def run_compare_command(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Run ``compare``; returns the process exit code.

    Args:
        args: parsed arguments of :func:`add_compare_parser`.
        argv: the command line for the report header (default: ``sys.argv``).
    """
    from ..study.compare import compare_runs
    from ..study.report import format_summary_table, verdict

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    command = shlex.join(["mambaseg"] + list(sys.argv[1:] if argv is None else argv))
    try:
        res = compare_runs(args.run_dirs, args.out, metrics=metrics, reference=args.reference, alpha=args.alpha,
                           n_boot=args.n_boot, seed=args.seed, command=command, plots=not args.no_plots,
                           reproduce=args.reproduce)
    except (FileNotFoundError, ValueError, ImportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    cls = res["primary_class"]
    print(f"{len(res['runs'])} finished run(s), {len(res['unfinished'])} unfinished (not used); "
          f"{'mean over classes' if cls == 'mean_over_classes' else 'class ' + cls}:")
    print(format_summary_table(res))
    t = res["tests"][cls][res["primary_metric"]]
    for p in t["pairs"]:
        print(f"{p['model_a']} vs {p['model_b']}: mean diff {p['mean_diff']:.4f} "
              f"[{p['ci_low']:.4f}, {p['ci_high']:.4f}], p Holm {p['pvalue_holm']:.4g}: {verdict(p, res['alpha'])}")
    if t["note"]:
        print(f"no paired test: {t['note']}")
    print(f"report: {args.out}/report.md (and compare.json, summary.csv, per_case.csv)")
    return 0
