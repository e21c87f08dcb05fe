"""``mambaseg evaluate``: metrics of a prediction folder against a reference folder.

Writes ``cases.csv`` (one row per case and class) and ``summary.json`` into ``--out`` (default: the prediction
folder, as nnU-Net's ``nnUNetv2_evaluate_folder``) and prints a per-class table.

Example::

    mambaseg evaluate --pred preds/ --ref raw/Dataset027_ACDC/labelsTs --labels 1 2 3
    mambaseg evaluate --pred preds/ --ref raw/Dataset001_Kvasir/labelsTr --pred-cases-only   # test cases only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``evaluate`` on the top-level sub-parsers."""
    p = subparsers.add_parser("evaluate", help="Dice, IoU, HD95, ASSD, NSD of predictions vs references")
    p.add_argument("--pred", required=True, help="folder of predicted label maps")
    p.add_argument("--ref", required=True, help="folder of reference label maps (same case names)")
    p.add_argument("--labels", type=int, nargs="+", default=None,
                   help="labels to evaluate (default: dataset.json next to --ref, else all non-zero reference values)")
    p.add_argument("--nsd-tolerance", type=float, default=1.0, help="NSD tolerance in mm (default 1.0)")
    p.add_argument("--out", default=None, help="where cases.csv and summary.json go (default: --pred)")
    p.add_argument("--pred-cases-only", action="store_true",
                   help="evaluate only the cases that have a prediction (nnU-Net's -chill), e.g. the test cases "
                        "against labelsTr; by default every reference needs a prediction")
    return p


def _num(v: Any, fmt: str = "{:.4f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def format_table(summary: dict[str, Any]) -> str:
    """Per-class table: per-image mean Dice, pooled Dice, mean HD95 and empty-case counts."""
    head = (f"{'class':<16}{'cases':>6}{'mean Dice':>11}{'pooled Dice':>13}{'HD95 mm':>10}"
            f"{'both empty':>12}{'ref empty':>11}{'pred empty':>12}")
    lines = [head, "-" * len(head)]
    for name, c in summary["classes"].items():
        m = c["metrics"]
        lines.append(f"{name:<16}{c['n_cases']:>6}{_num(m['dice']['mean']):>11}{_num(c['pooled_dice']):>13}"
                     f"{_num(m['hd95']['mean'], '{:.2f}'):>10}{c['n_both_empty']:>12}{c['n_ref_empty']:>11}"
                     f"{c['n_pred_empty']:>12}")
    lines.append("mean Dice = mean over cases of per-case Dice (both-empty cases excluded); pooled Dice = "
                 "2*sum TP / (2*sum TP + sum FP + sum FN);")
    lines.append("HD95 of a case with one empty mask = image diagonal in mm (counted in n_substituted).")
    return "\n".join(lines)


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``evaluate``; returns the process exit code."""
    from ..data.io import ImageReadError
    from ..evaluation.evaluate import evaluate_folders

    out = args.out if args.out is not None else args.pred
    try:
        summary = evaluate_folders(args.pred, args.ref, labels=args.labels, nsd_tolerance_mm=args.nsd_tolerance,
                                   out=out, all_references=not args.pred_cases_only, progress=True)
    except (FileNotFoundError, ValueError, ImageReadError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_table(summary))
    print(f"wrote {Path(out) / 'cases.csv'} and {Path(out) / 'summary.json'}")
    return 0
