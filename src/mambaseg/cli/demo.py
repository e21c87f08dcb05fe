"""Operator demo: checks the chunked selective scan against the sequential specification, then times it.

Until the dataset-to-report workflow lands, ``mambaseg demo`` (and ``make demo``) shows the foundation working on
this machine: exactness (forward and every gradient against the reference) and speed at a Mamba-UNet-like size.
"""

from __future__ import annotations

import time

import torch

from ..ops import list_backends, selective_scan
from ..ops.scan_orders import get_scan_order


def _inputs(batch, dim, length, d_state, groups, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, length, generator=gen)
    delta = 0.1 * torch.randn(batch, dim, length, generator=gen)
    A = -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(dim, 1)  # S4D-real, as mamba_ssm initialises
    B = torch.randn(batch, groups, d_state, length, generator=gen)
    C = torch.randn(batch, groups, d_state, length, generator=gen)
    delta_bias = torch.log(torch.expm1(torch.full((dim,), 0.01)))  # softplus^-1(0.01)
    D = torch.ones(dim)
    return [u, delta, A, B, C], dict(D=D, delta_bias=delta_bias, delta_softplus=True)


def _run(backend, tensors, kwargs):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    start = time.perf_counter()
    out = selective_scan(*leaves, backend=backend, **kwargs)
    out.square().mean().backward()
    return out.detach(), [t.grad for t in leaves], time.perf_counter() - start


def run_demo(length: int = 4096, dim: int = 96, d_state: int = 16) -> int:
    torch.manual_seed(0)
    print(f"mambaseg operator demo | torch {torch.__version__} | {torch.get_num_threads()} threads")
    print(f"backends runnable on CPU here: {', '.join(list_backends(torch.zeros(1)))}")

    print("\n1) SS2D cross-scan of a 2x8x9x7 feature map (VMamba order, 4 directions) and its exact merge")
    order = get_scan_order("cross")
    x = torch.randn(2, 8, 9, 7)
    seq = order.flatten(x)
    print(f"   flatten {tuple(x.shape)} -> {tuple(seq.shape)}; merge(flatten(x)) == 4x: "
          f"{torch.equal(order.merge(seq, (9, 7)), 4 * x)}")

    print("\n2) chunked scan vs the sequential specification (B=2, D=16, L=1000, N=16, 4 groups)")
    tensors, kwargs = _inputs(2, 16, 1000, 16, 4)
    ref_out, ref_grads, _ = _run("reference", tensors, kwargs)
    out, grads, _ = _run("chunked", tensors, kwargs)
    names = ["u", "delta", "A", "B", "C"]
    worst = [("out", (out - ref_out).abs().max().item())]
    worst += [(f"d{n}", ((g - r).abs().max() / r.abs().max()).item()) for n, g, r in zip(names, grads, ref_grads)]
    print("   max error: " + ", ".join(f"{n} {e:.1e}" for n, e in worst) + " (gradients relative to their max)")

    print(f"\n3) forward+backward time at Mamba-UNet stage-1 size (B=1, D={dim}, L={length}, N={d_state})")
    tensors, kwargs = _inputs(1, dim, length, d_state, 1)
    times = {}
    for backend in ("chunked", "reference"):
        runs = 3 if backend == "chunked" else 1
        times[backend] = min(_run(backend, tensors, kwargs)[2] for _ in range(runs))
        print(f"   {backend:9s} {times[backend] * 1e3:8.1f} ms")
    print(f"   chunked is {times['reference'] / times['chunked']:.1f}x faster than the sequential specification")
    ok = all(e < 1e-3 for _, e in worst)
    print("\nresult: " + ("OK, the chunked scan matches the specification" if ok else "MISMATCH"))
    return 0 if ok else 1


def print_backends() -> int:
    probes = {"cpu": torch.zeros(1)}
    if torch.cuda.is_available():
        probes["cuda"] = torch.zeros(1, device="cuda")
    for device, probe in probes.items():
        print(f"{device}: {', '.join(list_backends(probe))}")
    return 0
