"""Efficiency of the 3D models: parameters, FLOPs (selective scan included), forward latency, training-step time
and peak memory per input size, each (model, size) measured in its own fresh process, plus how time and memory
grow from the smallest to the largest input next to the growth of the voxel count (the linear-complexity claim).

Usage: ``python benchmarks/models3d.py [--models a,b] [--sizes 1x1x64x64x64,1x1x96x96x96] [--reps 3]
[--devices cpu,cuda] [--out DIR]``; writes ``DIR/models3d.md`` and ``models3d.json`` (default DIR:
``benchmarks/results``). Default sizes: 1x1x64^3 and 1x1x96^3 on CPU; on CUDA also 1x4x128^3. A training step is
one SGD step (lr 0.01, momentum 0.99, Nesterov, weight decay 3e-5: SegMamba's and nnU-Net's recipe) on a
cross-entropy loss against random labels; deep-supervision outputs are summed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from _common import peak_rss_bytes, summed_cross_entropy, timed  # benchmarks/ is on sys.path when this runs as a script

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = "segmamba,umamba_bot,umamba_enc,lightm_unet,unet,swin_unetr"
CPU_SIZES = "1x1x64x64x64,1x1x96x96x96"
CUDA_SIZES = CPU_SIZES + ",1x4x128x128x128"
NUM_CLASSES = 4



def build(name: str, size: tuple):
    """``create_model`` in 3D for an input ``(B, C, D, H, W)``; U-Mamba Enc is built for that patch size."""
    from mambaseg import create_model, model_info

    kwargs = {"in_channels": size[1], "num_classes": NUM_CLASSES}
    if len(model_info(name).spatial_dims) > 1:
        kwargs["spatial_dims"] = 3
    if model_info(name).family == "umamba_enc" and not name.endswith("_test"):
        kwargs["input_size"] = tuple(size[2:])  # as nnU-Net builds it for its patch size
    return create_model(name, **kwargs)


def _memory_mb(device: str, step) -> dict:
    """Extra memory of one ``step()``: RSS growth on CPU; on CUDA the allocator's peak above what was allocated
    before the step (``delta``) and its absolute peak (weights, gradients and optimizer state included)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {"delta": (peak - before) / 2**20, "absolute": peak / 2**20}
    before = peak_rss_bytes(reset=True)
    step()
    return {"delta": (peak_rss_bytes() - before) / 2**20, "absolute": None}


#: glibc settings of the CPU memory child. A fixed mmap threshold turns off glibc's dynamic threshold, so every block
#: of 64 KiB or more is its own mapping, returned to the system when freed: peak RSS then follows the live tensors.
#: Under the default dynamic threshold, blocks freed by the warm-up step stay in the heap and are reused by the
#: measured step without raising RSS, which hides a size-dependent part of the peak (small inputs' blocks fit under
#: the 32 MiB threshold cap, large inputs' do not).
MEMORY_CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}


#: glibc settings of the timing process with ``--malloc tuned``: freed memory stays in the heap and is reused, so
#: tensors above glibc's 32 MiB dynamic-threshold cap no longer come as fresh mappings whose every page faults on
#: first touch (at 128^3 that made copies and concatenations grow 15-18x for 8x voxels).
TUNED_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(16 * 2**30), "MALLOC_TRIM_THRESHOLD_": str(64 * 2**30),
                    "MALLOC_TOP_PAD_": str(2**30)}

#: Where ``--malloc jemalloc`` looks for the library (Debian/Ubuntu ``libjemalloc2``, Fedora/RHEL ``jemalloc``)
#: unless ``JEMALLOC_PATH`` names it.
JEMALLOC_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
                       "/usr/lib64/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2")


#: jemalloc settings of ``--malloc jemalloc``: freed memory is never handed back to the system, so a step reuses the
#: pages of the steps before it instead of faulting in fresh ones (PyTorch's performance tuning guide recommends
#: jemalloc or TCMalloc on CPU for this reuse; with jemalloc's default 10 s decay a SegMamba 64^3 training step on
#: this 2-core machine took 43 % longer, with 4.5x the system time).
JEMALLOC_CONF = "background_thread:true,dirty_decay_ms:-1,muzzy_decay_ms:-1"


def find_jemalloc() -> str:
    """Path of the jemalloc shared library for ``LD_PRELOAD`` (``JEMALLOC_PATH`` first, then the usual places)."""
    for path in (os.environ.get("JEMALLOC_PATH"), *JEMALLOC_CANDIDATES):
        if path and Path(path).is_file():
            return path
    raise FileNotFoundError("--malloc jemalloc: no libjemalloc.so.2 found (looked in JEMALLOC_PATH and "
                            f"{', '.join(JEMALLOC_CANDIDATES)}); install it (Debian/Ubuntu: apt-get install "
                            "libjemalloc2) or set JEMALLOC_PATH")


def malloc_env(malloc: str) -> dict | None:
    """Environment of a CPU timing process: None (glibc defaults), :data:`TUNED_MALLOC_ENV`, or jemalloc preloaded
    with :data:`JEMALLOC_CONF`."""
    if malloc == "tuned":
        return TUNED_MALLOC_ENV
    if malloc == "jemalloc":
        return {"LD_PRELOAD": find_jemalloc(), "MALLOC_CONF": JEMALLOC_CONF}
    return None


def jemalloc_thread_peak(step) -> float | None:
    """MB by which the bytes allocated (net of frees) on this thread rose at most during ``step()``: jemalloc's
    ``thread.peak`` counter, the CPU counterpart of ``torch.cuda.max_memory_allocated`` minus the allocation before
    the step. Independent of how the allocator maps pages. None when jemalloc (5.3 or later) is not loaded.

    Allocations made by other threads are not counted; with one intra-op thread PyTorch allocates every tensor on
    the calling thread.
    """
    import ctypes

    try:
        mallctl = ctypes.CDLL(None).mallctl
    except AttributeError:
        return None
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p,
                        ctypes.c_size_t]
    if mallctl(b"thread.peak.reset", None, None, None, 0) != 0:
        return None
    step()
    value, size = ctypes.c_uint64(), ctypes.c_size_t(8)
    if mallctl(b"thread.peak.read", ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
        return None
    return value.value / 2**20


def _setup(spec: dict):
    """Model, input, random labels and one training ``step()`` of a case (SGD as SegMamba and nnU-Net train)."""
    torch.manual_seed(0)
    device, size = spec["device"], tuple(spec["size"])
    model = build(spec["model"], size).to(device)
    x = torch.randn(*size, device=device)
    target = torch.randint(0, NUM_CLASSES, (size[0], *size[2:]), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)

    def step():
        opt.zero_grad(set_to_none=True)
        summed_cross_entropy(model(x), target).backward()
        opt.step()

    return model, x, step


def saved_for_backward_mb(model: torch.nn.Module, x: torch.Tensor) -> float:
    """MB of the distinct tensor storages that one training-mode forward keeps for the backward pass (autograd's
    saved tensors, custom Functions' ``save_for_backward`` included): the size-dependent core of training memory,
    counted without any allocator in between. Parameters are not counted (they exist anyway)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        if t.device.type != "meta":
            st = t.untyped_storage()
            if st.data_ptr() not in params:
                storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    return sum(storages.values()) / 2**20


def measure_child(spec: dict) -> dict:
    """In a fresh process: parameters, FLOPs, forward latency and training-step time of one case (``mode``
    "time"; on CUDA also the allocator's peak), or the peak memory of one training step (``mode`` "memory", the
    CPU measure, run under :data:`MEMORY_CHILD_ENV`)."""
    from mambaseg.benchmark import count_flops, count_parameters
    from mambaseg.training.trainer import memory_allocator

    device = spec["device"]
    model, x, step = _setup(spec)
    if spec["mode"] == "memory":
        model.train()
        step()  # warm-up: optimizer state and scratch buffers exist before the memory is measured
        _free_gradients(model)
        peak = _memory_mb(device, step)["delta"]
        return {"peak_train_mb": peak, "saved_for_backward_mb": saved_for_backward_mb(model, x),
                "malloc_env": MEMORY_CHILD_ENV}
    flops = count_flops(model, tuple(spec["size"]))
    model.eval()
    with torch.no_grad():
        fwd = timed(lambda: model(x), spec["reps"], device)
    model.train()
    step()  # warm-up
    memory, peak_alloc = {"delta": None, "absolute": None}, None
    allocator = memory_allocator()
    if device == "cuda":
        _free_gradients(model)
        memory = _memory_mb(device, step)
    elif allocator == "jemalloc":
        _free_gradients(model)
        peak_alloc = jemalloc_thread_peak(step)
    train = timed(step, spec["reps"], device)
    return {"params": count_parameters(model), "gflops": flops["total"] / 1e9,
            "scan_share": flops["scan"] / max(flops["total"], 1), "fwd_ms": _stats(fwd), "train_ms": _stats(train),
            "peak_train_mb": memory["delta"], "peak_train_abs_mb": memory["absolute"],
            "peak_alloc_mb": peak_alloc, "threads": torch.get_num_threads(), "allocator": allocator}


def _free_gradients(model) -> None:
    """Drops the gradients the warm-up step left, as the measured step's own ``zero_grad`` would first do.

    Memory is then measured from weights and optimizer state alone, and the gradients the step creates count in
    it. Measured from before that ``zero_grad`` instead, the freed gradients (a fixed, size-independent amount)
    are subtracted from every peak, and the growth ratio of a small input comes out too large: U-Net's peak RSS
    seemed to grow 9.9x from 64^3 to 128^3 while the tensors it saves grow 8.0x.
    """
    model.zero_grad(set_to_none=True)


def _stats(seconds):
    ms = [t * 1e3 for t in seconds]
    return {"min": min(ms), "median": statistics.median(ms), "all": ms}


def _child(spec: dict, timeout: float, env: dict | None = None) -> dict:
    """Runs :func:`measure_child` in a fresh process; a failure or timeout becomes ``{"error": ...}``."""
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                              capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                              env={**os.environ, **env} if env else None)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode:
        if not proc.stderr.strip():  # SIGKILL leaves no message: the kernel's out-of-memory killer, most often
            return {"error": f"killed by signal {-proc.returncode}, no message (out of memory?)"
                    if proc.returncode < 0 else "failed"}
        return {"error": proc.stderr.strip().splitlines()[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_case(model: str, size: tuple, reps: int, device: str, timeout: float, malloc: str = "default",
             memory: bool = True) -> dict:
    """Timings (one process, the allocator settings :func:`malloc_env` gives for ``malloc``) and, on CPU, the peak memory (a second process under
    :data:`MEMORY_CHILD_ENV`, unless ``memory`` is False)."""
    spec = {"model": model, "size": list(size), "reps": reps, "device": device, "mode": "time"}
    res = _child(spec, timeout, malloc_env(malloc) if device == "cpu" else None)
    res["malloc"] = malloc
    if device == "cpu" and "error" not in res:
        res.update(memory_case(model, size, device, timeout) if memory else
                   {"peak_train_mb": None, "memory_error": "skipped (--skip-memory)"})
    return res


def memory_case(model: str, size: tuple, device: str, timeout: float) -> dict:
    """The CPU memory figures of one case (its own process under :data:`MEMORY_CHILD_ENV`); on failure the
    timings stand and ``memory_error`` says why the memory cell is missing."""
    spec = {"model": model, "size": list(size), "reps": 0, "device": device, "mode": "memory"}
    mem = _child(spec, timeout, MEMORY_CHILD_ENV)
    return {"peak_train_mb": None, "memory_error": mem["error"]} if "error" in mem else mem


def voxels(size) -> int:
    """Batch x spatial voxels of a ``(B, C, D, H, W)`` size (channels only touch the first layer)."""
    return size[0] * math.prod(size[2:])


def growth(run: dict) -> list:
    """Per model: time and memory ratios from the smallest to the largest size that both ran, next to the voxel
    ratio. A ratio equal to the voxel ratio is linear growth; below it, fixed costs still dominate."""
    out = []
    sizes = sorted((tuple(s) for s in run["sizes"]), key=voxels)
    for row in run["rows"]:
        ok = [s for s in sizes if "train_ms" in row["results"].get("x".join(map(str, s)), {})]
        if len(ok) < 2 or voxels(ok[0]) == voxels(ok[-1]):
            continue
        a, b = (row["results"]["x".join(map(str, s))] for s in (ok[0], ok[-1]))
        mem = b["peak_train_mb"] / a["peak_train_mb"] if (a["peak_train_mb"] or 0) > 0 and b["peak_train_mb"] else None
        saved, alloc = (b[k] / a[k] if a.get(k) and b.get(k) else None for k in ("saved_for_backward_mb", "peak_alloc_mb"))
        out.append({"model": row["model"], "saved_ratio": saved, "alloc_ratio": alloc, "from": "x".join(map(str, ok[0])), "to": "x".join(map(str, ok[-1])),
                    "voxel_ratio": voxels(ok[-1]) / voxels(ok[0]),
                    "fwd_ratio": b["fwd_ms"]["min"] / a["fwd_ms"]["min"],
                    "train_ratio": b["train_ms"]["min"] / a["train_ms"]["min"], "memory_ratio": mem, "gflops_ratio": b["gflops"] / a["gflops"]})
    return out


def _fmt(v, spec=".2f"):
    return "n/a" if v is None else format(v, spec)


def write_report(path: Path, data: dict) -> None:
    m = data["machine"]
    lines = ["# 3D model efficiency", "", f"Command: `{data['command']}`  ", f"Date: {data['date']}", "",
             "## Machine",
             f"- CPU: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), "
             f"{m['memory_gb']} GB RAM; GPU: {data['gpu'] or 'none'}",
             f"- torch {data['versions']['torch']} (CUDA {data['versions']['cuda']}), mamba_ssm "
             f"{data['versions']['mamba_ssm']}, {data['threads']} CPU threads, Python {m['python']}, {m['os']}",
             f"- git commit: {m['git_commit']}", "", "## Method",
             "- Each (device, model, input size) in a fresh process; models built with `create_model(name, "
             f"in_channels=C, num_classes={NUM_CLASSES}, spatial_dims=3)` (the registered default configuration; "
             "U-Mamba Enc with `input_size` = the input's spatial size, as nnU-Net builds it for its patch).",
             f"- Times: one warm-up, then {data['reps']} repetitions; MINIMUM (MEDIAN) in ms. Forward: eval mode, "
             "no_grad. Training step: SGD (lr 0.01, momentum 0.99, Nesterov, wd 3e-5), cross-entropy on random "
             "labels (deep-supervision outputs summed), zero_grad + forward + backward + step. Selective scan: "
             "backend `auto` (numba on CPU, mamba_ssm or chunked on CUDA).",
             "- Peak memory of one training step after a warm-up step, measured from the weights and optimizer state "
             "(the warm-up's gradients freed first, as the step's own `zero_grad` does; the step's new gradients "
             "count): CPU = peak RSS minus RSS before the step, "
             "measured in a second fresh process whose glibc mmap threshold is fixed at 64 KiB "
             "(`MALLOC_MMAP_THRESHOLD_=65536`), so that freed blocks go back to the system and RSS follows the live "
             "tensors (the default dynamic threshold lets the warm-up step's freed blocks be reused unseen); "
             "CUDA = `torch.cuda.max_memory_allocated()` minus the allocation before the step (absolute peak, with "
             "weights, gradients and optimizer state, in parentheses).",
             "- Peak allocated (CPU, only in timing processes run with `--malloc jemalloc`): jemalloc's "
             "`thread.peak` over one training step after the warm-up, i.e. the most the bytes held by live "
             "allocations rose above their level before the step: the CPU counterpart of CUDA's "
             "`max_memory_allocated` minus the allocation before the step, independent of page mapping.",
             "- Saved for backward: MB of the distinct tensor storages one training-mode forward keeps for the "
             "backward pass (autograd's saved tensors and the scan Functions' `save_for_backward`; parameters not "
             "counted), taken with `torch.autograd.graph.saved_tensors_hooks` in the memory process: the "
             "size-dependent core of training memory, free of allocator effects.",
             "- FLOPs: one forward, torch flop_counter convention (1 multiply-add = 2 FLOPs) plus 9 B D L N per "
             "selective scan (mambaseg.benchmark.count_flops).",
             "- Growth: ratio of the largest to the smallest input that ran, per model; voxels = batch x D x H x W. "
             "Linear complexity means time and memory ratios near the voxel ratio (fixed costs pull them below). "
             "Models that pad inputs (SegMamba to its size rule, SwinUNETR to multiples of 32 and at least 64, the "
             "U-Nets to their total stride) compute on the padded size; the default sizes need no padding.",
             *(["- Timing processes ran with `--malloc tuned`: glibc keeps freed memory for reuse ("
                + ", ".join(f"`{k}={v}`" for k, v in TUNED_MALLOC_ENV.items()) + ")."]
               if any(r.get("malloc") == "tuned" for run in data["runs"] for row in run["rows"]
                      for r in row["results"].values()) else []),
             *([f"- Timing processes ran with `--malloc jemalloc`: jemalloc preloaded (`LD_PRELOAD`) with "
                f"`MALLOC_CONF={JEMALLOC_CONF}` (freed memory is kept and reused, never returned to the system; "
                "PyTorch's performance tuning guide recommends jemalloc or TCMalloc on CPU for this reuse); each row's `allocator` field in the JSON says which "
                "allocator the process really had."]
               if any(r.get("malloc") == "jemalloc" for run in data["runs"] for row in run["rows"]
                      for r in row["results"].values()) else []),
             *([f"- Rows marked † were measured by an earlier run of this script and kept (`--reuse "
                f"{' --reuse '.join(data['reused_from'])}`); their repetitions may differ."] if data.get("reused_from") else []),
             ""]
    for run in data["runs"]:
        for size in run["sizes"]:
            label = "x".join(map(str, size))
            lines += [f"## {run['device'].upper()}, input {label}", "",
                      "| model | params | GFLOPs | scan % of FLOPs | forward ms | train step ms | peak train MB | "
                      "peak allocated MB | saved for backward MB |", "|---|---|---|---|---|---|---|---|---|"]
            for row in run["rows"]:
                r = row["results"].get(label)
                if r is None:  # a report written while the run goes on
                    lines.append(f"| {row['model']} | not measured (yet) | | | | | | | |")
                    continue
                if "error" in r:
                    lines.append(f"| {row['model']} | error: {r['error'][:100]} | | | | | | | |")
                    continue
                mem = (f"{r['peak_train_mb']:.0f}" if r["peak_train_mb"] is not None
                       else f"not measured: {r.get('memory_error', '?')[:60]}")
                if r.get("peak_train_abs_mb") is not None:
                    mem += f" ({r['peak_train_abs_mb']:.0f})"
                name = row["model"] + (" †" if r.get("reused") else "")
                lines.append(f"| {name} | {r['params']:,} | {r['gflops']:.2f} | {100 * r['scan_share']:.1f} | "
                             f"{r['fwd_ms']['min']:.0f} ({r['fwd_ms']['median']:.0f}) | "
                             f"{r['train_ms']['min']:.0f} ({r['train_ms']['median']:.0f}) | {mem} | "
                             f"{_fmt(r.get('peak_alloc_mb'), '.0f')} | {_fmt(r.get('saved_for_backward_mb'), '.0f')} |")
            lines.append("")
        lines += [f"## {run['device'].upper()}, growth from the smallest to the largest input", "",
                  "| model | from -> to | voxel ratio | GFLOPs ratio | forward time ratio | train time ratio | "
                  "train memory ratio | allocated-peak ratio | saved-for-backward ratio |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for g in run["growth"]:
            lines.append(f"| {g['model']} | {g['from']} -> {g['to']} | {g['voxel_ratio']:.2f} | "
                         f"{g['gflops_ratio']:.2f} | {g['fwd_ratio']:.2f} | {g['train_ratio']:.2f} | "
                         f"{_fmt(g['memory_ratio'])} | {_fmt(g['alloc_ratio'])} | {_fmt(g['saved_ratio'])} |")
        if not run["growth"]:
            lines.append("| (fewer than two sizes ran) | | | | | | | | |")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def _earlier_results(paths: list[str] | None) -> dict:
    """``{(device, model, size label): result}`` of the successful cases in earlier ``models3d.json`` files (a later
    file wins where two hold the same case)."""
    found = {}
    for path in paths or []:
        data = json.loads(Path(path).read_text())
        found.update({(run["device"], row["model"], label):
                      {**res, "reused": res.get("reused") or f"{path} ({data['date']})"}
                      for run in data["runs"] for row in run["rows"] for label, res in row["results"].items()
                      if "error" not in res})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated names")
    parser.add_argument("--sizes", default=None, help=f"comma-separated BxCxDxHxW (default: CPU {CPU_SIZES}; "
                                                      f"CUDA {CUDA_SIZES})")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--devices", default=None, help="comma-separated cpu,cuda (default: cpu, plus cuda if there)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per (model, size) process")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--reuse", action="append", default=None, metavar="JSON",
                        help="an earlier models3d.json (repeatable): its successful (device, model, size) results are kept and only "
                             "the missing or failed ones are measured (each kept result says so)")
    parser.add_argument("--reuse-only", action="store_true",
                        help="with --reuse: measure nothing; cases missing from the earlier file are reported as "
                             "not measured (to assemble a report from runs made in parts)")
    parser.add_argument("--memory-only", action="store_true",
                        help="with --reuse: keep the earlier timings and measure only the CPU memory again (after a "
                             "change of the memory method)")
    parser.add_argument("--malloc", choices=["default", "tuned", "jemalloc"], default="default",
                        help="allocator of the CPU timing process: glibc's defaults, glibc with TUNED_MALLOC_ENV "
                             "(freed memory kept for reuse; faster for large 3D inputs), or jemalloc preloaded "
                             "(JEMALLOC_PATH or the usual library paths)")
    parser.add_argument("--skip-memory", action="store_true", help="time only (no memory process)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    if (args.reuse_only or args.memory_only) and not args.reuse:
        parser.error("--reuse-only and --memory-only need --reuse JSON")
    if args.child:
        print(json.dumps(measure_child(json.loads(args.child))))
        return
    from _machine import machine_info, package_versions

    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--devices cuda: CUDA is not available here")
    names = args.models.split(",")
    earlier = _earlier_results(args.reuse)
    runs = []
    data = {"command": shlex.join(["python", "benchmarks/models3d.py", *sys.argv[1:]]),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine_info(str(ROOT)), "versions": package_versions(), "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "reps": args.reps,
            "runs": runs, "reused_from": args.reuse}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save(partial_run=None):
        """Writes the report so far: a run stopped by a time limit keeps every case it finished."""
        shown = runs + ([partial_run] if partial_run else [])
        for r in shown:
            r["growth"] = growth(r)
        write_report(out / "models3d.md", {**data, "runs": shown})
        (out / "models3d.json").write_text(json.dumps({**data, "runs": shown}, indent=1))
    for device in devices:
        spec = args.sizes or (CUDA_SIZES if device == "cuda" else CPU_SIZES)
        sizes = [tuple(int(v) for v in s.split("x")) for s in spec.split(",")]
        if any(len(s) != 5 for s in sizes):
            parser.error(f"--sizes: each size is BxCxDxHxW, got {spec}")
        rows = []
        run = {"device": device, "sizes": [list(s) for s in sizes], "rows": rows}
        for name in names:
            row = {"model": name, "results": {}}
            rows.append(row)
            for size in sizes:
                label = "x".join(map(str, size))
                res = earlier.get((device, name, label))
                if res is not None and args.memory_only and device == "cpu":
                    res = {**res, **memory_case(name, size, device, args.timeout),
                           "memory_remeasured": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
                elif res is None:
                    res = ({"error": "not measured (this report was assembled with --reuse-only or --memory-only)"}
                           if args.reuse_only or args.memory_only else
                           run_case(name, size, args.reps, device, args.timeout, args.malloc, not args.skip_memory))
                row["results"][label] = res
                shown = res.get("error") or (f"train {res['train_ms']['min']:.0f} ms, fwd {res['fwd_ms']['min']:.0f} "
                                             f"ms, peak {res['peak_train_mb'] or 0:.0f} MB {res.get('memory_error', '')}")
                print(f"{device:4s} {name:14s} {label:18s} {shown}", flush=True)
                save(run)
        runs.append(run)
    save()
    print(f"wrote {out / 'models3d.md'}")


if __name__ == "__main__":
    main()
