"""``mambaseg data``: convert datasets into the nnU-Net v2 raw layout and check their integrity.

Examples::

    mambaseg data convert --format acdc_h5 ../shared/data/acdc_ssl4mis raw/ --id 27 --name ACDC
    mambaseg data convert --format folders2d ../shared/data/kvasir_seg raw/ --id 501 --name KvasirSEG
    mambaseg data convert --format msd Task04_Hippocampus raw/
    mambaseg data convert --format brats2015_deepmedic ../shared/data/brats2015_deepmedic raw/
    mambaseg data convert --format case_folders SRC raw/ --id 300 --channels FLAIR=Flair_*,T1c=T1c_* --label seg
    mambaseg data check raw/Dataset027_ACDC
"""

from __future__ import annotations

import argparse
import sys

FORMATS = ("acdc_h5", "folders2d", "msd", "case_folders", "brats2015_deepmedic")


def add_data_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``data convert`` and ``data check`` on the top-level sub-parsers."""
    data = subparsers.add_parser("data", help="convert datasets to nnU-Net raw format and check them")
    sub = data.add_subparsers(dest="data_command", required=True)
    conv = sub.add_parser("convert", help="convert a dataset into nnU-Net v2 raw format (DatasetXXX_Name)")
    conv.add_argument("--format", required=True, choices=FORMATS,
                      help="acdc_h5: SSL4MIS ACDC h5; folders2d: 2-D image/mask folders; msd: Decathlon task; "
                           "case_folders: one folder per case with a file per channel and a label file; "
                           "brats2015_deepmedic: BraTS 2015 as shipped with DeepMedic (FLAIR + T1c, labels 0-4)")
    conv.add_argument("src", help="source dataset folder")
    conv.add_argument("out", help="output root; DatasetXXX_Name is created inside")
    conv.add_argument("--id", type=int, default=None,
                      help="dataset id (default: 27 for acdc_h5, NN of TaskNN for msd, 215 for brats2015_deepmedic; "
                           "required for folders2d and case_folders)")
    conv.add_argument("--name", default=None,
                      help="dataset name (default: ACDC, the MSD task name, or the source folder name)")
    conv.add_argument("--limit", type=int, default=None, help="convert only the first N cases (sorted)")
    conv.add_argument("--channels", default=None,
                      help="case_folders: NAME=STEM_OR_GLOB[,NAME=...] in channel order, e.g. FLAIR=Flair_*,T1c=T1c_*")
    conv.add_argument("--label", default=None, help="case_folders: file stem or glob of the label in each case folder")
    conv.add_argument("--normalization", default=None,
                      help="case_folders: nnU-Net normalisation per channel, comma-separated (noNorm, zscore, CT, ...)")
    conv.add_argument("--copy", action="store_true", help="case_folders/brats2015_deepmedic: copy instead of symlink")
    conv.add_argument("--overwrite", action="store_true",
                      help="replace the images, labels, dataset.json and splits.json of a dataset folder that "
                           "already holds a conversion (without it, such a folder is refused)")
    check = sub.add_parser("check", help="check a raw dataset like nnU-Net's verify_dataset_integrity, and more")
    check.add_argument("dataset", help="DatasetXXX_Name folder")
    check.add_argument("--lenient-geometry", action="store_true",
                       help="origin/direction mismatches are warnings (nnU-Net's behaviour) instead of errors")
    check.add_argument("--warnings-as-errors", action="store_true", help="exit 1 on warnings too")
    return data


def run_data(args: argparse.Namespace) -> int:
    """Run ``data convert`` or ``data check``; returns the process exit code."""
    if args.data_command == "convert":
        return _convert(args)
    if args.data_command == "check":
        return _check(args)
    return 2


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data import (
        convert_acdc_h5,
        convert_brats2015_deepmedic,
        convert_case_folders,
        convert_folders_2d,
        convert_msd,
    )
    from ..data.io import ImageReadError

    try:
        if args.format == "acdc_h5":
            folder = convert_acdc_h5(args.src, args.out, 27 if args.id is None else args.id, args.name or "ACDC",
                                     limit=args.limit, overwrite=args.overwrite, progress=True)
        elif args.format == "msd":
            folder = convert_msd(args.src, args.out, args.id, args.name, limit=args.limit, overwrite=args.overwrite,
                                 progress=True)
        elif args.format == "case_folders":
            if args.id is None or not args.channels or not args.label:
                print("error: --format case_folders needs --id, --channels NAME=STEM,... and --label STEM",
                      file=sys.stderr)
                return 2
            pairs = [item.split("=", 1) for item in args.channels.split(",")]
            if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
                print(f"error: --channels must be NAME=STEM_OR_GLOB,..., got {args.channels!r}", file=sys.stderr)
                return 2
            name = args.name or Path(args.src).resolve().name.replace(" ", "_").replace("-", "_")
            folder = convert_case_folders(
                args.src, args.out, args.id, name, dict(pairs), args.label,
                normalization=args.normalization.split(",") if args.normalization else None,
                link="copy" if args.copy else "symlink", limit=args.limit, overwrite=args.overwrite, progress=True)
        elif args.format == "brats2015_deepmedic":
            kw = {"dataset_id": args.id} if args.id is not None else {}
            if args.name:
                kw["name"] = args.name
            folder = convert_brats2015_deepmedic(args.src, args.out, link="copy" if args.copy else "symlink",
                                                 limit=args.limit, overwrite=args.overwrite, progress=True, **kw)
        else:
            if args.id is None:
                print("error: --id is required for --format folders2d", file=sys.stderr)
                return 2
            name = args.name or Path(args.src).resolve().name.replace(" ", "_").replace("-", "_")
            folder = convert_folders_2d(args.src, args.out, args.id, name, limit=args.limit, overwrite=args.overwrite,
                                        progress=True)
    except (FileNotFoundError, ValueError, OSError, ImageReadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {folder}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..data import check_dataset, format_problems

    problems = check_dataset(args.dataset, strict_geometry=not args.lenient_geometry, progress=True)
    print(format_problems(problems))
    n_err = sum(p.severity == "error" for p in problems)
    if n_err or (args.warnings_as_errors and problems):
        return 1
    print(f"{args.dataset}: OK")
    return 0
