"""Training building blocks: atomic checkpoints with RNG state, per-iteration LR schedules, seeding."""

from mambaseg.training.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from mambaseg.training.schedules import (
    PolyLR,
    WarmupCosineLR,
    poly_lr,
    warmup_cosine_lr,
)
from mambaseg.training.seeding import seed_everything, worker_init_fn

__all__ = [
    "CheckpointError",
    "PolyLR",
    "WarmupCosineLR",
    "capture_rng_state",
    "load_checkpoint",
    "poly_lr",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
    "warmup_cosine_lr",
    "worker_init_fn",
]
