"""Seeding for reproducible runs and DataLoader workers.

nnU-Net v2 is non-deterministic by design (``cudnn.benchmark=True``, unseeded augmentation
workers); MONAI's ``set_determinism(seed)`` seeds torch, ``random`` and numpy and sets
``cudnn.deterministic=True, benchmark=False``. :func:`seed_everything` seeds the same three RNGs
and, with ``deterministic=True``, additionally asks PyTorch for deterministic algorithms
(``warn_only=True``, since e.g. some CUDA upsampling and scan kernels have no deterministic
version) and sets ``CUBLAS_WORKSPACE_CONFIG``. Several seeds, not bit-exactness, are the
reproducibility mechanism of the comparison protocol.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["seed_everything", "worker_init_fn"]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python ``random``, numpy and torch (CPU and all CUDA devices).

    Args:
        seed: the seed (numpy needs it in ``[0, 2**32)``).
        deterministic: also set ``cudnn.deterministic=True``, ``cudnn.benchmark=False``,
            ``torch.use_deterministic_algorithms(True, warn_only=True)`` and, if unset,
            ``CUBLAS_WORKSPACE_CONFIG=:4096:8``. With False the backend flags are left as they are.

    Side effects: sets ``PYTHONHASHSEED`` in ``os.environ`` (affects subprocesses only).
    """
    seed = int(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def worker_init_fn(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: seed ``random`` and numpy from the worker's torch seed.

    Inside a worker ``torch.initial_seed()`` is ``base_seed + worker_id``, where ``base_seed`` is
    drawn from the main process's torch RNG each epoch, so after :func:`seed_everything` the
    augmentation streams differ between workers and epochs yet are reproducible. (Recent PyTorch
    already seeds ``random`` and numpy in workers; this makes it explicit and version independent.)

    Args:
        worker_id: the worker index (unused beyond what ``torch.initial_seed()`` holds).
    """
    seed = torch.initial_seed() % 2 ** 32
    random.seed(seed)
    np.random.seed(seed)
