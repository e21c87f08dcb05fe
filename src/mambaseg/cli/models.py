"""``mambaseg models``: every registered model with parameters, FLOPs (selective scan included), family, paper."""

from __future__ import annotations

from ..benchmark import count_flops, count_parameters
from ..models import create_model, list_models, model_info


def model_table(input_size: tuple, in_channels: int = 1, num_classes: int = 4, flops: bool = True,
                include_test: bool = False) -> list[dict]:
    """One row per registered model (its default configuration built with the given channels and classes)."""
    rows = []
    for name in list_models():
        if name.endswith("_test") and not include_test:
            continue
        info = model_info(name)
        dims = len(input_size)
        row = {"name": name, "family": info.family, "dims": "/".join(f"{d}D" for d in info.spatial_dims),
               "paper": info.paper, "params": None, "gflops": None, "scan_share": None}
        kwargs = {"in_channels": in_channels, "num_classes": num_classes}
        if dims not in info.spatial_dims:
            rows.append(row)
            continue
        if len(info.spatial_dims) > 1:
            kwargs["spatial_dims"] = dims
        try:
            model = create_model(name, **kwargs)
        except (ImportError, RuntimeError, ValueError, TypeError) as err:  # e.g. an optional package is missing
            row["error"] = f"not built: {type(err).__name__}: {err}"
            rows.append(row)
            continue
        row["params"] = count_parameters(model)
        if flops:
            try:
                counted = count_flops(model, (1, in_channels, *input_size))
            except (RuntimeError, ValueError) as err:  # e.g. a 7-stage nnU-Net at 64x64 reaches a 1x1 bottleneck
                row["error"] = f"FLOPs not counted at this input size: {type(err).__name__}: {err}"
            else:
                row["gflops"] = counted["total"] / 1e9
                row["scan_share"] = counted["scan"] / max(counted["total"], 1)
        rows.append(row)
    return rows


def print_models(input_size: tuple, in_channels: int, num_classes: int, flops: bool, include_test: bool) -> int:
    rows = model_table(input_size, in_channels, num_classes, flops, include_test)
    size = "x".join(str(s) for s in (1, in_channels, *input_size))
    print(f"models built with in_channels={in_channels}, num_classes={num_classes}; FLOPs of one forward at {size}")
    print("(torch flop_counter convention, 1 multiply-add = 2 FLOPs, plus 9*B*D*L*N per selective scan)\n")
    wn = max([len("model")] + [len(r["name"]) for r in rows]) + 2  # columns as wide as the longest entry
    wf = max([len("family")] + [len(r["family"]) for r in rows]) + 2
    header = f"{'model':<{wn}}{'family':<{wf}}{'dims':<7}{'params':>14}{'GFLOPs':>10}{'scan %':>8}  paper"
    print(header + "\n" + "-" * len(header))
    for r in rows:
        params = f"{r['params']:,}" if r["params"] is not None else "-"
        gflops = f"{r['gflops']:.2f}" if r["gflops"] is not None else "-"
        share = f"{100 * r['scan_share']:.1f}" if r["scan_share"] is not None else "-"
        print(f"{r['name']:<{wn}}{r['family']:<{wf}}{r['dims']:<7}{params:>14}{gflops:>10}{share:>8}  {r['paper']}")
        if "error" in r:
            print(f"{'':<{wn}}{r['error'][:140]}")
    return 0
