"""The training workflow: ``train(TrainConfig) -> RunResult``.

One loop (:func:`train`) serves every model; variants come from the config (presets per family in
:mod:`mambaseg.training.presets`) and from callbacks. What a run does, in order:

1. Resolve the config (explicit values > family preset > :data:`~mambaseg.training.presets.BASE_DEFAULTS`).
2. Prepare ``RUN_DIR``: refuse to overwrite a run that holds a checkpoint unless ``resume`` or ``overwrite``.
3. Split (``splits_file``, else ``splits.json`` in the dataset if present, else nnU-Net 5-fold with seed 12345, or
   a seeded 80/10/10 ``holdout``; its test cases, or else the ``imagesTs`` cases, are recorded as the run's
   held-out ``test`` list in ``RUN_DIR/splits.json`` with the dataset's absolute path, which ``mambaseg predict
   --split test`` predicts), plan (:func:`mambaseg.data.planning.make_plan` on the training cases), preprocess
   and cache.
4. Train with nnU-Net-style patch sampling and augmentation; validate every ``val_every`` iterations on whole
   validation cases (sliding window with the plan's patch, 2D-on-3D slice by slice), per-case Dice on the
   preprocessed grid; log to ``log.csv`` (and TensorBoard when importable); write ``checkpoint_latest.pt`` at every
   validation and at the end, ``checkpoint_best.pt`` on a new best mean Dice. Ctrl-C finishes the current
   iteration, saves ``checkpoint_latest.pt`` and re-raises ``KeyboardInterrupt``.

Run folder::

    RUN_DIR/config.yaml  plan.json  splits.json  seeds.json  environment.json  log.csv  train.log
            checkpoint_latest.pt  checkpoint_best.pt  preprocessed/{case}.npy|_seg.npy|.json  [tensorboard/]

Exact resume: the sampler draws batch ``i`` from ``default_rng([seed, i])`` and the checkpoint holds the model,
optimizer, scheduler, GradScaler, iteration, torch/numpy/python RNG states and the sampler state, so a run of ``T``
iterations that stopped after ``N`` (Ctrl-C, a crash, a killed job) and is resumed gives the weights of the
uninterrupted ``T``-iteration run (bitwise on CPU with ``num_workers=0``; GPU kernels may not be deterministic).
Resuming a finished run with a larger ``iterations`` continues training with the schedule stretched to the new end,
but its first iterations followed the schedule of the first budget, so the result differs from one run of the
larger budget. A time budget is resumable but not reproducible (it depends on the clock).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mambaseg.training.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from mambaseg.training.presets import BASE_DEFAULTS, preset_for
from mambaseg.training.schedules import PolyLR, WarmupCosineLR
from mambaseg.training.seeding import seed_everything, worker_init_fn

__all__ = ["RunResult", "TrainConfig", "config_from_dict", "resolve_config", "train", "validate"]

logger = logging.getLogger("mambaseg.training")
Callback = Callable[[str, dict[str, Any]], None]
_BUDGET = ("iterations", "epochs", "time_budget_minutes")
_TIME_TICKS = 10_000  # schedule resolution in time-budget mode


@dataclass
class TrainConfig:
    """Everything a run needs; maps 1:1 onto YAML keys. ``None`` = take it from the preset / base defaults.

    Attributes:
        data: nnU-Net raw dataset folder (``DatasetXXX_Name``).
        model: registered model name; ``model_kwargs`` go to :func:`mambaseg.create_model`.
        out: run folder.
        preset: ``"auto"`` (by model family), ``"none"`` or a preset name (:mod:`~mambaseg.training.presets`).
        fold, split, split_seed: ``split`` is ``"5fold"`` (nnU-Net folds, seed 12345) or ``"holdout"`` (seeded
            80/10/10, seed 0); a ``splits.json`` in the dataset takes precedence (a list of folds or a
            ``{"train", "val"}`` dict; val ids found only in ``imagesTs`` are read from there).
        splits_file: a split file in that same format used instead of the dataset's ``splits.json`` (other keys,
            e.g. ``"test"``, are ignored); how :mod:`mambaseg.study.benchmark` gives every run one split.
        target_spacing: resample every case to this spacing (array order, the axes the model sees) instead of the
            plan's rule; natural 2D images have spacing 1, so ``[4, 4]`` makes them 4x smaller per axis.
        iterations | epochs | time_budget_minutes: the budget (one of them); an epoch is ``iterations_per_epoch``
            iterations (0 = one pass over the training cases, ``ceil(cases / batch)``).
        seed: seed of weights, sampling and augmentation.
        optimizer: ``"sgd"``, ``"adamw"`` or ``"adam"``; lr, momentum, weight_decay, nesterov as usual.
        schedule: ``"poly"`` (exponent 0.9) or ``"cosine"`` (to ``min_lr``), after ``warmup_iterations``.
        loss: ``"dice_ce"`` (nnU-Net), ``"ssl4mis"`` (0.5 CE + 0.5 Dice) or ``"bce_dice"`` (VM-UNet).
        grad_clip: gradient-norm clip (0 = off; nnU-Net 12).
        batch_size, patch_size: override the plan's.
        val_every: validate every this many iterations (and at the end); val_max_cases limits the cases.
        val_overlap: sliding-window overlap for validation.
        num_workers: DataLoader worker processes for patch sampling (0 = main process).
        amp: ``"auto"`` (bf16 autocast on CUDA if supported, else fp16 with GradScaler; off on CPU), ``"off"``,
            ``"bf16"``, ``"fp16"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        deep_supervision: ``"auto"`` (on when the model supports it), True or False.
        augmentation: nnU-Net-like augmentation on/off.
        memory_budget_gb: accelerator memory the plan is sized for.
        resume, overwrite: continue ``checkpoint_latest.pt`` / start the run folder afresh.
        deterministic: also request deterministic algorithms (:func:`seed_everything`).
        progress: show the tqdm progress bar.
    """

    data: str = ""
    model: str = ""
    out: str = ""
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    preset: str = "auto"
    fold: int = 0
    split: str = "5fold"
    split_seed: int | None = None
    splits_file: str | None = None
    iterations: int | None = None
    epochs: int | None = None
    iterations_per_epoch: int | None = None
    time_budget_minutes: float | None = None
    seed: int = 0
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    nesterov: bool | None = None
    schedule: str | None = None
    warmup_iterations: int | None = None
    min_lr: float | None = None
    loss: str | None = None
    grad_clip: float | None = None
    batch_size: int | None = None
    patch_size: list[int] | None = None
    target_spacing: list[float] | None = None
    val_every: int | None = None
    val_max_cases: int | None = None
    val_overlap: float = 0.5
    num_workers: int = 0
    amp: str = "auto"
    device: str = "auto"
    deep_supervision: str | bool | None = None
    augmentation: bool = True
    memory_budget_gb: float | None = None
    resume: bool = False
    overwrite: bool = False
    deterministic: bool = False
    progress: bool = True


@dataclass
class RunResult:
    """What :func:`train` returns (paths are inside ``run_dir``)."""

    run_dir: Path
    iterations: int
    best_dice: float
    best_iteration: int
    last_dice: float
    seconds: float
    config: TrainConfig
    history: list[dict[str, Any]]


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML-style dict; unknown keys are an error naming the valid ones."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; valid keys: {sorted(names)}")
    return TrainConfig(**d)


def resolve_config(cfg: TrainConfig) -> tuple[TrainConfig, str]:
    """Fill unset fields from the family preset, then from the base defaults.

    Budget fields form a group: if any of iterations / epochs / time_budget_minutes is set explicitly, the preset's
    budget is ignored. Returns ``(resolved config, preset name)``.
    """
    from mambaseg.models import model_info

    info = model_info(cfg.model)  # unknown model: ValueError listing close names
    name, preset = preset_for(info.family, cfg.preset)
    values = asdict(cfg)
    given_budget = [k for k in _BUDGET if values[k] is not None]
    if len(given_budget) > 1:
        raise ValueError(f"give only one of iterations / epochs / time_budget_minutes, got {given_budget}")
    for k, v in {**BASE_DEFAULTS, **preset}.items():
        if k in _BUDGET and given_budget:
            continue
        if values.get(k) is None and k in values:
            values[k] = preset.get(k, v)
    if not any(values[k] is not None for k in _BUDGET):
        values["epochs"] = 1000
    if values["iterations"] is not None and values["epochs"] is not None:
        values["epochs"] = None  # a preset giving both: iterations win
    return TrainConfig(**values), name


# ------------------------------------------------------------------------------------------------ helpers
def _device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def _amp_dtype(spec: str, device: torch.device) -> torch.dtype | None:
    if spec == "off" or device.type != "cuda":
        if spec in ("bf16", "fp16") and device.type != "cuda":
            logger.info("amp=%s ignored on %s (autocast is used on CUDA only)", spec, device)
        return None
    if spec == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[spec]


def _make_loss(name: str, ignore: int | None) -> torch.nn.Module:
    from mambaseg.losses import DeepSupervisionLoss, DiceCELoss

    makers = {"dice_ce": lambda: DiceCELoss.nnunet(ignore_index=ignore), "ssl4mis": DiceCELoss.ssl4mis,
              "bce_dice": DiceCELoss.vmunet_binary}
    if name not in makers:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(makers)}")
    return DeepSupervisionLoss(makers[name]())


def _make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum or 0.0, weight_decay=cfg.weight_decay,
                               nesterov=bool(cfg.nesterov and cfg.momentum))
    if cfg.optimizer in ("adamw", "adam"):
        cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose sgd, adamw or adam")


def _make_schedule(cfg: TrainConfig, opt: torch.optim.Optimizer, total: int):
    if cfg.schedule == "poly":
        if cfg.warmup_iterations:
            logger.info("warm-up is only applied with the cosine schedule")
        return PolyLR(opt, total, 0.9)
    if cfg.schedule == "cosine":
        return WarmupCosineLR(opt, total, warmup_steps=min(int(cfg.warmup_iterations or 0), total - 1),
                              min_lr=float(cfg.min_lr or 0.0))
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose poly or cosine")


def _build_model(cfg: TrainConfig, plan) -> torch.nn.Module:
    from mambaseg.models import create_model_for_plan, model_info

    if "deep_supervision" not in model_info(cfg.model).default_cfg and cfg.deep_supervision is True:
        logger.info("model %s has no deep supervision; training without it", cfg.model)
    return create_model_for_plan(cfg.model, plan, cfg.model_kwargs, cfg.deep_supervision)


def recorded_dataset(run_dir: str | Path) -> str | None:
    """The dataset folder a run was trained on: ``splits.json``'s ``dataset`` (absolute), else ``config.yaml``'s
    ``data`` (as typed; runs written before the absolute path was recorded). The first that is a folder here wins;
    if neither is, the first recorded one (a moved dataset); None when the run files record none or are unreadable.
    """
    import yaml

    run_dir = Path(run_dir)
    recorded = []
    for read in (lambda: json.loads((run_dir / "splits.json").read_text()).get("dataset"),
                 lambda: (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("data")):
        try:
            value = read()
        except (OSError, ValueError, AttributeError, yaml.YAMLError):
            continue
        if value:
            recorded.append(str(value))
    return next((d for d in recorded if Path(d).is_dir()), recorded[0] if recorded else None)


def _check_same_data(run_dir: Path, raw) -> None:
    """A resumed run must continue on the dataset it was trained on (:func:`recorded_dataset`).

    Another dataset folder that exists is refused unless its ``dataset.json`` is the same (a copy); a recorded
    folder that no longer exists (the dataset was moved) is accepted with a warning. The cached cases are keyed on
    their source files, so a moved or copied dataset is read again, not mixed up.
    """
    before = recorded_dataset(run_dir)
    if not before or Path(before).resolve() == raw.path.resolve():
        return
    old = Path(before)
    if not (old / "dataset.json").is_file():
        logger.warning("the run was trained on %s, which is not there any more; resuming on %s", old, raw.path)
        return
    if json.loads((old / "dataset.json").read_text()) != raw.dataset_json:
        raise ValueError(f"{run_dir} was trained on {old}, not {raw.path}: resume it with that --data, or start a "
                         f"new run (--out elsewhere, or --overwrite)")


def _drop_log_head(handler: logging.FileHandler, n_bytes: int) -> None:
    """Remove the first ``n_bytes`` of the handler's log file (the replaced run's log), keeping what came after."""
    if n_bytes <= 0:
        return
    with handler.lock:
        handler.flush()
        handler.stream.close()
        path = Path(handler.baseFilename)
        path.write_bytes(path.read_bytes()[n_bytes:])  # bytes: no newline or encoding translation
        handler.stream = handler._open()  # append mode, as FileHandler opened it


def _split(raw, cfg: TrainConfig) -> tuple[list[str], list[str], list[str], str]:
    """``(train, val, test, source)`` case ids; test: the split's own test list, empty for nnU-Net folds."""
    from mambaseg.data.splits import load_splits, make_folds, make_splits

    f = Path(cfg.splits_file) if cfg.splits_file else raw.path / "splits.json"
    if cfg.splits_file and not f.is_file():
        raise FileNotFoundError(f"splits_file {f} not found")
    if f.is_file():
        s = load_splits(f)
        if isinstance(s, list):
            if not 0 <= cfg.fold < len(s):
                raise ValueError(f"{f} has {len(s)} folds, fold {cfg.fold} requested")
            s, source = s[cfg.fold], f"{f} fold {cfg.fold}"
        else:
            source = str(f)
        return list(s["train"]), list(s.get("val", [])), list(s.get("test", [])), source
    cases = raw.cases
    if cfg.split == "holdout" or len(cases) < 5:
        seed = 0 if cfg.split_seed is None else cfg.split_seed
        s = make_splits(cases, seed=seed)
        return s["train"], s["val"], s["test"], f"holdout 80/10/10 seed {seed}"
    if cfg.split != "5fold":
        raise ValueError(f"unknown split {cfg.split!r}; choose 5fold or holdout")
    seed = 12345 if cfg.split_seed is None else cfg.split_seed
    fold = make_folds(cases, 5, seed)[cfg.fold]
    return fold["train"], fold["val"], [], f"5-fold seed {seed} fold {cfg.fold}"


# ------------------------------------------------------------------------------------------------ validation
@torch.no_grad()
def validate(model: torch.nn.Module, store, cases: list[str], plan, device: torch.device,
             amp_dtype: torch.dtype | None = None, overlap: float = 0.5) -> dict[str, Any]:
    """Per-case Dice of whole validation cases on the preprocessed grid.

    Each case ``(C, *S)`` goes through :func:`mambaseg.inference.sliding_window_inference` with the plan's patch,
    ``plan.batch_size`` tiles per forward pass (for a 2D plan on 3D data ``plan.batch_size`` slices along
    ``plan.slice_axis`` form the batch); the prediction is the argmax. No test-time mirroring.

    Returns:
        ``{"mean_dice": float (mean over classes of the per-class mean over cases, NaN cases excluded),
        "per_class": {label name: Dice}, "per_case": {case: {label name: Dice}}}``.
    """
    from mambaseg.evaluation.metrics import compute_case_metrics
    from mambaseg.inference import sliding_window_inference

    labels = {k: int(v) for k, v in plan.labels.items() if int(v) != 0 and k != "ignore"}
    was_training = model.training
    model.eval()

    def predict(x: torch.Tensor):
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            return model(x)

    per_case: dict[str, dict[str, float]] = {}
    bs = max(1, int(plan.batch_size))  # tiles (2D) or slices (2D on 3D) per forward pass
    for case in cases:
        image, label = store.get(case)
        x = torch.from_numpy(image)
        if plan.slice_axis is not None and x.ndim == 4:
            xs = x.movedim(plan.slice_axis + 1, 0)  # (Z, C, H, W)
            preds = [sliding_window_inference(predict, xs[i:i + bs], plan.patch_size, overlap, device=device,
                                              num_classes=plan.num_classes).argmax(1).cpu()
                     for i in range(0, xs.shape[0], bs)]
            pred = torch.cat(preds).movedim(0, plan.slice_axis)
        else:
            pred = sliding_window_inference(predict, x[None], plan.patch_size, overlap, device=device,
                                            num_classes=plan.num_classes, batch_size=bs).argmax(1)[0].cpu()
        rows = compute_case_metrics(pred.numpy(), label, labels, metrics=("dice",), case_id=case)
        per_case[case] = {r["label_name"]: float(r["dice"]) for r in rows}
    model.train(was_training)
    per_class = {k: float(np.nanmean([pc[k] for pc in per_case.values()])) if any(
        not math.isnan(pc[k]) for pc in per_case.values()) else math.nan for k in labels}
    finite = [v for v in per_class.values() if not math.isnan(v)]
    return {"mean_dice": float(np.mean(finite)) if finite else math.nan, "per_class": per_class, "per_case": per_case}


# ------------------------------------------------------------------------------------------------ the loop
def train(config: TrainConfig, callbacks: list[Callback] | None = None) -> RunResult:
    """Train ``config.model`` on ``config.data`` into ``config.out`` (see the module docstring).

    Args:
        config: the run's configuration (unset fields are resolved from the preset).
        callbacks: ``cb(event, state)`` with event ``"iteration"`` (after every iteration) or ``"validation"``;
            ``state`` holds ``iteration``, ``loss``, ``lr``, ``model``, ``optimizer``, ``metrics`` (validation).
            A callback may raise ``KeyboardInterrupt`` to stop the run (the latest checkpoint is saved).

    Returns:
        A :class:`RunResult`.

    Raises:
        FileExistsError: ``out`` holds a checkpoint and neither ``resume`` nor ``overwrite`` is set.
        ValueError / FileNotFoundError: unknown model, invalid dataset, model/data dimensionality mismatch.
    """
    cfg, preset_name = resolve_config(config)
    ctx = _Run(cfg, preset_name)  # run folder, split, plan, cached data, sampler, logs
    try:  # a failure before the loop must not leave this run's log handler and log.csv open
        run_dir, plan, store, sampler, val_cases = ctx.run_dir, ctx.plan, ctx.store, ctx.sampler, ctx.val_cases
        device, amp_dtype = _device(cfg.device), _amp_dtype(cfg.amp, _device(cfg.device))
        seed_everything(cfg.seed, cfg.deterministic)
        if device.type == "cpu" and plan.spatial_dims == 3 and memory_allocator() == "glibc":
            logger.info(CPU_ALLOCATOR_HINT)
        model = _build_model(cfg, plan).to(device)
        loss_fn = _make_loss(cfg.loss, plan.extra.get("ignore_label"))
        opt = _make_optimizer(cfg, model)
        time_budget = cfg.time_budget_minutes * 60.0 if cfg.time_budget_minutes else None
        total = ctx.total_iterations or _TIME_TICKS
        sched = _make_schedule(cfg, opt, total)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        it, best, best_it, elapsed0, history = 0, -math.inf, 0, 0.0, []
        if ctx.checkpoint is not None:
            ck = ctx.checkpoint
            model.load_state_dict(ck["model"]), opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            if ck.get("grad_scaler"):
                scaler.load_state_dict(ck["grad_scaler"])
            sched.max_steps = total  # a resume may extend the budget; the schedule then stretches to the new end
            it, best, best_it, elapsed0 = ck["iteration"], ck["best_dice"], ck["best_iteration"], ck["elapsed"]
            sampler.load_state_dict(ck["sampler"]), restore_rng_state(ck["rng"])
            logger.info("resumed from %s at iteration %d", run_dir / "checkpoint_latest.pt", it)
        t0 = time.monotonic() - elapsed0
        val_every = max(1, int(cfg.val_every))
        done = (lambda i: time.monotonic() - t0 >= time_budget) if time_budget else (lambda i: i >= total)

        def save(name: str, metrics_dice: float) -> None:
            sampler.position = it
            save_checkpoint(run_dir / name, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None, "iteration": it,
                "best_dice": best, "best_iteration": best_it, "last_dice": metrics_dice,
                "elapsed": time.monotonic() - t0, "rng": capture_rng_state(), "sampler": sampler.state_dict(),
                "config": asdict(cfg), "plan": plan.to_dict(), "model_name": cfg.model})

        batches = ctx.batch_iterator(it)
        stop = _SigintFlag()
        pbar = ctx.progress_bar(total if not time_budget else None, it)
        losses, last_dice, lr = [], math.nan, opt.param_groups[0]["lr"]
    except BaseException:
        ctx.close()
        raise
    try:
        while not done(it):
            x, y = (t.to(device, non_blocking=True) for t in next(batches))
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt), scaler.update()
            if time_budget:  # schedule follows the elapsed fraction of the budget
                sched.last_epoch = min(total, int((time.monotonic() - t0) / time_budget * total)) - 1
            sched.step()
            it, lr = it + 1, opt.param_groups[0]["lr"]
            losses.append(float(loss.detach()))
            pbar.update(1), pbar.set_postfix(loss=f"{losses[-1]:.4f}", dice=f"{last_dice:.4f}", lr=f"{lr:.2e}")
            for cb in callbacks or []:
                cb("iteration", {"iteration": it, "loss": losses[-1], "lr": lr, "model": model, "optimizer": opt})
            if it % val_every == 0 or done(it):
                metrics = validate(model, store, val_cases, plan, device, amp_dtype, cfg.val_overlap)
                last_dice = metrics["mean_dice"]
                row = ctx.log(it, lr, float(np.mean(losses)) if losses else math.nan, metrics, time.monotonic() - t0)
                history.append(row)
                losses = []
                if not math.isnan(last_dice) and last_dice > best:
                    best, best_it = last_dice, it
                    save("checkpoint_best.pt", last_dice)
                save("checkpoint_latest.pt", last_dice)
                for cb in callbacks or []:
                    cb("validation", {"iteration": it, "metrics": metrics, "model": model, "optimizer": opt})
            if stop.flag:
                raise KeyboardInterrupt
        seconds = time.monotonic() - t0
        logger.info("finished %d iterations in %.1f s; best mean Dice %.4f at iteration %d", it, seconds, best,
                    best_it)  # before ctx.close(), so that train.log has it too
    except KeyboardInterrupt:
        save("checkpoint_latest.pt", last_dice)
        logger.warning("interrupted at iteration %d; saved %s (continue with --resume)", it,
                       run_dir / "checkpoint_latest.pt")
        raise
    finally:
        stop.restore(), pbar.close(), ctx.close()
    return RunResult(run_dir, it, best if best > -math.inf else math.nan, best_it, last_dice, seconds, cfg, history)


class _SigintFlag:
    """First Ctrl-C sets a flag (the loop saves at the end of the iteration); a second one interrupts at once."""

    def __init__(self) -> None:
        self.flag, self._old = False, None
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._old = None

    def _handle(self, signum, frame) -> None:
        self.flag = True
        self.restore()

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


# ------------------------------------------------------------------------------------------------ run folder
def _git_commit(start: Path) -> str | None:
    """Commit of the checkout holding ``start``, with `` (dirty)`` appended when it has uncommitted changes to
    tracked files (the convention of ``benchmarks/_machine.py``). None outside a git checkout."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "--no-optional-locks", *args], cwd=start, capture_output=True, text=True,
                                 timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = _read_git_head(start) or git("rev-parse", "HEAD")
    if not commit:
        return None
    return commit + (" (dirty)" if git("status", "--porcelain", "--untracked-files=no") else "")


def _read_git_head(start: Path) -> str | None:
    """HEAD's commit read from the ``.git`` folder above ``start`` (no git executable needed)."""
    for d in [start, *start.parents]:
        git = d / ".git"
        if git.is_dir():
            try:
                head = (git / "HEAD").read_text().strip()
                if not head.startswith("ref:"):
                    return head
                ref = head.split(None, 1)[1]
                if (git / ref).is_file():
                    return (git / ref).read_text().strip()
                packed = git / "packed-refs"
                if packed.is_file():
                    for line in packed.read_text().splitlines():
                        if line.endswith(" " + ref):
                            return line.split()[0]
            except OSError:
                pass
            return None
        if git.is_file():
            return None
    return None


#: Logged when a 3D model trains on the CPU under the system allocator (measured side by side in
#: ``benchmarks/results/models3d_jemalloc``: SegMamba's training step 1.4x faster at 64^3, 1.6x at 128^3).
CPU_ALLOCATOR_HINT = (
    "3D training on the CPU with the system allocator: every large tensor is a fresh mapping that page-faults on "
    "first touch. jemalloc keeps freed memory for reuse and made SegMamba's 3D training step 1.4x (64^3) to "
    "1.6x (128^3) faster on one CPU thread: "
    "LD_PRELOAD=<path to libjemalloc.so.2> MALLOC_CONF=background_thread:true,dirty_decay_ms:-1,muzzy_decay_ms:-1 "
    "mambaseg train ... (Debian/Ubuntu: apt-get install libjemalloc2; the library is then in "
    "/usr/lib/x86_64-linux-gnu)")


def memory_allocator() -> str:
    """The C allocator of this process: ``"jemalloc"`` or ``"tcmalloc"`` when one is preloaded, else the C
    library's (``"glibc"`` on most Linux systems); ``"unknown"`` where ``/proc/self/maps`` cannot be read."""
    import platform

    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    for name in ("jemalloc", "tcmalloc"):
        if f"lib{name}" in maps:
            return name
    return platform.libc_ver()[0] or "unknown"


def environment_info() -> dict[str, Any]:
    """Versions (mambaseg, torch, numpy, monai, SimpleITK, python), platform, CPU/GPU names, C memory allocator,
    git commit."""
    import platform
    import sys
    from importlib import metadata

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import mambaseg

    return {"mambaseg": getattr(mambaseg, "__version__", version("mambaseg")), "torch": torch.__version__,
            "numpy": np.__version__, "monai": version("monai"), "SimpleITK": version("SimpleITK"),
            "python": sys.version.split()[0], "platform": platform.platform(), "cpu": cpu,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cuda": torch.version.cuda, "memory_allocator": memory_allocator(),
            "git_commit": _git_commit(Path(mambaseg.__file__).resolve().parent)}


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


class _Run:
    """Run-folder bookkeeping for :func:`train`: split, plan, cached data, sampler, logs, checkpoint to resume."""

    def __init__(self, cfg: TrainConfig, preset_name: str) -> None:
        import yaml

        from mambaseg.data.augmentation import Augmenter
        from mambaseg.data.nnunet_raw import RawDataset
        from mambaseg.data.plan import Plan
        from mambaseg.data.planning import make_plan
        from mambaseg.data.sampling import CaseStore, PatchSampler
        from mambaseg.data.splits import load_splits

        self.cfg = cfg
        try:
            raw = RawDataset(cfg.data)
        except (FileNotFoundError, ValueError) as e:
            raise type(e)(f"{e} -- not a valid nnU-Net raw dataset; check it with `mambaseg data check "
                          f"{cfg.data}`") from e
        if not raw.cases:
            raise ValueError(f"{raw.path}: no training cases in imagesTr; check it with `mambaseg data check "
                             f"{raw.path}`")
        if raw.has_regions:
            raise ValueError(f"{raw.path}: region-based labels are not supported by `mambaseg train` yet")
        self.run_dir = run_dir = Path(cfg.out)
        ckpts = [run_dir / n for n in ("checkpoint_latest.pt", "checkpoint_best.pt")]
        if any(p.exists() for p in ckpts) and not (cfg.resume or cfg.overwrite):
            raise FileExistsError(f"run folder {run_dir} already holds a checkpoint; pass --resume to continue it "
                                  f"or --overwrite to start it again")
        run_dir.mkdir(parents=True, exist_ok=True)
        # --overwrite removes the old run only once the new one has been set up (split, plan, every case read), so a
        # bad dataset or setting loses nothing; until then this run's log is appended after the old run's
        old_log_bytes = (run_dir / "train.log").stat().st_size if (run_dir / "train.log").is_file() else 0
        self._handler = logging.FileHandler(run_dir / "train.log")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(self._handler)
        try:  # a failure while setting up (split, plan, preprocessing) must not leave train.log attached
            if logger.level == logging.NOTSET or logger.level > logging.INFO:
                logger.setLevel(logging.INFO)
            self.checkpoint = None
            if cfg.resume and ckpts[0].is_file():
                self.checkpoint = load_checkpoint(ckpts[0])
                if self.checkpoint.get("model_name") != cfg.model:
                    raise ValueError(f"{ckpts[0]} was trained with model {self.checkpoint.get('model_name')!r}, "
                                     f"not {cfg.model!r}")
                _check_same_data(run_dir, raw)
                plan = Plan.load(run_dir / "plan.json")
                s = load_splits(run_dir / "splits.json")
                train_cases, val_cases, source = list(s["train"]), list(s["val"]), s.get("source", "run folder")
                held_out = s.get("test")  # None: a run from before the test list was recorded; it stays unknown
            else:
                if cfg.resume:
                    logger.warning("--resume: no %s; starting a new training", ckpts[0])
                train_cases, val_cases, held_out, source = _split(raw, cfg)
                missing = sorted(set(train_cases) - set(raw.cases))
                if missing:
                    raise ValueError(f"split {source}: training cases {missing[:5]} are not in {raw.path / 'imagesTr'}")
                if cfg.val_max_cases is not None:
                    val_cases = val_cases[:cfg.val_max_cases]
                plan = make_plan(raw, cfg.model, cases=train_cases, patch_size=cfg.patch_size,
                                 batch_size=cfg.batch_size, memory_budget_gb=cfg.memory_budget_gb,
                                 spatial_dims=cfg.model_kwargs.get("spatial_dims"), target_spacing=cfg.target_spacing)
            test_cases = [c for c in val_cases if c not in raw.cases]
            unknown = sorted(set(test_cases) - set(raw.test_cases))
            if unknown:
                raise ValueError(f"split {source}: validation cases {unknown[:5]} are neither in imagesTr nor imagesTs")
            if held_out is not None and not held_out:  # nnU-Net's convention: imagesTs is the test set
                held_out = [c for c in raw.test_cases if c not in val_cases]
            unknown = sorted(set(held_out or ()) - set(raw.cases) - set(raw.test_cases))
            if unknown:
                raise ValueError(f"split {source}: test cases {unknown[:5]} are neither in imagesTr nor imagesTs")
            if not val_cases:
                logger.warning("no validation cases: validation Dice is NaN and checkpoint_best.pt is not written")
            self.plan, self.train_cases, self.val_cases = plan, train_cases, val_cases
            self.store = CaseStore(raw, plan, run_dir / "preprocessed", test_cases)
            self.store.load(train_cases + val_cases, progress=cfg.progress)
            aug = Augmenter(plan.spatial_dims) if cfg.augmentation else None
            self.sampler = PatchSampler(self.store, train_cases, plan, seed=cfg.seed, augment=aug)
            if cfg.overwrite and self.checkpoint is None:  # set up without error: now the old run goes
                for n in ("checkpoint_latest.pt", "checkpoint_best.pt", "log.csv"):
                    (run_dir / n).unlink(missing_ok=True)
                _drop_log_head(self._handler, old_log_bytes)
            resolved = json.loads(json.dumps(asdict(cfg), default=str))
            (run_dir / "config.yaml").write_text(yaml.safe_dump({**resolved, "resolved_preset": preset_name},
                                                                sort_keys=False))
            plan.save(run_dir / "plan.json")
            _write_json(run_dir / "splits.json", {"train": train_cases, "val": val_cases,
                                                  **({"test": held_out} if held_out is not None else {}),
                                                  "source": source, "dataset": str(raw.path.resolve())})
            _write_json(run_dir / "seeds.json", {"seed": cfg.seed, "split_seed": cfg.split_seed, "split": source,
                                                 "sampler": "batch i drawn from numpy default_rng([seed, i])"})
            if self.checkpoint is None or not (run_dir / "environment.json").exists():
                _write_json(run_dir / "environment.json", environment_info())
            if cfg.iterations is not None:
                self.total_iterations: int | None = int(cfg.iterations)
            elif cfg.epochs is not None:
                ipe = int(cfg.iterations_per_epoch or 0) or math.ceil(len(train_cases) / plan.batch_size)
                self.total_iterations = int(cfg.epochs) * ipe
            else:
                self.total_iterations = None
            self._csv_path = run_dir / "log.csv"
            self._names = [k for k, v in plan.labels.items() if int(v) != 0 and k != "ignore"]
            new = not self._csv_path.exists() or self.checkpoint is None
            self._csv = open(self._csv_path, "w" if new else "a", newline="")  # noqa: SIM115 (closed in close())
            self._writer = csv.writer(self._csv)
            if new:
                self._writer.writerow(["iteration", "lr", "train_loss", "val_mean_dice"]
                                      + [f"dice_{n}" for n in self._names] + ["seconds"])
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                self._tb = None
                logger.info("TensorBoard is not installed: logging to log.csv only")
            logger.info("run %s: model %s, preset %s, %d train / %d val cases (%s), plan patch %s batch %d, %s "
                        "iterations", run_dir, cfg.model, preset_name, len(train_cases), len(val_cases), source,
                        plan.patch_size, plan.batch_size, self.total_iterations or f"{cfg.time_budget_minutes} min of")
        except BaseException:
            self.close()
            raise

    def batch_iterator(self, start: int):
        """Infinite iterator of batches ``start, start + 1, ...`` (workers or the main process)."""
        if self.cfg.num_workers <= 0:
            def gen():
                self.sampler.position = start
                while True:
                    yield self.sampler.next_batch()
            return gen()
        import itertools

        loader = torch.utils.data.DataLoader(
            self.sampler, batch_size=None, sampler=itertools.count(start), num_workers=self.cfg.num_workers,
            worker_init_fn=worker_init_fn, pin_memory=torch.cuda.is_available(), persistent_workers=True)
        return iter(loader)

    def progress_bar(self, total: int | None, initial: int):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, disable=not self.cfg.progress, desc=self.cfg.model, unit="it",
                    dynamic_ncols=True)

    def log(self, it: int, lr: float, loss: float, metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
        """Append one row to ``log.csv`` (and TensorBoard); returns it as a dict."""
        row = {"iteration": it, "lr": lr, "train_loss": loss, "val_mean_dice": metrics["mean_dice"],
               **{f"dice_{n}": metrics["per_class"].get(n, math.nan) for n in self._names}, "seconds": seconds}
        self._writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row.values()])
        self._csv.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "iteration":
                    self._tb.add_scalar(k, v, it)
        logger.info("iteration %d: train loss %.4f, val mean Dice %.4f, lr %.3g", it, loss, metrics["mean_dice"], lr)
        return row

    def close(self) -> None:
        """Closes log.csv, TensorBoard and train.log (safe on a partly set-up run)."""
        if getattr(self, "_csv", None) is not None:
            self._csv.close()
        if getattr(self, "_tb", None) is not None:
            self._tb.close()
        logger.removeHandler(self._handler)
        self._handler.close()
