"""GPU sweep of the Triton selective scan's launch settings, with issue #7's bar measured on kernel time.

For each shape (B, D, L, N, G) of ``scan.py``'s GPU list it times, on one GPU:
  * the forward (``torch.no_grad``) of both forward kernels over their settings: ``two_pass`` (``block_d`` x chunk
    length x warps) and ``single_pass`` (``block_t`` x warps);
  * the forward+backward of the backward's settings (``block_d_backward`` x chunk length x warps), each with the
    best forward of that shape;
  * ``chunked`` on the same GPU and ``mamba_ssm``'s CUDA kernel where it imports, forward and forward+backward.

How time is taken: each case is captured in a CUDA graph and replayed (CUDA events, median of ``--rounds`` rounds of
``--reps`` replays), so the numbers are device time, without Python's launch overhead, which at these sizes (tens
of microseconds) would otherwise be most of what is measured. A case that cannot be captured (a host sync inside)
is timed eagerly with events and marked. The inputs rotate over enough copies that one round moves several times
the GPU's L2 cache, so the forward's fraction of the HBM floor is not inflated by cache hits. Every setting's output
(and, for forward+backward, every gradient) is first checked against ``chunked`` on the same inputs.

The HBM floor is ``scan.hbm_floor_ms``: the bytes that must move (fp32 u, delta, B, C read and y written) at the
copy bandwidth measured at the start of the run. Writes ``triton_tune_<gpu>.md`` and ``.json``; the best settings
per shape are what the package's defaults should follow.

Run on a GPU from the repository root: ``python benchmarks/triton_tune.py [--shapes 0,3] [--out DIR]``.
``--quick`` runs tiny shapes and a few settings (on CPU through Triton's interpreter when ``TRITON_INTERPRET=1``;
the timing there is meaningless, it checks the script).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT / "src"), str(ROOT / "benchmarks")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _machine import machine_info, package_versions  # noqa: E402
from scan import GPU_BAR_HBM_SHAPES, GPU_EXTRA_SHAPES, KEYS, SHAPES, hbm_floor_ms, make_inputs  # noqa: E402

from mambaseg.ops import list_backends, selective_scan  # noqa: E402
from mambaseg.ops._triton import selective_scan_triton  # noqa: E402

#: bar shapes first: a run cut short by its time limit still has what issue #7 rates
ORDER = [3, 2, 6, 0, 5, 1, 4]
#: The neighbourhood of the H200 optimum of the first full sweep (2026-12-04; wider grids there: block_d 8-32,
#: chunk 64-256, warps 2-8, block_t 64-256, block_d_backward 4-16, results/triton_tune_h200.md)
TWO_PASS = ([dict(forward="two_pass", block_d=bd, chunk_length=t, num_warps=2)
             for bd, t in itertools.product((16, 32), (64, 128))]
            + [dict(forward="two_pass", block_d=16, chunk_length=64, num_warps=4)]
            # 16 state elements per thread: a third of the instructions per (step, state) of 16 x 2 warps in the static
            # cost model (benchmarks/triton_sass.py), never timed
            + [dict(forward="two_pass", block_d=32, chunk_length=128, num_warps=1),
               dict(forward="two_pass", block_d=64, chunk_length=128, num_warps=2)]
            # software-pipelined serial loops (the two passes' step loops and the chunk combine's tiles), never timed
            + [dict(forward="two_pass", block_d=16, chunk_length=128, num_warps=2, num_stages_serial=s)
               for s in (2, 4)])
SINGLE_PASS = ([dict(forward="single_pass", block_t=bt, num_warps=w) for bt, w in itertools.product((128, 256),
                                                                                                    (2, 4, 8))]
               # the tile loop software-pipelined (loads of the next tile in flight), never timed
               + [dict(forward="single_pass", block_t=128, num_warps=w, num_stages=2) for w in (2, 4)])
BACKWARD = ([dict(block_d_backward=bd, chunk_length=t, num_warps_backward=w)
             for bd, t, w in ((8, 64, 2), (8, 64, 4), (16, 64, 2), (4, 128, 2), (8, 128, 2), (8, 32, 2))]
            # the single-pass backward (not yet timed): the settings that compile for sm_90 without register
            # spills (cuobjdump --dump-resource-usage: T=32 at 2-8 warps, T=64 at 4-8, T=128 at 8)
            + [dict(backward="single_pass", chunk_length=t, num_warps_backward=w)
               for t, w in ((32, 4), (32, 8), (64, 4), (64, 8), (128, 8))]
            # the carry pass: as launched before 2026-12-05 (16 x 4 warps) against the default (32 x 1), and 64 x 2
            + [dict(block_d_backward=8, chunk_length=64, num_warps_backward=2, block_d_carry=bd, num_warps_carry=w)
               for bd, w in ((16, 4), (64, 2))]
            # software pipelining (never timed): the gradient kernel's loop over states, and the serial loops (carry
            # pass step by step, the reverse combine's tiles of chunks)
            + [dict(block_d_backward=8, chunk_length=64, num_warps_backward=2, num_stages=s, num_stages_serial=ss)
               for s, ss in ((1, 4), (2, 1), (2, 4))])
QUICK_SHAPES = [(1, 8, 40, 4, 1), (1, 8, 40, 4, 2)]
L2_ROTATE_BYTES = 512 * 2**20  # several times the L2 of current GPUs (H100/H200: 50-60 MB)


def describe(options: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in options.items())


class Timer:
    """Median device time (ms) of ``fn(x)`` over rotating input copies: CUDA-graph replays, or eager on failure."""

    def __init__(self, device, reps, rounds):
        self.device, self.reps, self.rounds = device, reps, rounds

    def __call__(self, fn, copies) -> tuple[float, str]:
        if self.device.type != "cuda":  # interpreter check of the script: one timed call, no meaning
            t0 = time.perf_counter()
            for x in copies:
                fn(x)
            return (time.perf_counter() - t0) * 1e3 / len(copies), "cpu"
        body = lambda: [fn(x) for x in copies]  # noqa: E731
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            body()
            body()
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                body()
            run, how = graph.replay, "graph"
        except Exception:  # a host sync or an uncapturable op: eager timing, launch overhead included
            torch.cuda.synchronize()
            run, how = body, "eager"
        run()
        times = []
        for _ in range(self.rounds):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(self.reps):
                run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / (self.reps * len(copies)))
        return statistics.median(times), how


def input_copies(shape, device, fwdbwd: bool):
    """Enough independent copies of the inputs (and output gradient) that one pass over them exceeds the L2."""
    x, grad = make_inputs(shape, device)
    b, d, l, n, g = shape
    nbytes = 4 * (3 * b * d * l + 2 * b * g * n * l) * (3 if fwdbwd else 1)
    count = 1 if device.type != "cuda" else max(1, min(16, math.ceil(L2_ROTATE_BYTES / nbytes)))
    copies = [(x, grad)]
    for _ in range(count - 1):
        copies.append(({k: v.detach().clone().requires_grad_() for k, v in x.items()}, grad.clone()))
    return copies


def call(backend, options=None):
    """``x -> y`` for a backend, or for ``selective_scan_triton`` with ``options``."""
    def fn(x):
        args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
        kwargs = dict(D=x["D"], delta_bias=x["delta_bias"], delta_softplus=True)
        if options is not None:
            return selective_scan_triton(*args, **kwargs, **options)
        return selective_scan(*args, **kwargs, backend=backend)
    return fn


def forward_only(fn):
    def run(pair):
        with torch.no_grad():
            fn(pair[0])
    return run


def forward_backward(fn):
    def run(pair):
        x, grad = pair
        for v in x.values():
            v.grad = None
        fn(x).backward(grad)
    return run


def results_of(fn, pair, fwdbwd):
    """Output (and gradients) of one call, for the check against chunked."""
    x, grad = pair
    for v in x.values():
        v.grad = None
    if not fwdbwd:
        with torch.no_grad():
            return [fn(x).float()]
    y = fn(x)
    y.backward(grad)
    out = [y.detach().float()] + [x[k].grad.float().clone() for k in KEYS]
    for v in x.values():
        v.grad = None
    return out


def max_error(got, want) -> float:
    """max |got - want| / max(1, max |want|) over the output and every gradient."""
    return max(float((a - b).abs().max() / max(1.0, float(b.abs().max()))) for a, b in zip(got, want))


def sweep_shape(shape, timer, device, settings, log):
    """All cases of one shape: ``{"forward": [...], "fwdbwd": [...], "others": {...}}``."""
    res = {"shape": list(shape), "forward": [], "fwdbwd": [], "others": {}}
    fwd_copies = input_copies(shape, device, False)
    want_fwd = results_of(call("chunked"), fwd_copies[0], False)
    for opts in settings["forward"]:
        try:
            err = max_error(results_of(call(None, opts), fwd_copies[0], False), want_fwd)
            ms, how = timer(forward_only(call(None, opts)), fwd_copies)
            res["forward"].append({"options": opts, "ms": ms, "timing": how, "max_error_vs_chunked": err})
            log(f"  fwd     {describe(opts):55s} {ms * 1e3:9.1f} us  err {err:.1e}  ({how})")
        except Exception as exc:  # a setting that does not compile or run is reported, not fatal
            res["forward"].append({"options": opts, "error": f"{type(exc).__name__}: {exc}"[:300]})
            log(f"  fwd     {describe(opts):55s} FAILED {type(exc).__name__}: {str(exc)[:120]}")
    del fwd_copies
    ok = [r for r in res["forward"] if "ms" in r and r["max_error_vs_chunked"] < 1e-3]
    best_fwd = min(ok, key=lambda r: r["ms"])["options"] if ok else {}
    res["best_forward"] = best_fwd
    fb_copies = input_copies(shape, device, True)
    want_fb = results_of(call("chunked"), fb_copies[0], True)
    for bopts in settings["backward"]:
        opts = {**best_fwd, **bopts}  # one chunk length serves both directions: the backward's wins
        try:
            err = max_error(results_of(call(None, opts), fb_copies[0], True), want_fb)
            ms, how = timer(forward_backward(call(None, opts)), fb_copies)
            res["fwdbwd"].append({"options": opts, "ms": ms, "timing": how, "max_error_vs_chunked": err})
            log(f"  fwd+bwd {describe(opts):55s} {ms * 1e3:9.1f} us  err {err:.1e}  ({how})")
        except Exception as exc:
            res["fwdbwd"].append({"options": opts, "error": f"{type(exc).__name__}: {exc}"[:300]})
            log(f"  fwd+bwd {describe(opts):55s} FAILED {type(exc).__name__}: {str(exc)[:120]}")
    default = {}
    for name in ("triton", "chunked", "mamba_ssm"):
        if name != "triton" and name not in settings["others"]:
            continue
        fn = call(name)
        try:
            f_ms, f_how = timer(forward_only(fn), input_copies(shape, device, False))
            b_ms, b_how = timer(forward_backward(fn), fb_copies)
            default[name] = {"fwd_ms": f_ms, "fwdbwd_ms": b_ms, "timing": [f_how, b_how]}
            log(f"  {name:9s} (package defaults) fwd {f_ms * 1e3:9.1f} us  fwd+bwd {b_ms * 1e3:9.1f} us "
                f"({f_how}, {b_how})")
        except Exception as exc:
            default[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            log(f"  {name:9s} FAILED {type(exc).__name__}: {str(exc)[:120]}")
    res["others"] = default
    res["profile_us_per_call"] = kernel_profile(call("triton"), fb_copies[0], device, log)
    return res


def kernel_profile(fn, pair, device, log, calls=5) -> dict:
    """Device time per call (us) of each kernel in ``calls`` forward+backward runs of ``fn`` (torch.profiler):
    which kernel of the scan the time goes to. Empty off CUDA or when the profiler fails."""
    if device.type != "cuda":
        return {}
    from torch.profiler import ProfilerActivity, profile

    step = forward_backward(fn)
    step(pair)
    torch.cuda.synchronize()
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                step(pair)
            torch.cuda.synchronize()
    except Exception as exc:
        log(f"  profile failed: {type(exc).__name__}: {exc}")
        return {}
    per_call = {}
    for evt in prof.key_averages():
        us = getattr(evt, "device_time_total", None) or getattr(evt, "cuda_time_total", 0)
        if us:
            per_call[evt.key[:80]] = us / calls
    top = dict(sorted(per_call.items(), key=lambda kv: -kv[1])[:12])
    log("  profile (package defaults, us per fwd+bwd): " + ", ".join(f"{k} {v:.1f}" for k, v in top.items()))
    return top


def bar_rows(shape_results, copy_bytes_per_s):
    """Issue #7's bar per shape from the best settings: fwd % of the HBM floor, speed-up over chunked, vs mamba_ssm."""
    rows = []
    for r in shape_results:
        shape = tuple(r["shape"])
        fwd = [c for c in r["forward"] if "ms" in c and c["max_error_vs_chunked"] < 1e-3]
        fb = [c for c in r["fwdbwd"] if "ms" in c and c["max_error_vs_chunked"] < 1e-3]
        if not fwd or not fb:
            continue
        best_f, best_fb = min(fwd, key=lambda c: c["ms"]), min(fb, key=lambda c: c["ms"])
        floor = hbm_floor_ms(shape, copy_bytes_per_s)[0]
        frac = floor / best_f["ms"]
        chunked = r["others"].get("chunked", {}).get("fwdbwd_ms")
        mamba = r["others"].get("mamba_ssm", {}).get("fwdbwd_ms")
        checks = [("speed vs chunked", chunked is not None and chunked / best_fb["ms"] >= 5)]
        if shape in GPU_BAR_HBM_SHAPES:
            checks.append(("HBM fraction", frac >= 0.5))
        if mamba is not None:
            checks.append(("vs mamba_ssm", best_fb["ms"] <= 1.2 * mamba))
        failed = [w for w, ok in checks if not ok]
        rows.append({"shape": list(shape), "fwd_ms": best_f["ms"], "fwd_options": best_f["options"],
                     "hbm_floor_fwd_ms": floor, "fwd_fraction_of_hbm_floor": frac, "fwdbwd_ms": best_fb["ms"],
                     "fwdbwd_options": best_fb["options"], "chunked_fwdbwd_ms": chunked,
                     "speedup_vs_chunked": chunked / best_fb["ms"] if chunked else None,
                     "mamba_ssm_fwdbwd_ms": mamba, "mamba_ssm_fwd_ms": r["others"].get("mamba_ssm", {}).get("fwd_ms"),
                     "mamba_ssm_fwd_fraction_of_hbm_floor": (floor / r["others"]["mamba_ssm"]["fwd_ms"]
                                                             if r["others"].get("mamba_ssm", {}).get("fwd_ms")
                                                             else None),
                     "triton_over_mamba_ssm": best_fb["ms"] / mamba if mamba else None,
                     "bar": "PASS" if not failed else "FAIL (" + ", ".join(failed) + ")"})
    return rows


def one_line(error: str) -> str:
    """An error message fit for a table cell: its first line and its last (Triton puts the cause last)."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    return " ... ".join(dict.fromkeys([lines[0], lines[-1]])).replace("|", "/") if lines else ""


def report(data) -> str:
    md = lambda cells: "| " + " | ".join(map(str, cells)) + " |"  # noqa: E731
    us = lambda v: "-" if v is None else f"{v * 1e3:.1f}"  # noqa: E731
    lines = [f"# Triton selective scan: settings sweep and issue #7's bar ({data['gpu']})", "",
             f"`{data['command']}` on {data['date']}. torch {data['versions'].get('torch')}, triton "
             f"{data['versions'].get('triton')}. Device time from CUDA-graph replays (median of {data['rounds']} "
             f"rounds of {data['reps']} replays; inputs rotate over copies larger than the L2). Measured copy "
             f"bandwidth {data['copy_bytes_per_s'] / 1e9:.0f} GB/s (read + write), used for the HBM floor.", "",
             *([f"Machine: {data['gpu']}; host {m['cpu']}, {m['logical_cores']} logical cores, {m['memory_gb']} GB "
                f"RAM, {m['os']}, Python {m['python']}; git commit {m['git_commit']}.", ""]
               if (m := data.get("machine")) else []),
             *([f"mamba_ssm's timings come from `{data['others_from']['file']}` ({data['others_from']['date']}, "
                f"another run on an {data['gpu']}): `chunked`, timed in both runs, agrees within "
                f"{data['others_from']['chunked_max_deviation'] * 100:.1f} % at every shape.", ""]
               if data.get("others_from") else []),
             "## Bar (best settings per shape)", "",
             md(["shape (B, D, L, N, G)", "fwd us", "HBM floor us", "fwd % of floor", "fwd settings",
                 "fwd+bwd us", "fwd+bwd settings", "chunked fwd+bwd us", "speed-up", "mamba_ssm fwd / fwd+bwd us",
                 "mamba_ssm fwd % of floor", "triton / mamba_ssm (fwd+bwd)", "bar"]), "|---" * 13 + "|"]
    for r in data["bar"]:
        lines.append(md([tuple(r["shape"]), us(r["fwd_ms"]), us(r["hbm_floor_fwd_ms"]),
                         f"{100 * r['fwd_fraction_of_hbm_floor']:.0f}", describe(r["fwd_options"]), us(r["fwdbwd_ms"]),
                         describe(r["fwdbwd_options"]), us(r["chunked_fwdbwd_ms"]),
                         "-" if r["speedup_vs_chunked"] is None else f"{r['speedup_vs_chunked']:.1f}x",
                         f"{us(r['mamba_ssm_fwd_ms'])} / {us(r['mamba_ssm_fwdbwd_ms'])}",
                         "-" if r.get("mamba_ssm_fwd_fraction_of_hbm_floor") is None else
                         f"{100 * r['mamba_ssm_fwd_fraction_of_hbm_floor']:.0f}",
                         "-" if r["triton_over_mamba_ssm"] is None else f"{r['triton_over_mamba_ssm']:.2f}",
                         r["bar"]]))
    lines += ["", "The HBM-fraction part of the bar applies to " + ", ".join(map(str, GPU_BAR_HBM_SHAPES)) + ".",
              "", "## Every setting", ""]
    for r in data["shapes"]:
        lines += [f"### {tuple(r['shape'])}", "", md(["pass", "settings", "us", "max error vs chunked", "timing"]),
                  "|---" * 5 + "|"]
        for kind in ("forward", "fwdbwd"):
            for c in sorted(r[kind], key=lambda c: c.get("ms", math.inf)):
                lines.append(md([kind, describe(c["options"]), us(c.get("ms")),
                                 f"{c['max_error_vs_chunked']:.1e}" if "max_error_vs_chunked" in c else "-",
                                 c.get("timing") or one_line(c.get("error", ""))]))
        if r.get("profile_us_per_call"):
            lines.append(md(["profile", "kernel time per fwd+bwd (package defaults): " + ", ".join(
                f"{k} {v:.1f} us" for k, v in r["profile_us_per_call"].items()), "-", "-", "torch.profiler"]))
        for name, o in r["others"].items():
            lines.append(md([name + " (defaults)", "fwd / fwd+bwd", f"{us(o.get('fwd_ms'))} / {us(o.get('fwdbwd_ms'))}",
                             "-", ", ".join(o.get("timing", [])) or one_line(o.get("error", ""))]))
        lines.append("")
    return "\n".join(lines) + "\n"


def merge_others(data: dict, other_path: Path) -> None:
    """Adds another run's mamba_ssm timings to ``data`` (shapes matched), records where they came from and how far
    the ``chunked`` timings of the two runs differ (the check that the runs are comparable), recomputes the bar."""
    other = json.loads(other_path.read_text())
    theirs = {tuple(r["shape"]): r["others"] for r in other["shapes"]}
    deviation = 0.0
    for r in data["shapes"]:
        o = theirs.get(tuple(r["shape"]), {})
        if "mamba_ssm" in o and "fwd_ms" not in r["others"].get("mamba_ssm", {}):
            r["others"]["mamba_ssm"] = {**o["mamba_ssm"], "from": str(other_path)}
        mine, ref = r["others"].get("chunked", {}), o.get("chunked", {})
        for key in ("fwd_ms", "fwdbwd_ms"):
            if key in mine and key in ref:
                deviation = max(deviation, abs(mine[key] / ref[key] - 1))
    data["others_from"] = {"file": str(other_path), "date": other["date"], "chunked_max_deviation": deviation}
    data["bar"] = bar_rows(data["shapes"], data["copy_bytes_per_s"])


def copy_bandwidth(device) -> float:
    """Bytes per second (read + write) of a 1 GiB device-to-device copy, median of 10."""
    if device.type != "cuda":
        return 1e10
    src = torch.rand(2**28, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(11):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * 4 * src.numel() / statistics.median(times[1:])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default=None, help="comma-separated indices into scan.py's GPU shape list")
    p.add_argument("--reps", type=int, default=10, help="graph replays per round (default 10)")
    p.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported (default 5)")
    p.add_argument("--quick", action="store_true", help="tiny shapes and few settings: a check of the script")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--report-only", metavar="JSON", default=None, help="rewrite the .md of an earlier run's .json")
    p.add_argument("--others-from", metavar="JSON", default=None,
                   help="with --report-only: take mamba_ssm's timings from another run's .json where this one has none")
    args = p.parse_args()
    if args.report_only:
        path = Path(args.report_only)
        data = json.loads(path.read_text())
        if args.others_from:
            merge_others(data, Path(args.others_from))
            path.write_text(json.dumps(data, indent=1))
        path.with_suffix(".md").write_text(report(data))
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.quick:
        raise SystemExit("triton_tune.py needs a CUDA GPU (or --quick with TRITON_INTERPRET=1 to check the script)")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu-interpreter"
    suffix = re.sub(r"[^a-z0-9]+", "_", gpu.lower().replace("nvidia", "")).strip("_")
    shapes = SHAPES + GPU_EXTRA_SHAPES
    order = [int(i) for i in args.shapes.split(",")] if args.shapes else ORDER
    settings = {"forward": TWO_PASS + SINGLE_PASS, "backward": BACKWARD,
                "others": [b for b in ("chunked", "mamba_ssm") if b in list_backends(torch.empty(0, device=device))]}
    if args.quick:
        shapes, order = QUICK_SHAPES, range(len(QUICK_SHAPES))
        settings["forward"] = [dict(forward="two_pass", block_d=4, chunk_length=16, num_warps=2),
                               dict(forward="single_pass", block_t=16, num_warps=2)]
        settings["backward"] = [dict(block_d_backward=4, chunk_length=16, num_warps_backward=2, num_stages=2,
                                     num_stages_serial=3),
                                dict(backward="single_pass", chunk_length=16, num_warps_backward=2)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / f"triton_tune_{suffix}.log"
    log_file = log_path.open("w")

    def log(msg):
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    data = {"command": shlex.join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "gpu": gpu,
            "machine": machine_info(str(ROOT)), "versions": package_versions(), "reps": args.reps,
            "rounds": args.rounds, "copy_bytes_per_s": copy_bandwidth(device), "settings": settings, "shapes": []}
    log(f"{gpu}: copy bandwidth {data['copy_bytes_per_s'] / 1e9:.0f} GB/s; contenders besides triton: "
        f"{settings['others']}")
    timer = Timer(device, args.reps, args.rounds)
    for i in order:
        log(f"shape #{i} {shapes[i]}")
        data["shapes"].append(sweep_shape(shapes[i], timer, device, settings, log))
        data["bar"] = bar_rows(data["shapes"], data["copy_bytes_per_s"])
        (out / f"triton_tune_{suffix}.json").write_text(json.dumps(data, indent=1))  # after every shape: a run cut
        (out / f"triton_tune_{suffix}.md").write_text(report(data))  # short by a time limit keeps what it measured
    log("\n" + report(data).split("## Every setting")[0])


if __name__ == "__main__":
    main()
