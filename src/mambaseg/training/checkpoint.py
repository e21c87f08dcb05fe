"""Atomic checkpoint files and RNG-state capture for bit-exact resume.

nnU-Net v2 writes checkpoints with a plain ``torch.save`` onto the final name, so an interrupted
save leaves a corrupt file (nnUNet#211), and it stores no RNG state; MONAI's ``CheckpointSaver``
sets ``atomic=False``. Here a checkpoint is written to a temporary file in the same directory,
flushed and fsynced, then moved over the target with ``os.replace`` (atomic on POSIX and Windows),
and the directory is fsynced, so the previous file stays intact until the new one is complete.

RNG states are stored as plain tensors, ints and tuples so that checkpoints load with
``torch.load(weights_only=True)`` (the PyTorch >= 2.6 default, which broke loading of checkpoints
holding numpy objects: nnUNet#2681, MONAI#8355).
"""

from __future__ import annotations

import os
import pickle
import random
import uuid
import zipfile
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

__all__ = ["CheckpointError", "capture_rng_state", "load_checkpoint", "restore_rng_state", "save_checkpoint"]

PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read (corrupt, truncated, or not a checkpoint)."""


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry to disk where the platform allows it (not on Windows)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` atomically: either the old file or the complete new one.

    Args:
        path: destination file; its parent directory is created if missing.
        state: anything ``torch.save`` accepts (typically model / optimizer / scheduler state dicts,
            the iteration, and :func:`capture_rng_state`).

    Returns:
        The destination path.

    Raises:
        Whatever ``torch.save`` raises; the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    # os.open with 0o666 lets the umask decide the permissions, as for a plain open(); mkstemp would
    # make the checkpoint private to its owner (the reason MONAI's CheckpointSaver gives for atomic=False).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: PathLike, map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (or any ``torch.save`` file).

    Args:
        path: checkpoint file.
        map_location: passed to ``torch.load`` (default ``"cpu"``).
        weights_only: passed to ``torch.load``. Keep True unless the file is trusted and holds
            arbitrary Python objects (e.g. an nnU-Net checkpoint with numpy scalars).

    Returns:
        The stored object.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is empty, truncated or corrupt (message names the file), or it
            holds objects that ``weights_only=True`` refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: '{path}'")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint '{path}' is empty (0 bytes): probably an interrupted save")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as e:
        if weights_only and "weights only" in str(e).lower():
            raise CheckpointError(
                f"checkpoint '{path}' holds objects that torch.load(weights_only=True) refuses; if you trust "
                f"the file, call load_checkpoint(..., weights_only=False). Original error: {e}") from e
        raise CheckpointError(f"checkpoint '{path}' ({size} bytes) is corrupt or truncated: {e}") from e
    except PermissionError:
        raise
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, IndexError) as e:
        # a truncated zip archive surfaces as RuntimeError, EOFError or OSError(EINVAL) from a seek
        raise CheckpointError(f"checkpoint '{path}' ({size} bytes) is corrupt or truncated: "
                              f"{type(e).__name__}: {e}") from e


def capture_rng_state() -> dict[str, Any]:
    """Snapshot the global RNGs of python ``random``, numpy, torch CPU and (if available) CUDA.

    Returns:
        A dict of tensors, ints, floats and tuples (safe for ``weights_only`` loading) for
        :func:`restore_rng_state`.
    """
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": (version, tuple(internal), gauss),
        "numpy": {"bit_generator": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], strict_cuda: bool = False) -> None:
    """Restore RNG states captured by :func:`capture_rng_state`.

    Args:
        state: the dict returned by :func:`capture_rng_state` (missing keys are skipped).
        strict_cuda: raise if ``state`` holds CUDA states but CUDA is unavailable or the device
            count differs; otherwise the CUDA part is restored for the devices present.
    """
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    if "numpy" in state:
        npst = state["numpy"]
        keys = npst["keys"]
        keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
        np.random.set_state((npst["bit_generator"], keys.astype(np.uint32), int(npst["pos"]),
                             int(npst["has_gauss"]), float(npst["cached_gaussian"])))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    cuda: list | None = state.get("cuda")
    if cuda:
        if not torch.cuda.is_available():
            if strict_cuda:
                raise RuntimeError("checkpoint holds CUDA RNG states but CUDA is not available")
            return
        count = torch.cuda.device_count()
        if strict_cuda and count != len(cuda):
            raise RuntimeError(f"checkpoint holds {len(cuda)} CUDA RNG states, {count} devices present")
        for i, s in enumerate(cuda[:count]):
            torch.cuda.set_rng_state(s.cpu(), device=i)
