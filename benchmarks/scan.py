"""Benchmark of the selective scan: the package's backends (chunked, numba) against the fastest plain sequential loop.

What is measured, per shape (B, D, L, N, G) and contender: forward time (under ``torch.no_grad``), forward+backward
time (``out.backward(grad)`` with every input requiring grad) and the peak extra memory of one forward+backward.
Times are compared with each other and with a floor built from this machine's measured exp throughput, copy
bandwidth and sgemm rate, so that "fast" means "close to what the hardware allows", not only "faster than X".

Why the baseline is a fast loop and not the reference backend: a benchmark against a deliberately slow baseline
proves nothing. ``loop`` does everything in bulk that can be done in bulk (delta preparation, ``exp(delta * A)`` and
``delta * u * B`` over the whole sequence), leaving only the unavoidable ``h = a_t * h + x_t`` in Python, one fused
``addcmul`` per step. It takes the steps with ``unbind``: slicing ``dA[:, :, t]`` in a loop makes autograd allocate
a full-size zero buffer per step in the backward (quadratic in L), which would flatter the contender.

Run from the repository root: ``python benchmarks/scan.py`` (CPU, writes benchmarks/results/scan.md and .json),
``--device cuda`` on a GPU, ``--quick`` for a smoke test on tiny shapes (writes to a temporary directory).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import peak_rss_bytes, sync, timed  # benchmarks/ is on sys.path when this runs as a script

from mambaseg.ops._chunked import LOG2E, SLAB_BUDGET_BYTES

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(1, 96, 4096, 16, 1), (1, 192, 1024, 16, 1), (4, 96, 4096, 16, 1), (1, 768, 4096, 16, 4),
          (1, 96, 4096, 1, 1), (1, 48, 32768, 16, 1)]
GPU_EXTRA_SHAPES = [(16, 96, 4096, 16, 1)]  # issue #7: M1's shapes plus batch 16
QUICK_SHAPES = [(1, 8, 256, 4, 1), (1, 16, 128, 4, 4), (2, 8, 64, 1, 1)]
KEYS = ("u", "delta", "A", "B", "C", "D", "delta_bias")
MEMORY_METHOD = {"cuda": "`torch.cuda.max_memory_allocated()` minus the allocation after creating the inputs",
                 "cpu": "fresh subprocess per (contender, shape): peak RSS (Linux VmHWM, reset after creating the "
                        "inputs) during one forward+backward minus RSS after creating the inputs (\"peak extra RSS\"; "
                        "a tiny warm-up call first, so that one-time library set-up is not counted)"}


def make_inputs(shape, device, seed=0):
    """Mamba-initialised fp32 inputs (leaves requiring grad) and a fixed output gradient for ``shape``."""
    b, d, l, n, g = shape
    gen = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.rand(d, generator=gen) * (math.log(1e-1) - math.log(1e-3)) + math.log(1e-3))
    bc_shape = (b, n, l) if g == 1 else (b, g, n, l)
    x = {"u": torch.randn(b, d, l, generator=gen), "delta": torch.randn(b, d, l, generator=gen).mul_(0.1),
         "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),  # S4D-real
         "B": torch.randn(bc_shape, generator=gen), "C": torch.randn(bc_shape, generator=gen),
         "D": torch.ones(d), "delta_bias": dt + torch.log(-torch.expm1(-dt))}  # inverse softplus
    grad = torch.randn(b, d, l, generator=gen).to(device)
    return {k: v.to(device).requires_grad_() for k, v in x.items()}, grad


def loop_scan(u, delta, A, B, C, D, delta_bias):
    """Sequential scan with plain autograd: bulk ``exp(delta*A)`` and ``delta*u*B``, one ``addcmul`` per step."""
    b, d, l = u.shape
    n = A.shape[1]
    g = 1 if B.dim() == 3 else B.shape[1]
    delta = F.softplus(delta + delta_bias[:, None]).view(b, g, d // g, l, 1)
    Bc = B.view(b, g, 1, n, l).transpose(-1, -2)  # group rule: channel c uses group c // (d / g), by broadcasting
    Cc = C.view(b, g, 1, n, l).transpose(-1, -2)
    # (b, g, d/g, l, n); exp2 of log2(e)-scaled A (torch's exp2 outran its exp 3-4x here), in place: one less tensor
    dA = (delta * (A * LOG2E).view(1, g, d // g, 1, n)).exp2_()
    x = delta * u.view(b, g, d // g, l, 1) * Bc
    h = u.new_zeros(b, g, d // g, n)
    hs = []
    for a_t, x_t in zip(dA.unbind(3), x.unbind(3)):  # unbind, not dA[:, :, :, t]: linear-time backward
        h = torch.addcmul(x_t, a_t, h)
        hs.append(h)
    y = (torch.stack(hs, 3) * Cc).sum(-1).view(b, d, l)
    return y + D[:, None] * u


def contender_fn(name):
    """Callable ``inputs -> y`` for contender ``name`` (``loop`` or a selective_scan backend)."""
    if name == "loop":
        return lambda x: loop_scan(*(x[k] for k in KEYS))
    from mambaseg.ops import selective_scan
    return lambda x: selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"],
                                    delta_bias=x["delta_bias"], delta_softplus=True, backend=name)


def self_check():
    """Forward and gradients of ``loop`` (and of the rated backends, for information) against the reference backend."""
    from mambaseg.ops import list_backends

    checked = ["loop", *(b for b in RATED if b in list_backends(torch.zeros(1)))]
    errors = {}
    for shape in [(2, 8, 64, 4, 1), (2, 8, 64, 4, 2)]:
        x, grad = make_inputs(shape, "cpu", seed=1)
        outs = {}
        for name in ("reference", *checked):
            clear_grads(x)
            y = contender_fn(name)(x)
            y.backward(grad)
            outs[name] = [y.detach()] + [x[k].grad.clone() for k in KEYS]
        for name in checked:  # max |diff| / max(1, max |ref|) over y and every gradient
            err = max(float((a - r).abs().max() / max(1.0, float(r.abs().max())))
                      for a, r in zip(outs[name], outs["reference"]))
            errors[name] = max(errors.get(name, 0.0), err)
    if errors["loop"] > 1e-4:
        raise SystemExit(f"self-check failed: loop differs from the reference by {errors['loop']:.2e} > 1e-4")
    return errors


def measure_floors(device, reps, scale):
    """exp and exp2 throughput (16M and 1M fp32 elements), copy bandwidth (64M floats, read+write) and sgemm rate."""
    out = {}
    for fn in ("exp", "exp2"):  # the faster exponential is the floor: an implementation may use either
        for label, n in ((f"{fn}_per_s_16M", 2**24 // scale), (f"{fn}_per_s_1M", 2**20 // scale)):
            src = -torch.rand(n, device=device)
            t = torch.empty_like(src)
            op = getattr(torch.Tensor, f"{fn}_")
            out[label] = n / min(timed(lambda t=t, op=op: op(t), reps, device,
                                       setup=lambda t=t, src=src: t.copy_(src)))
    src = torch.rand(2**26 // scale, device=device)
    dst = torch.empty_like(src)
    out["copy_bytes_per_s"] = 2 * 4 * src.numel() / min(timed(lambda: dst.copy_(src), reps, device))
    m = 2048 // int(math.sqrt(scale))
    a, b = torch.rand(m, m, device=device), torch.rand(m, m, device=device)
    out["sgemm_flop_per_s"] = 2 * m**3 / min(timed(lambda: a @ b, reps, device))
    out["sizes"] = {"exp": [2**24 // scale, 2**20 // scale], "copy_floats": 2**26 // scale, "sgemm": m}
    return out


def hbm_floor_ms(shape, bytes_per_s):
    """(forward, forward+backward) memory-traffic floors in ms: the bytes that must move (fp32 u, delta, B, C read and
    y written; the backward also reads dy and writes du, ddelta, dB, dC) at the measured copy bandwidth."""
    b, d, l, n, g = shape
    return (4 * (3 * b * d * l + 2 * b * g * n * l) / bytes_per_s * 1e3,
            4 * (8 * b * d * l + 6 * b * g * n * l) / bytes_per_s * 1e3)


def floor_ms(shape, floors):
    """(forward floor, forward+backward floor) in ms: the slowest of the exp, memory and flop bounds."""
    b, d, l, n, g = shape
    bdln = b * d * l * n
    exp_rate = max(v for k, v in floors.items() if k.startswith("exp"))
    mem_fwd, mem_fb = (ms / 1e3 for ms in hbm_floor_ms(shape, floors["copy_bytes_per_s"]))
    flops = floors["sgemm_flop_per_s"]
    fwd = max(bdln / exp_rate, mem_fwd, 9 * bdln / flops)
    fb = max(2 * bdln / exp_rate, mem_fb, 27 * bdln / flops)
    return fwd * 1e3, fb * 1e3


def clear_grads(x):
    """Drops the gradients accumulated on the inputs."""
    for v in x.values():
        v.grad = None


def measure_times(name, x, grad, reps, device):
    """Forward (no_grad) and forward+backward timings (ms: min, median, all) of contender ``name`` on ``x``."""
    fn = contender_fn(name)
    with torch.no_grad():
        fwd = timed(lambda: fn(x), reps, device)
    fb = timed(lambda: fn(x).backward(grad), reps, device, setup=lambda: clear_grads(x))
    clear_grads(x)
    return [{"min": min(ms), "median": statistics.median(ms), "all": ms}
            for ms in ([t * 1e3 for t in fwd], [t * 1e3 for t in fb])]


def memory_child(spec):
    """Hidden ``--measure-memory`` mode, in a fresh process: peak extra RSS (MB) of the first forward+backward, then
    the timings. Each contender starts from the same clean heap: after another contender's multi-GB run, glibc's
    changed mmap/trim thresholds can double the page-fault cost of the next one."""
    shape, fn = tuple(spec["shape"]), contender_fn(spec["name"])
    x, grad = make_inputs((1, 2 * shape[4], 16, *shape[3:]), "cpu")  # tiny warm-up: one-time set-up not counted
    fn(x).backward(grad)
    x, grad = make_inputs(shape, "cpu")
    before = peak_rss_bytes(reset=True)
    fn(x).backward(grad)
    peak = (peak_rss_bytes() - before) / 2**20
    clear_grads(x)
    fwd, fb = measure_times(spec["name"], x, grad, spec["reps"], "cpu")
    print(json.dumps({"peak_extra_mb": peak, "fwd_ms": fwd, "fwdbwd_ms": fb}))


def measure_case(name, shape, x, grad, reps, device):
    """Timings and peak extra memory (MB) of one forward+backward: a fresh subprocess on CPU (RSS), the allocator
    peak on CUDA. Returns ``(fwd, fwdbwd, peak_mb)``."""
    if torch.device(device).type == "cuda":
        fwd, fb = measure_times(name, x, grad, reps, device)
        clear_grads(x)
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        contender_fn(name)(x).backward(grad)
        sync(device)
        clear_grads(x)
        return fwd, fb, (torch.cuda.max_memory_allocated() - base) / 2**20
    spec = json.dumps({"shape": list(shape), "name": name, "reps": reps})
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure-memory", spec],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"measurement of {name} {shape} failed:\n{proc.stderr}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return res["fwd_ms"], res["fwdbwd_ms"], res["peak_extra_mb"]


#: The package backends rated against ``loop`` (each gets its own speed-ups, memory ratio and bar).
RATED = ("chunked", "numba")
#: Issue #7's GPU bar: Triton forward at >= 50 % of the HBM floor at these shapes, forward+backward >= 5x faster
#: than chunked on the same GPU, and within 1.2x of mamba_ssm's CUDA kernel where it was measured in the same run.
GPU_BAR_HBM_SHAPES = ((1, 768, 4096, 16, 4), (4, 96, 4096, 16, 1))


def gpu_bar_table(rows, floors):
    """Issue #7's table: per shape, Triton's forward against the HBM floor, its forward+backward against chunked and
    mamba_ssm in the same run, and the verdict. Empty when Triton did not run."""
    md = lambda cells: "| " + " | ".join(map(str, cells)) + " |"
    head = ["#", "shape (B, D, L, N, G)", "triton fwd ms", "HBM floor fwd ms", "fwd % of HBM floor",
            "triton fwd+bwd ms", "chunked fwd+bwd ms", "speed-up vs chunked", "mamba_ssm fwd+bwd ms",
            "triton / mamba_ssm", "bar"]
    out = [md(head), "|---" * len(head) + "|"]
    for r in rows:
        c = r["contenders"]
        tri = c.get("triton", {})
        if "fwd_ms" not in tri:
            continue
        fwd_floor = hbm_floor_ms(r["shape"], floors["copy_bytes_per_s"])[0]
        frac = fwd_floor / tri["fwd_ms"]["min"]
        fb = tri["fwdbwd_ms"]["min"]
        ch = c.get("chunked", {}).get("fwdbwd_ms", {}).get("min")
        ms = c.get("mamba_ssm", {}).get("fwdbwd_ms", {}).get("min")
        checks = [("speed vs chunked", ch is not None and ch / fb >= 5)]
        if tuple(r["shape"]) in GPU_BAR_HBM_SHAPES:
            checks.append(("HBM fraction", frac >= 0.5))
        if ms is not None:
            checks.append(("vs mamba_ssm", fb <= 1.2 * ms))
        failed = [w for w, ok in checks if not ok]
        r["gpu_bar"] = "PASS" if not failed else "FAIL (" + ", ".join(failed) + ")"
        out.append(md([r["index"], tuple(r["shape"]), _f(tri["fwd_ms"]), f"{fwd_floor:.4f}", f"{100 * frac:.0f}",
                       _f(tri["fwdbwd_ms"]), _f(ch, "{:.2f}"), _f(ch and ch / fb, "{:.1f}x"), _f(ms, "{:.2f}"),
                       _f(ms and fb / ms, "{:.2f}"), r["gpu_bar"]]))
    return "\n".join(out) if len(out) > 2 else ""


def summarise(row, shape):
    """Adds ratios to the floors and, per rated backend, speed-ups, memory ratio and the project's bar to ``row``."""
    c = row["contenders"]
    for res in (r for r in c.values() if "fwd_ms" in r):
        res["fwd_over_floor"] = res["fwd_ms"]["min"] / row["floor_fwd_ms"]
        res["fwdbwd_over_floor"] = res["fwdbwd_ms"]["min"] / row["floor_fwdbwd_ms"]
    row["bar_speedup_needed"] = need = 10.0 if shape[2] >= 4096 else 5.0
    loop = c.get("loop", {})
    for name in RATED:
        res = c.get(name, {})
        if "fwd_ms" not in res or "fwd_ms" not in loop:
            continue
        res["fwd_speedup"] = loop["fwd_ms"]["min"] / res["fwd_ms"]["min"]
        res["fwdbwd_speedup"] = loop["fwdbwd_ms"]["min"] / res["fwdbwd_ms"]["min"]
        res["memory_ratio"] = res["peak_extra_mb"] / loop["peak_extra_mb"] if loop["peak_extra_mb"] > 0 else None
        mem_ok = res["memory_ratio"] is not None and res["memory_ratio"] <= 1 / 3
        failed = [w for w, ok in (("speed", res["fwdbwd_speedup"] >= need), ("memory", mem_ok)) if not ok]
        res["bar"] = "PASS" if not failed else "FAIL (" + ", ".join(failed) + ")"
    return row


def _f(v, fmt="{:.2f}"):
    """Formats a number; a timing dict as 'min (median)'; '-' when missing."""
    if isinstance(v, dict):
        return f"{v['min']:.2f} ({v['median']:.2f})"
    return "-" if v is None else fmt.format(v)


def tables(rows):
    """The main markdown table (each rated backend vs loop) and the table of every contender."""
    md = lambda cells: "| " + " | ".join(map(str, cells)) + " |"
    head = ["#", "B", "D", "L", "N", "G", "backend", "loop fwd ms", "fwd ms", "fwd speed-up", "fwd / floor",
            "loop fwd+bwd ms", "fwd+bwd ms", "fwd+bwd speed-up", "fwd+bwd / floor",
            "peak extra MB loop", "peak extra MB", "memory ratio vs loop", "bar"]
    main, every = [md(head), "|---" * len(head) + "|"], []
    for r in rows:
        lo = r["contenders"].get("loop", {})
        for name in (n for n in RATED if "fwd_ms" in r["contenders"].get(n, {})):
            ch = r["contenders"][name]
            main.append(md([r["index"], *r["shape"], name, _f(lo.get("fwd_ms")), _f(ch.get("fwd_ms")),
                            _f(ch.get("fwd_speedup"), "{:.1f}x"), _f(ch.get("fwd_over_floor"), "{:.1f}"),
                            _f(lo.get("fwdbwd_ms")), _f(ch.get("fwdbwd_ms")), _f(ch.get("fwdbwd_speedup"), "{:.1f}x"),
                            _f(ch.get("fwdbwd_over_floor"), "{:.1f}"), _f(lo.get("peak_extra_mb"), "{:.1f}"),
                            _f(ch.get("peak_extra_mb"), "{:.1f}"), _f(ch.get("memory_ratio")), ch.get("bar", "n/a")]))
        every += [md([r["index"], n, _f(c.get("fwd_ms")), _f(c.get("fwd_over_floor"), "{:.1f}"),
                      _f(c.get("fwdbwd_ms")), _f(c.get("fwdbwd_over_floor"), "{:.1f}"),
                      _f(c.get("peak_extra_mb"), "{:.1f}"), _f(c.get("foreign_load") and 100 * c["foreign_load"], "{:.0f}"),
                      c.get("skipped") or ("ran while busy" if c.get("busy") else "")])
                  for n, c in r["contenders"].items()]
    head2 = ["#", "contender", "fwd ms", "fwd / floor", "fwd+bwd ms", "fwd+bwd / floor", "peak extra MB",
             "other load %", "note"]
    return "\n".join(main), "\n".join([md(head2), "|---" * len(head2) + "|", *every])


def write_report(path, data, main_table, all_table, gpu_table=""):
    """Writes the markdown report."""
    m, fl, sz = data["machine"], data["floors"], data["floors"]["sizes"]
    gpu = f"\n- GPU: {data['gpu']}" if data.get("gpu") else ""
    gpu_section = ("\n## Triton on the GPU (issue #7)\n" + gpu_table + "\n\nHBM floor = 4 (3 BDL + 2 BGNL) bytes "
                   "(fp32 u, delta, B, C read, y written) / the measured copy bandwidth. Bar: forward >= 50 % of the "
                   "HBM floor at " + ", ".join(map(str, GPU_BAR_HBM_SHAPES)) + "; forward+backward >= 5x faster "
                   "than chunked; <= 1.2x mamba_ssm where it ran.\n") if gpu_table else ""
    busy = [f"#{r['index']} {n}" for r in data["rows"] for n, c in r["contenders"].items() if c.get("busy")]
    text = f"""# Selective scan: sequential loop vs the chunked and numba backends ({data['device']})

Command: `{data['command']}`  
Date: {data['date']}

## Machine
- CPU: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), {m['memory_gb']} GB RAM{gpu}
- torch {data['versions']['torch']}, `torch.get_num_threads()` = {data['threads']}, numpy {data['versions']['numpy']}, Python {m['python']}, OS {m['os']}
- git commit: {m['git_commit']}

## Method
- Repetition rule: {data.get('rounds', 1)} round(s) in which the contenders of a shape take turns, each time in a fresh process with one warm-up call, then {data['reps']} timed repetitions; times are shown as MINIMUM (MEDIAN) over all repetitions of all rounds in ms, speed-ups and ratios use the minimum; peak memory is that of the first round.
- Inputs: Mamba initialisation (A = -(1..N) per channel, delta_bias = inverse_softplus(dt), dt ~ exp(U[log 1e-3, log 1e-1]), delta = 0.1 randn, delta_softplus, D = 1, no z), u, B, C ~ N(0, 1), fp32, seed 0. G = 1: B, C shared (B, N, L); G > 1: grouped (B, G, N, L).
- Forward under `torch.no_grad()`; forward+backward = `out.backward(grad)` with u, delta, A, B, C, D, delta_bias requiring grad.
- Peak extra memory of one forward+backward: {data['memory_method']}
- Self-check (max error vs `backend="reference"`, relative to max(1, |ref|), output and all gradients; loop must be <= 1e-4): {', '.join(f"{k} {v:.1e}" for k, v in data['self_check'].items())}.

## Floors (measured in this run on {data['device']})
- exponential, fp32: `torch.exp_` {fl['exp_per_s_16M'] / 1e9:.2f} G elem/s on {sz['exp'][0]:,} elements and {fl['exp_per_s_1M'] / 1e9:.2f} on {sz['exp'][1]:,}; `torch.exp2_` {fl.get('exp2_per_s_16M', 0) / 1e9:.2f} and {fl.get('exp2_per_s_1M', 0) / 1e9:.2f} (the fastest is the exp rate: `exp(x) = exp2(x log2 e)`, which the chunked backend and `loop` use)
- copy bandwidth: {fl['copy_bytes_per_s'] / 1e9:.1f} GB/s (`dst.copy_(src)`, {sz['copy_floats']:,} floats, read + write counted)
- sgemm: {fl['sgemm_flop_per_s'] / 1e9:.0f} GFLOP/s ({sz['sgemm']} x {sz['sgemm']} matmul)
- Each floor: one warm-up, then the minimum time over {data['floor_reps']} repetitions.
- forward floor = max(BDLN / exp rate, 4 (3 BDL + 2 BGNL) / bandwidth, 9 BDLN / sgemm rate); forward+backward floor = max(2 BDLN / exp rate, 4 (8 BDL + 6 BGNL) / bandwidth, 27 BDLN / sgemm rate).

## Results
{main_table}

Bar (project target, issue #2): forward+backward speed-up >= 10x where L >= 4096 (>= 5x for shorter L) and memory ratio backend/loop <= 1/3. The issue states it for `chunked` (pure PyTorch, runs everywhere); `numba` (fused kernels compiled by Numba, the CPU default of `auto` when Numba imports) is rated by the same rule.

### Every contender
{all_table}
{gpu_section}
## Notes
- `loop` is the fastest plain-autograd sequential scan: delta preparation, `exp(delta * A)` and `delta * u * B` in bulk over (B, D, L, N) (B, C broadcast per channel by the group rule), then one `torch.addcmul` per step, `torch.stack`, `(H * C).sum(-1) + D * u`. Its steps come from `unbind`: slicing `dA[:, :, t]` in a loop makes autograd allocate a full-size zero buffer per step in the backward (quadratic in L).
- The chunked backend keeps a reusable CPU workspace per thread: for N > 1 its inputs staged channel-last for the rows of the current slab (u, delta, dy, B, C: (3 D + 2 G N) L floats per batch row in the backward; none at N = 1, where it reads the channel-major inputs in place), and for one slab its decays, states and state adjoints (3 x 4 B x B D L N / 3 at most, bounded by the slab budget of {SLAB_BUDGET_BYTES >> 20} MB) and four per-channel tensors; it is created inside the measured forward+backward and so is part of the chunked peak. Each (contender, shape) is timed and measured in its own fresh process: after another contender's multi-GB run, glibc's changed mmap/trim thresholds made the next one's page faults cost up to 2x.
- Other load %: share of all CPU time used by other processes while the case was timed ('-': too short to tell); before each case the script waited (up to {data['max_wait_s']:.0f} s) until other processes used <= 30 % of the CPUs. Cases that ran while busy: {', '.join(busy) or 'none'}.
"""
    path.write_text(text)


def main():
    """Parses the options, runs the self-check, the floors and every (shape, contender) case, writes the report."""
    for path in (str(ROOT / "src"), str(ROOT / "benchmarks")):  # src layout and the _machine helper
        if path not in sys.path:
            sys.path.insert(0, path)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--reps", type=int, default=5, help="timed repetitions after one warm-up (default 5)")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds in which the contenders take turns, each in a fresh process (default 2; --quick: 1)")
    p.add_argument("--shapes", default=None, help="comma-separated indices of the shapes to run, e.g. 0,1")
    p.add_argument("--quick", action="store_true", help="tiny shapes, 1 repetition, results in a temporary directory")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--suffix", default=None, help="files scan_<suffix>.md/.json (default: none on CPU, the GPU name)")
    p.add_argument("--skip-loop-above", type=int, default=None, metavar="L", help="skip `loop` where L is above this")
    p.add_argument("--max-wait", type=float, default=None, help="seconds to wait for a quiet CPU (60; --quick: 1)")
    p.add_argument("--measure-memory", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure_memory:
        return memory_child(json.loads(args.measure_memory))
    from _machine import ForeignLoad, machine_info, package_versions, wait_until_quiet

    from mambaseg.ops.selective_scan import list_backends

    shapes, reps = (QUICK_SHAPES, 1) if args.quick else (SHAPES, args.reps)
    rounds = max(1, args.rounds if args.rounds is not None else 1 if args.quick else 2)
    max_wait = args.max_wait if args.max_wait is not None else (1.0 if args.quick else 60.0)
    out = Path(args.out).resolve()
    if args.quick and out == (ROOT / "benchmarks" / "results").resolve():
        out = Path(tempfile.mkdtemp(prefix="scan_quick_"))  # never overwrite the real results
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    suffix = args.suffix if args.suffix is not None else (
        re.sub(r"[^a-z0-9]+", "_", gpu.lower().replace("nvidia", "")).strip("_") if gpu else "")
    contenders = ["loop", *(b for b in list_backends(torch.empty(0, device=device))
                            if b in RATED + ("triton", "mamba_ssm"))]
    if device.type == "cuda" and not args.quick:
        shapes = shapes + GPU_EXTRA_SHAPES
    print("self-check (CPU) ...", flush=True)
    check = self_check()
    print("  max error vs reference: " + ", ".join(f"{k} {v:.1e}" for k, v in check.items()))
    wait_until_quiet(max_wait=max_wait)
    floor_reps = max(reps, 3 if args.quick else 5)
    floors = measure_floors(device, floor_reps, 16 if args.quick else 1)
    print(f"floors: exp {floors['exp_per_s_16M']:.3g}/s (large), {floors['exp_per_s_1M']:.3g}/s (small), exp2 "
          f"{floors['exp2_per_s_16M']:.3g}/s (large), {floors['exp2_per_s_1M']:.3g}/s (small), copy "
          f"{floors['copy_bytes_per_s'] / 1e9:.1f} GB/s, sgemm {floors['sgemm_flop_per_s'] / 1e9:.0f} GFLOP/s")
    rows = []
    for i in [int(i) for i in args.shapes.split(",")] if args.shapes else range(len(shapes)):
        shape, cases = shapes[i], {}
        x, grad = make_inputs(shape, device)
        for r in range(rounds):  # contenders take turns, so a slow spell of the machine hits them all alike
            for name in contenders:
                if name == "loop" and args.skip_loop_above is not None and shape[2] > args.skip_loop_above:
                    cases[name] = {"skipped": f"skipped (L > {args.skip_loop_above})"}
                    continue
                quiet = wait_until_quiet(max_wait=max_wait)
                with ForeignLoad() as load:
                    fwd, fb, mem = measure_case(name, shape, x, grad, reps, device)
                case = cases.setdefault(name, {"fwd_ms": {"all": []}, "fwdbwd_ms": {"all": []}, "peak_extra_mb": mem,
                                               "wait": [], "foreign_load": None, "busy": False})
                for key, t in (("fwd_ms", fwd), ("fwdbwd_ms", fb)):
                    case[key]["all"] += t["all"]
                    case[key].update(min=min(case[key]["all"]), median=statistics.median(case[key]["all"]))
                case["wait"].append(quiet)
                if load.fraction is not None:  # the busiest round
                    case["foreign_load"] = max(case["foreign_load"] or 0.0, load.fraction)
                case["busy"] |= not quiet["quiet"] or (load.fraction or 0) > 0.3
                print(f"  #{i} {shape} {name:9s} round {r + 1}: fwd {fwd['min']:9.2f} ms  fwd+bwd {fb['min']:9.2f} ms  "
                      f"peak {mem:8.1f} MB  other load {_f(load.fraction and 100 * load.fraction, '{:.0f}%')}",
                      flush=True)
        fwd_floor, fb_floor = floor_ms(shape, floors)
        rows.append(summarise({"index": i, "shape": list(shape), "floor_fwd_ms": fwd_floor,
                               "floor_fwdbwd_ms": fb_floor, "contenders": cases}, shape))
        del x, grad
    main_table, all_table = tables(rows)
    gpu_table = gpu_bar_table(rows, floors)
    print("\n" + main_table + "\n\n" + all_table + ("\n\n" + gpu_table if gpu_table else ""))
    data = {"command": shlex.join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "device": str(device),
            "gpu": gpu, "machine": machine_info(str(ROOT)), "threads": torch.get_num_threads(),
            "versions": package_versions(), "reps": reps, "rounds": rounds, "warmup": 1, "floor_reps": floor_reps, "max_wait_s": max_wait,
            "self_check": check, "floors": floors, "rows": rows, "memory_method": MEMORY_METHOD[device.type]}
    out.mkdir(parents=True, exist_ok=True)
    stem = "scan" + (f"_{suffix}" if suffix else "")
    write_report(out / f"{stem}.md", data, main_table, all_table, gpu_table)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=1))
    print(f"\nwrote {out / (stem + '.md')} and {out / (stem + '.json')}")


if __name__ == "__main__":
    main()
