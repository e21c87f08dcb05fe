"""Machine description and CPU-quietness helpers for the benchmarks (standard library only, Linux /proc aware)."""

from __future__ import annotations

import os
import platform
import subprocess
import time


def _system_jiffies() -> tuple[int, int]:
    """(total, idle) CPU jiffies over all cores since boot, from /proc/stat; (0, 0) where unavailable."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(vals[:8]), vals[3] + vals[4]  # guest time is already inside user time


def _own_jiffies() -> int:
    """CPU jiffies (user + system, all threads) used so far by this process and its finished (waited-for) children:
    the measurements run in child processes."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    except (OSError, ValueError, IndexError):
        return 0


class ForeignLoad:
    """Context manager measuring the fraction of all CPU time used by OTHER processes during its block.

    ``fraction`` is None when the block was too short to tell (under ``min_jiffies`` CPU ticks, summed over cores;
    a tick is usually 10 ms, so a 30 ms block would read 0 % or 33 % by quantisation alone).
    """

    def __init__(self, min_jiffies: int = 50):
        self.min_jiffies, self.fraction = min_jiffies, None

    def __enter__(self):
        self._start = (*_system_jiffies(), _own_jiffies())
        return self

    def __exit__(self, *exc):
        total, idle, own = (*_system_jiffies(), _own_jiffies())
        d_total = total - self._start[0]
        if d_total >= self.min_jiffies:
            busy = d_total - (idle - self._start[1]) - (own - self._start[2])
            self.fraction = max(0.0, busy / d_total)
        return False


def busy_fraction(interval: float = 0.5) -> float:
    """Fraction of all CPU time used by other processes over ``interval`` seconds (this process sleeps)."""
    with ForeignLoad(min_jiffies=1) as load:
        time.sleep(interval)
    return load.fraction or 0.0


def wait_until_quiet(threshold: float = 0.3, max_wait: float = 60.0) -> dict:
    """Waits while other processes keep the CPUs more than ``threshold`` busy, for at most ``max_wait`` seconds.

    Returns:
        ``{"waited_s", "busy", "quiet"}``: time waited, last sampled busy fraction, whether it got quiet.
    """
    start = time.perf_counter()
    busy = busy_fraction()
    while busy > threshold and time.perf_counter() - start < max_wait:
        busy = busy_fraction()
    return {"waited_s": round(time.perf_counter() - start, 2), "busy": round(busy, 3), "quiet": busy <= threshold}


def _run(cmd: list[str], cwd: str) -> str:
    """Stdout of ``cmd`` (stripped), or '' when it fails."""
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_commit(repo: str) -> str:
    """``git rev-parse HEAD`` of ``repo``, with " (dirty)" appended when ``git status --porcelain`` lists changes."""
    commit = _run(["git", "rev-parse", "HEAD"], repo) or "unknown"
    dirty = _run(["git", "--no-optional-locks", "status", "--porcelain"], repo)  # read-only: no index refresh
    return commit + (" (dirty)" if dirty else "")


def machine_info(repo: str) -> dict:
    """CPU model, core counts, memory, OS and git commit of ``repo``."""
    cpu = platform.processor() or "unknown"
    mem_gb = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
        with open("/proc/meminfo") as f:
            mem_gb = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "usable_cores": usable, "memory_gb": mem_gb,
            "os": platform.platform(), "python": platform.python_version(), "git_commit": git_commit(repo)}


def package_versions() -> dict:
    """Versions of torch, numpy, mambaseg, CUDA, mamba_ssm and triton (None when it does not import)."""
    import numpy
    import torch

    import mambaseg
    try:
        import mamba_ssm
    except Exception:  # noqa: BLE001 - absent or broken build: not a contender
        mamba_ssm = None
    try:
        import triton
    except Exception:  # noqa: BLE001 - not installed (macOS, Windows): the triton backend is absent
        triton = None
    return {"torch": torch.__version__, "numpy": numpy.__version__, "mambaseg": getattr(mambaseg, "__version__", "?"),
            "cuda": torch.version.cuda, "mamba_ssm": mamba_ssm and getattr(mamba_ssm, "__version__", "?"),
            "triton": triton and getattr(triton, "__version__", "?")}
