"""Timing and memory helpers shared by the benchmark scripts."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def summed_cross_entropy(out, target):
    """Cross-entropy of every output (deep supervision: a list, each scored against ``target`` resized to it by
    nearest neighbour), summed; logits are scored in fp32 also under autocast."""
    outs = out if isinstance(out, (list, tuple)) else [out]
    return sum(F.cross_entropy(o.float(), F.interpolate(target[:, None].float(), o.shape[2:]).long()[:, 0])
               for o in outs)


def sync(device):
    """Waits for queued GPU work (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, reps, device, setup=None):
    """One warm-up call, then ``reps`` timed calls of ``fn`` (``setup`` runs untimed before each): seconds."""
    times = []
    for i in range(reps + 1):
        if setup:
            setup()
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    return times


def peak_rss_bytes(reset=False):
    """Peak resident memory of this process. On Linux it is VmHWM, reset first if asked (ru_maxrss cannot be used
    there: it survives fork and execve, so a child of a large parent starts with the parent's peak)."""
    status = Path("/proc/self/status")
    if status.exists():
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
        kib = next(line.split()[1] for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(kib) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
