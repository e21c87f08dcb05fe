"""``mambaseg train``: train a registered model on an nnU-Net raw dataset into a run folder.

Examples::

    mambaseg train --data raw/Dataset027_ACDC --model mamba_unet --out runs/acdc_mamba_unet
    mambaseg train --data raw/Dataset001_Kvasir --model umamba_bot --out runs/k --iterations 2000 --seed 1
    mambaseg train --config exp.yaml --out runs/k --resume

Values given on the command line override the ``--config`` YAML file, which overrides the model family's preset.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train`` on the top-level sub-parsers (every default is None = "not given")."""
    p = subparsers.add_parser("train", help="train a model on an nnU-Net raw dataset (run folder with checkpoints)")
    p.add_argument("--data", help="nnU-Net raw dataset folder (DatasetXXX_Name)")
    p.add_argument("--model", help="registered model name (see `mambaseg models --all`)")
    p.add_argument("--out", help="run folder")
    p.add_argument("--config", help="YAML file with TrainConfig keys (command-line values override it)")
    p.add_argument("--preset", help="auto (by model family), none, or a preset name")
    p.add_argument("--fold", type=int, help="cross-validation fold (default 0)")
    p.add_argument("--split", choices=("5fold", "holdout"), help="split when the dataset has no splits.json")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--iterations", type=int, help="training iterations")
    budget.add_argument("--epochs", type=int, help="epochs of --iterations-per-epoch iterations")
    budget.add_argument("--time-budget", type=float, dest="time_budget_minutes", metavar="MINUTES",
                        help="train for this many minutes (wall clock)")
    p.add_argument("--iterations-per-epoch", type=int, help="iterations per epoch (0 = one pass over the cases)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--optimizer", choices=("sgd", "adamw", "adam"))
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--schedule", choices=("poly", "cosine"))
    p.add_argument("--loss", choices=("dice_ce", "ssl4mis", "bce_dice"))
    p.add_argument("--batch-size", type=int, help="override the plan's batch size")
    p.add_argument("--patch-size", type=int, nargs="+", help="override the plan's patch size (H W or D H W)")
    p.add_argument("--val-every", type=int, help="validate every N iterations")
    p.add_argument("--val-max-cases", type=int, help="validate on at most N cases (0 = no validation)")
    p.add_argument("--target-spacing", type=float, nargs="+", help="resample to this spacing (array order, mm)")
    p.add_argument("--memory-budget-gb", type=float, help="accelerator memory the plan is sized for (default 8)")
    p.add_argument("--num-workers", type=int, help="data-loading worker processes (default 0)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"))
    p.add_argument("--no-augmentation", dest="augmentation", action="store_false", default=None,
                   help="turn data augmentation off")
    p.add_argument("--resume", action="store_true", default=None, help="continue from checkpoint_latest.pt")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="start again in a run folder that already holds a checkpoint")
    p.add_argument("--deterministic", action="store_true", default=None, help="request deterministic algorithms")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    return p


_KEYS = ("data", "model", "out", "preset", "fold", "split", "iterations", "epochs", "time_budget_minutes",
         "iterations_per_epoch", "seed", "optimizer", "lr", "schedule", "loss", "batch_size", "patch_size",
         "val_every", "val_max_cases", "target_spacing", "memory_budget_gb", "num_workers", "device", "amp",
         "augmentation", "resume", "overwrite", "deterministic", "progress")


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig values of ``args``: the ``--config`` YAML overridden by the flags that were given."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        import yaml

        try:
            with open(args.config) as f:
                loaded = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{args.config} is not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of TrainConfig keys")
        loaded.pop("resolved_preset", None)  # a saved run's config.yaml can be reused as --config
        values.update(loaded)
    if getattr(args, "time_budget_minutes", None) is not None or getattr(args, "epochs", None) is not None or \
            getattr(args, "iterations", None) is not None:
        for k in ("iterations", "epochs", "time_budget_minutes"):
            values.pop(k, None)  # a budget flag replaces the file's budget
    values.update({k: getattr(args, k) for k in _KEYS if getattr(args, k, None) is not None})
    return values


def run_train(args: argparse.Namespace) -> int:
    """Run ``mambaseg train``; prints a short summary; returns the exit code (130 after Ctrl-C)."""
    import logging

    from mambaseg.data.io import ImageReadError
    from mambaseg.training.checkpoint import CheckpointError
    from mambaseg.training.trainer import config_from_dict, train

    try:
        values = config_values(args)
        missing = [k for k in ("data", "model", "out") if not values.get(k)]
        if missing:
            print(f"mambaseg train: missing {', '.join('--' + k for k in missing)}", file=sys.stderr)
            return 2
        cfg = config_from_dict(values)
        log = logging.getLogger("mambaseg.training")
        if not log.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setLevel(logging.WARNING)
            log.addHandler(handler)
        result = train(cfg)
    except KeyboardInterrupt:
        print(f"interrupted; checkpoint_latest.pt saved in {values.get('out')} (continue with --resume)",
              file=sys.stderr)
        return 130
    except (ValueError, OSError, ImageReadError, CheckpointError) as e:  # bad input: the message names the file
        print(f"mambaseg train: error: {e}", file=sys.stderr)
        return 1
    best = "n/a" if math.isnan(result.best_dice) else f"{result.best_dice:.4f} (iteration {result.best_iteration})"
    print(f"run folder: {result.run_dir}\nbest validation mean Dice: {best}\n"
          f"iterations: {result.iterations}, time: {result.seconds:.1f} s")
    return 0
