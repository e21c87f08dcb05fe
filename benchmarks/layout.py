"""Slab-wise layout changes (``mambaseg.layers.layout``) against PyTorch's whole-tensor copies, side by side.

The 3D Mamba layers change layouts between ``(B, L, C)`` and ``(B, C, L)`` around every scan. This script times,
in one process and one run, the same code with ``SLAB_ELEMENTS`` at its default (slab-wise copies) and with
slabs larger than any tensor (one whole-tensor ``copy_``, what ``x.transpose(-1, -2).contiguous()`` does):

* the bare transpose at the first-stage shapes of SegMamba (192 = 2 d_inner channels, 64^3 tokens) and U-Mamba
  (64 channels, 128^3 tokens) for a 128^3 input;
* the U-Mamba ``Mamba`` block (32 channels, 128^3 tokens) and SegMamba's tri-oriented mixer (48 channels, 64^3
  tokens, 64 slices): forward (no_grad) and forward+backward.

Usage: ``python benchmarks/layout.py [--reps 3] [--out benchmarks/results]``; writes ``layout.md`` and
``layout.json``. Pin it for clean numbers, e.g. ``taskset -c 0 env OMP_NUM_THREADS=1 python benchmarks/layout.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
from pathlib import Path

import torch
from _common import timed  # benchmarks/ is on sys.path when this runs as a script
from _machine import machine_info, package_versions

ROOT = Path(__file__).resolve().parents[1]
WHOLE = 1 << 62  # slab size larger than any tensor: one whole-tensor copy_


def _cases(scale: int = 1):
    from mambaseg.blocks.mamba import Mamba
    from mambaseg.layers import transpose_contiguous
    from mambaseg.models.segmamba import TriOrientedMamba

    torch.manual_seed(0)
    cases = []
    for shape, what in (((1, 64**3 // scale, 192), "SegMamba stage 1 at 128^3 (in_proj output)"),
                        ((1, 128**3 // scale, 64), "U-Mamba stage 1 at 128^3 (in_proj output)"),
                        ((1, 64, 128**3 // scale), "U-Mamba stage 1 at 128^3 (scan output to out_proj)")):
        x = torch.randn(shape)
        cases.append((f"transpose {shape}", what, lambda x=x: transpose_contiguous(x), None))
    for module, length, channels, what in ((Mamba(32), 128**3 // scale, 32, "U-Mamba Mamba block, stage 1 at 128^3"),
                                           (TriOrientedMamba(48, nslices=64), 64**3 // scale, 48,
                                            "SegMamba tri-oriented mixer, stage 1 at 128^3")):
        x = torch.randn(1, length, channels, requires_grad=True)

        def forward(module=module, x=x):
            with torch.no_grad():
                module(x)

        def train(module=module, x=x):
            module(x).sum().backward()

        cases.append((f"{type(module).__name__} forward (1, {length}, {channels})", what, forward, None))
        cases.append((f"{type(module).__name__} forward+backward (1, {length}, {channels})", what, train,
                      lambda module=module, x=x: (module.zero_grad(set_to_none=True), setattr(x, "grad", None))))
    return cases


def main(argv=None) -> int:
    from mambaseg.layers import layout
    from mambaseg.training.trainer import memory_allocator

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--quick", action="store_true", help="sequences 512x shorter (a smoke test of the script)")
    args = parser.parse_args(argv)
    default = layout.SLAB_ELEMENTS
    rows = []
    for name, what, fn, setup in _cases(512 if args.quick else 1):
        row = {"case": name, "what": what}
        for label, slab in (("whole", WHOLE), ("slabs", default)):
            layout.SLAB_ELEMENTS = slab
            times = timed(fn, args.reps, torch.device("cpu"), setup)
            row[label] = {"min_ms": min(times) * 1e3, "median_ms": statistics.median(times) * 1e3}
        layout.SLAB_ELEMENTS = default
        row["speedup"] = row["whole"]["min_ms"] / row["slabs"]["min_ms"]
        rows.append(row)
        print(f"{name:55s} whole {row['whole']['min_ms']:9.1f} ms  slabs {row['slabs']['min_ms']:9.1f} ms  "
              f"{row['speedup']:.2f}x", flush=True)
    record = {"command": "python " + " ".join(shlex.quote(a) for a in [*sys.argv]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(str(ROOT)), "versions": package_versions(),
              "threads": torch.get_num_threads(), "allocator": memory_allocator(), "reps": args.reps,
              "slab_elements": default, "quick": args.quick, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "layout.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "layout.md").write_text(render(record))
    print(f"wrote {out / 'layout.md'}")
    return 0


def render(record: dict) -> str:
    m, v = record["machine"], record["versions"]
    lines = [
        "# Layout changes: slab-wise copies vs one whole-tensor copy", "",
        f"Command: `{record['command']}`  ", f"Date: {record['date']}", "",
        "## Machine",
        f"- CPU: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), {m['memory_gb']} GB RAM",
        f"- torch {v['torch']}, {record['threads']} CPU threads, C allocator {record['allocator']}, "
        f"Python {m['python']}, {m['os']}",
        f"- git commit: {m['git_commit']}", "",
        "## Method",
        f"- One process; for every case both variants in turn: `whole` (`SLAB_ELEMENTS` larger than any tensor: one "
        f"`copy_` of the transposed view, as `x.transpose(-1, -2).contiguous()`) and `slabs` (the default, "
        f"{record['slab_elements']} elements per slab). Everything else is the same code.",
        f"- One warm-up, then {record['reps']} repetitions; MINIMUM (MEDIAN) in ms; the speed-up uses the minima.",
        "- Forward: no_grad. Forward+backward: `module(x).sum().backward()`, gradients cleared between calls.", "",
        "## Results", "",
        "| case | what | whole ms | slabs ms | speed-up |", "|---|---|---|---|---|"]
    for r in record["rows"]:
        w, s = r["whole"], r["slabs"]
        lines.append(f"| {r['case']} | {r['what']} | {w['min_ms']:.1f} ({w['median_ms']:.1f}) | "
                     f"{s['min_ms']:.1f} ({s['median_ms']:.1f}) | {r['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
