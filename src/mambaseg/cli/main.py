"""``mambaseg`` entry point: parses the sub-command and dispatches to its module."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mambaseg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from .demo import add_demo_parser

    add_demo_parser(sub)
    sub.add_parser("backends", help="list selective-scan backends and which run on this machine")
    models = sub.add_parser("models", help="table of registered models: params, FLOPs incl. the scan, paper")
    models.add_argument("--input-size", type=int, nargs="+", default=[224, 224], help="H W (or D H W for 3D)")
    models.add_argument("--in-channels", type=int, default=1)
    models.add_argument("--num-classes", type=int, default=4)
    models.add_argument("--no-flops", action="store_true", help="parameters only (fast)")
    models.add_argument("--all", action="store_true", help="include the tiny *_test variants")
    from .data import add_data_parser

    add_data_parser(sub)
    from .evaluate import add_evaluate_parser
    from .predict import add_predict_parser

    add_predict_parser(sub)
    add_evaluate_parser(sub)
    from .train import add_train_parser

    add_train_parser(sub)
    from .benchmark import add_benchmark_parser

    add_benchmark_parser(sub)
    from .compare import add_compare_parser

    add_compare_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo_command

        return run_demo_command(args)
    if args.command == "models":
        from .models import print_models

        return print_models(tuple(args.input_size), args.in_channels, args.num_classes, not args.no_flops, args.all)
    if args.command == "backends":
        from .demo import print_backends

        return print_backends()
    if args.command == "data":
        from .data import run_data

        return run_data(args)
    if args.command == "predict":
        from .predict import run_predict

        return run_predict(args)
    if args.command == "evaluate":
        from .evaluate import run_evaluate

        return run_evaluate(args)
    if args.command == "train":
        from .train import run_train

        return run_train(args)
    if args.command == "benchmark":
        from .benchmark import run_benchmark_command

        return run_benchmark_command(args, sys.argv[1:] if argv is None else argv)
    if args.command == "compare":
        from .compare import run_compare_command

        return run_compare_command(args, sys.argv[1:] if argv is None else argv)
    return 2


if __name__ == "__main__":
    sys.exit(main())
