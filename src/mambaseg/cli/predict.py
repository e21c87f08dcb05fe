"""``mambaseg predict``: segment images with a trained run and write label maps with the inputs' geometry.

Examples::

    mambaseg predict --run runs/acdc_unet --input raw/Dataset027_ACDC/imagesTs --output preds/
    mambaseg predict --run runs/kvasir --input polyp.jpg --output preds/ --tta   # writes preds/polyp.png
    mambaseg predict --run runs/kvasir --split test --output preds/       # the run's held-out cases
"""

from __future__ import annotations

import argparse
import sys


def add_predict_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``predict`` on the top-level sub-parsers."""
    p = subparsers.add_parser("predict", help="predict label maps with a trained run (sliding window, geometry kept)")
    p.add_argument("--run", required=True, help="run folder with plan.json, config.yaml, checkpoint_*.pt")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--input",
                      help="an image file, a folder of images ({case}_0000.ext channel files are grouped), or an "
                           "nnU-Net raw dataset folder (its imagesTs is used)")
    what.add_argument("--split", choices=("test", "val", "train"),
                      help="the run's own cases from its dataset: test = the held-out cases recorded in the run's "
                           "splits.json (the dataset split's test list, else imagesTs)")
    p.add_argument("--output", required=True, help="output folder ({case}.ext; JPEG inputs give .png masks)")
    p.add_argument("--checkpoint", default="best", help="best (default), latest, or a checkpoint file")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation on every spatial axis")
    p.add_argument("--save-probabilities", action="store_true", help="also write {case}.npz with probabilities")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window tile overlap in [0, 1) (default 0.5)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run_predict(args: argparse.Namespace) -> int:
    """Run ``predict``; returns the process exit code."""
    from ..data.io import ImageReadError
    from ..inference.predictor import Predictor, run_split_files
    from ..training.checkpoint import CheckpointError

    try:
        predictor = Predictor.from_run(args.run, checkpoint=args.checkpoint, device=args.device, tta=args.tta,
                                       overlap=args.overlap)
        inputs = args.input if args.input is not None else run_split_files(args.run, args.split)
        written = predictor.predict_files(inputs, args.output, save_probabilities=args.save_probabilities,
                                          progress=not args.no_progress)
    except (FileNotFoundError, ValueError, ImageReadError, CheckpointError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} prediction(s) to {args.output}")
    return 0
