"""Efficiency of every registered 2D model: parameters, FLOPs (selective scan included), forward latency,
training-step time and peak memory, each model measured in its own fresh process.

Usage: ``python benchmarks/models.py [--models a,b] [--sizes 1x1x224x224,4x1x256x256] [--reps 3]``; writes
``benchmarks/results/models.md`` and ``models.json``. A training step is one SGD step (lr 0.01, momentum 0.9, as in
Mamba-UNet's recipe) on a cross-entropy loss against random labels; deep-supervision outputs are summed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from _common import peak_rss_bytes, summed_cross_entropy, timed  # benchmarks/ is on sys.path when this runs as a script

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = "1x1x224x224,4x1x224x224,4x1x256x256"
NUM_CLASSES = 4



def measure_child(spec: dict) -> dict:
    """In a fresh process: forward latency, training-step time and the peak extra RSS of one training step."""
    from mambaseg import create_model
    from mambaseg.benchmark import count_flops, count_parameters

    torch.manual_seed(0)
    size = spec["size"]
    model = create_model(spec["model"], in_channels=size[1], num_classes=NUM_CLASSES)
    x = torch.randn(*size)
    target = torch.randint(0, NUM_CLASSES, (size[0], *size[2:]))
    flops = count_flops(model, size)
    model.eval()
    with torch.no_grad():
        fwd = timed(lambda: model(x), spec["reps"], "cpu")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        summed_cross_entropy(model(x), target).backward()
        opt.step()

    step()  # warm-up: optimizer state and scratch buffers exist before the memory is measured
    before = peak_rss_bytes(reset=True)
    step()
    peak_mb = (peak_rss_bytes() - before) / 2**20
    train = timed(step, spec["reps"], "cpu")
    return {"params": count_parameters(model), "gflops": flops["total"] / 1e9, "scan_share": flops["scan"] /
            max(flops["total"], 1), "fwd_ms": _stats(fwd), "train_ms": _stats(train), "peak_train_mb": peak_mb}


def _stats(seconds):
    ms = [t * 1e3 for t in seconds]
    return {"min": min(ms), "median": statistics.median(ms), "all": ms}


def run_case(model: str, size: tuple, reps: int) -> dict:
    spec = json.dumps({"model": model, "size": list(size), "reps": reps})
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", spec], capture_output=True,
                          text=True, cwd=ROOT)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_report(path: Path, data: dict) -> None:
    m = data["machine"]
    lines = [f"# Model efficiency on {data['device']}", "",
             f"Command: `{data['command']}`  ", f"Date: {data['date']}", "", "## Machine",
             f"- CPU: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), "
             f"{m['memory_gb']} GB RAM",
             f"- torch {data['versions']['torch']}, {data['threads']} threads, Python {m['python']}, {m['os']}",
             f"- git commit: {m['git_commit']}", "", "## Method",
             f"- Each (model, input size) in a fresh process; models built with `create_model(name, in_channels=C, "
             f"num_classes={NUM_CLASSES})` (the registered default configuration).",
             f"- Times: one warm-up, then {data['reps']} repetitions; MINIMUM (MEDIAN) in ms. Forward: eval mode, "
             f"no_grad. Training step: SGD (lr 0.01, momentum 0.9, wd 1e-4), cross-entropy on random labels "
             f"(deep-supervision outputs summed), zero_grad + forward + backward + step.",
             "- Peak memory: peak RSS during one training step after a warm-up step, minus RSS before it.",
             "- FLOPs: one forward, torch flop_counter convention (1 multiply-add = 2 FLOPs) plus 9 B D L N per "
             "selective scan (mambaseg.benchmark.count_flops); papers using fvcore/thop report about half.", ""]
    for size in data["sizes"]:
        label = "x".join(map(str, size))
        lines += [f"## Input {label}", "",
                  "| model | params | GFLOPs | scan % of FLOPs | forward ms | train step ms | peak train MB |",
                  "|---|---|---|---|---|---|---|"]
        for row in data["rows"]:
            r = row["results"].get(label, {})
            if "error" in r:
                lines.append(f"| {row['model']} | error: {r['error'][:80]} | | | | | |")
                continue
            lines.append(f"| {row['model']} | {r['params']:,} | {r['gflops']:.2f} | {100 * r['scan_share']:.1f} | "
                         f"{r['fwd_ms']['min']:.0f} ({r['fwd_ms']['median']:.0f}) | "
                         f"{r['train_ms']['min']:.0f} ({r['train_ms']['median']:.0f}) | {r['peak_train_mb']:.0f} |")
        lines.append("")
    lines += _ratio_lines(data)
    path.write_text("\n".join(lines) + "\n")


def _ratio_lines(data: dict) -> list:
    """The project's bar: Mamba-UNet's training step vs the Swin-UNet baseline at 4x1x224x224 (<= 3x)."""
    results = {row["model"]: row["results"].get("4x1x224x224", {}) for row in data["rows"]}
    a, b = results.get("mamba_unet", {}), results.get("swin_unet", {})
    if "train_ms" not in a or "train_ms" not in b:
        return ["Bar (Mamba-UNet train step <= 3x Swin-UNet's at 4x1x224x224): not measured in this run.", ""]
    ratio = a["train_ms"]["min"] / b["train_ms"]["min"]
    verdict = "PASS" if ratio <= 3 else "FAIL"
    return [f"Bar: Mamba-UNet training step / Swin-UNet training step at 4x1x224x224 = {ratio:.2f}x "
            f"(target <= 3x): {verdict}.", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=None, help="comma-separated names (default: every 2D model)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated BxCxHxW")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    if args.child:
        print(json.dumps(measure_child(json.loads(args.child))))
        return
    from _machine import machine_info, package_versions

    from mambaseg import list_models, model_info

    names = args.models.split(",") if args.models else [
        n for n in list_models() if not n.endswith("_test") and 2 in model_info(n).spatial_dims]
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rows = []
    for name in names:
        row = {"model": name, "results": {}}
        for size in sizes:
            label = "x".join(map(str, size))
            row["results"][label] = res = run_case(name, size, args.reps)
            shown = res.get("error") or f"train {res['train_ms']['min']:.0f} ms, fwd {res['fwd_ms']['min']:.0f} ms"
            print(f"{name:22s} {label:14s} {shown}", flush=True)
        rows.append(row)
    data = {"command": shlex.join(["python", "benchmarks/models.py", *sys.argv[1:]]),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "device": "cpu",
            "machine": machine_info(str(ROOT)), "versions": package_versions(), "threads": torch.get_num_threads(),
            "reps": args.reps, "sizes": [list(s) for s in sizes], "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_report(out / "models.md", data)
    (out / "models.json").write_text(json.dumps(data, indent=1))
    print(f"wrote {out / 'models.md'}")


if __name__ == "__main__":
    main()
