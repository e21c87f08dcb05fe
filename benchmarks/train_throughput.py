"""End-to-end training throughput (images/s) of 2D models, per selective-scan backend: issue #7's GPU comparison.

Usage (GPU): ``python benchmarks/train_throughput.py`` trains ``mamba_unet``, ``vm_unet``, ``swin_unet`` (the
Transformer baseline) and ``unet`` at batch 24, 224x224, 3 input channels, 4 classes, under bf16 autocast, each Mamba
model once per available CUDA scan backend (``triton``, ``chunked``, ``mamba_ssm`` where installed), and writes
``benchmarks/results/train_throughput_<device>.md`` and ``.json``. On CPU (``--device cpu``) it runs the same loop
in fp32, which is what the test uses with tiny models.

A step is AdamW (lr 1e-4) on the summed cross-entropy of every output against fixed random labels. Timing: ``--warmup``
untimed steps (Triton compiles its kernels in the first), then ``--repeats`` timed runs of ``--steps`` steps, each
ended by a device synchronisation; images/s = batch x steps / time, shown as BEST (MEDIAN) over the repeats.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shlex
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = "mamba_unet,vm_unet,swin_unet,unet"


def uses_scan(model: torch.nn.Module) -> bool:
    """True when the model holds a selective-scan mixer (the modules marked ``ssm_mixer``)."""
    return any(getattr(m, "ssm_mixer", False) for m in model.modules())


def measure(name: str, backend: str, args, device: torch.device) -> dict:
    """Images/s and peak memory of training ``name`` with the scan ``backend`` (see the module docstring)."""
    from _common import summed_cross_entropy, sync

    from mambaseg import create_model
    from mambaseg.benchmark import count_parameters
    from mambaseg.ops import use_backend

    torch.manual_seed(0)
    model = create_model(name, in_channels=args.in_channels, num_classes=args.num_classes).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, args.in_channels, args.size, args.size, device=device)
    target = torch.randint(0, args.num_classes, (args.batch, args.size, args.size), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = summed_cross_entropy(model(x), target)
        loss.backward()
        opt.step()

    with use_backend(backend):
        for _ in range(args.warmup):
            step()
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync(device)
            seconds.append(time.perf_counter() - t0)
    rates = [args.batch * args.steps / s for s in seconds]
    return {"images_per_s": {"best": max(rates), "median": statistics.median(rates), "all": rates},
            "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
            "params": count_parameters(model), "uses_scan": uses_scan(model)}


def write_report(path: Path, data: dict) -> None:
    """The markdown table: one row per (model, backend)."""
    a = data["settings"]
    lines = ["# Training throughput", "", f"Command: `{data['command']}`  ", f"Date: {data['date']}", "",
             f"- Device: {data['device_name']}; torch {data['versions']['torch']}, triton "
             f"{data['versions'].get('triton')}, mamba_ssm {data['versions'].get('mamba_ssm')}; git commit "
             f"{data['machine']['git_commit']}",
             f"- Batch {a['batch']}, {a['size']}x{a['size']}, {a['in_channels']} input channels, {a['num_classes']} "
             f"classes, autocast {a['amp']}, AdamW; {a['warmup']} warm-up steps, then {a['repeats']} timed runs of "
             f"{a['steps']} steps; images/s BEST (MEDIAN).", "",
             "| model | scan backend | params | images/s | peak memory MB |", "|---|---|---|---|---|"]
    for r in data["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['backend']} | error: {r['error'][:120]} | | |")
            continue
        ips, mem = r["images_per_s"], r["peak_memory_mb"]
        lines.append(f"| {r['model']} | {r['backend'] if r['uses_scan'] else '(no scan)'} | {r['params']:,} | "
                     f"{ips['best']:.1f} ({ips['median']:.1f}) | {'n/a' if mem is None else f'{mem:.0f}'} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--backends", default=None,
                   help="comma-separated scan backends for the Mamba models (default: every one that runs on the "
                        "device, except reference)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=4)
    p.add_argument("--amp", choices=["bf16", "fp16", "none"], default=None, help="default: bf16 on CUDA, none on CPU")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    for path in (str(ROOT / "src"), str(ROOT / "benchmarks")):
        if path not in sys.path:
            sys.path.insert(0, path)
    from _machine import machine_info, package_versions

    from mambaseg.ops import list_backends

    device = torch.device(args.device)
    args.amp = args.amp or ("bf16" if device.type == "cuda" else "none")
    backends = (args.backends.split(",") if args.backends else
                [b for b in list_backends(torch.empty(0, device=device)) if b != "reference"])
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    rows = []
    data = {"command": shlex.join(["python", "benchmarks/train_throughput.py", *sys.argv[1:]]),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "device_name": device_name,
            "machine": machine_info(str(ROOT)), "versions": package_versions(), "settings": vars(args), "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "train_throughput_" + re.sub(r"[^a-z0-9]+", "_", device_name.lower().replace("nvidia", "")).strip("_")
    for name in args.models.split(","):
        for backend in backends:
            try:
                res = measure(name, backend, args, device)
            except Exception as exc:  # one model or backend failing (OOM, missing kernel) must not stop the others
                traceback.print_exc()
                res = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
            rows.append({"model": name, "backend": backend, **res})
            print(f"{name:12s} {backend:10s} " + (res.get("error") or
                  f"{res['images_per_s']['best']:.1f} images/s"), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            write_report(out / f"{stem}.md", data)  # after every row: a run stopped by a time limit keeps its rows
            (out / f"{stem}.json").write_text(json.dumps(data, indent=1))
            if not res.get("uses_scan", True):
                break  # the backend does not matter for a model without a scan: measured once
    print(f"wrote {out / (stem + '.md')}")


if __name__ == "__main__":
    main()
