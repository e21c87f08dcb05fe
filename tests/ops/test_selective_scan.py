"""Every selective-scan backend against the sequential specification and against a float64 run of it.

Tolerances are mamba_ssm's own (tests/ops/test_selective_scan.py of state-spaces/mamba): fp32 out/state
rtol 6e-4 atol 2e-3; du x2; ddelta (5x rtol, 10x atol); dA (1e-3, 5e-3 -> DESIGN.md rounds to 1e-2); dB, dC as out;
dD, dz, ddelta_bias (1e-3, 2e-3). Half precision: fp16 (3e-3, 5e-3), bf16 (3e-2, 5e-2).
"""

from __future__ import annotations

import functools

import pytest
import torch

from mambaseg.ops import list_backends, selective_scan
from mambaseg.ops._chunked import selective_scan_chunked
from mambaseg.ops._numba import numba_available
from mambaseg.ops.selective_scan import resolve_backend

TOL = {  # name -> (rtol, atol), fp32
    "out": (6e-4, 2e-3), "last": (6e-4, 2e-3), "u": (1.2e-3, 4e-3), "delta": (3e-3, 2e-2), "A": (1e-3, 1e-2),
    "B": (6e-4, 2e-3), "C": (6e-4, 2e-3), "D": (1e-3, 2e-3), "z": (1e-3, 2e-3), "delta_bias": (1e-3, 2e-3),
}
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
CPU_BACKENDS = [b for b in list_backends(torch.zeros(1)) if b not in ("reference", "triton")]  # interpreter: too slow
#: On a GPU machine the same grid also runs our backends that take CUDA tensors (chunked, triton) against the
#: reference on CPU: issue #7's "full M1 test grid on a GPU". mamba_ssm is left out: its CUDA op does not propagate
#: the gradient of the last state, which these tests check.
CUDA_BACKENDS = ([b for b in list_backends(torch.zeros(1, device="cuda")) if b not in ("reference", "mamba_ssm")]
                 if torch.cuda.is_available() else [])
BACKENDS = [pytest.param(b, "cpu", id=b) for b in CPU_BACKENDS] + [
    pytest.param(b, "cuda", id=f"{b}-cuda") for b in CUDA_BACKENDS]


def make_inputs(batch, dim, length, d_state, groups, dtype=torch.float32, seed=0, strong_decay=False):
    """mamba_ssm's test distribution. ``groups``: None = shared (B, N, L), 0 = fixed (D, N), G = (B, G, N, L)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g)

    u, z = rnd(batch, dim, length), rnd(batch, dim, length)
    delta = 0.5 * torch.rand(batch, dim, length, generator=g)
    A = -0.5 * torch.rand(dim, d_state, generator=g)
    if strong_decay:  # softplus(delta + bias) in [~4, ~10], A in S4D-real range: decays down to exp(-160)
        delta, A = 4 + 6 * torch.rand(batch, dim, length, generator=g), -torch.arange(1.0, d_state + 1).repeat(dim, 1)
    if groups is None:
        bc_shape = (batch, d_state, length)
    elif groups == 0:
        bc_shape = (dim, d_state)
    else:
        bc_shape = (batch, groups, d_state, length)
    B, C = rnd(*bc_shape), rnd(*bc_shape)
    D, delta_bias = rnd(dim), 0.5 * torch.rand(dim, generator=g)
    return {n: t.to(dtype) for n, t in zip(NAMES, (u, delta, A, B, C, D, z, delta_bias))}


def run(backend, inputs, grad_seed=1, dtype=None, softplus=True, device="cpu", **chunk_options):
    """Forward + backward on ``device``; returns out, last state and the gradient of every input (a dict, on CPU).

    With ``chunk_options`` (chunk_length, slab_budget_bytes) the chunked backend is called directly.
    """
    leaves = {n: (t.to(dtype) if dtype else t).detach().to(device).requires_grad_() for n, t in inputs.items()}
    if chunk_options:
        fn = functools.partial(selective_scan_chunked, **chunk_options)
    else:
        fn = functools.partial(selective_scan, backend=backend)
    out, last = fn(*(leaves[n] for n in NAMES[:5]), D=leaves["D"], z=leaves["z"], delta_bias=leaves.get("delta_bias"),
                   delta_softplus=softplus, return_last_state=True)
    gen = torch.Generator().manual_seed(grad_seed)
    g_out = torch.randn(out.shape, generator=gen).to(device, out.dtype)
    g_last = torch.randn(last.shape, generator=gen).to(device, last.dtype)
    torch.autograd.backward([out, last], [g_out, g_last])
    res = {"out": out.detach(), "last": last.detach()}
    res.update({n: t.grad if t.grad is not None else torch.zeros_like(t) for n, t in leaves.items()})
    return {n: t.cpu() for n, t in res.items()}


def assert_close(got, want, scale=1.0, what=""):
    for name, (rtol, atol) in TOL.items():
        g, w = got[name].double(), want[name].double()
        assert torch.isfinite(g).all(), f"{what}: non-finite {name}"
        torch.testing.assert_close(g, w, rtol=rtol * scale, atol=atol * scale,
                                   msg=lambda m, name=name: f"{what} {name}: {m}")


GRID = [  # (batch, dim, length, d_state, groups)
    (2, 4, 1, 16, 1),
    (2, 4, 37, 16, 2),  # L not a multiple of any chunk length
    (2, 8, 200, 1, 4),
    (2, 8, 130, 16, 4),
    (1, 6, 70, 16, None),  # shared B/C
    (2, 4, 50, 8, 0),  # fixed (time-invariant) B/C
    (2, 4, 1000, 16, 1),
]


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("shape", GRID, ids=lambda s: "B{}D{}L{}N{}G{}".format(*s))
def test_backend_matches_reference_and_float64(backend, device, shape):
    inputs = make_inputs(*shape)
    want32 = run("reference", inputs)
    want64 = run("reference", inputs, dtype=torch.float64)
    got = run(backend, inputs, device=device)
    assert_close(got, want32, what=f"{backend} vs reference fp32")
    assert_close(got, want64, what=f"{backend} vs reference fp64")
    assert_close(want32, want64, what="reference fp32 vs fp64")


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("softplus, with_bias", [(False, True), (False, False), (True, False)])
def test_softplus_and_bias_toggles(softplus, with_bias, backend, device):
    """delta_bias and softplus are folded into the backends' Functions: every combination, on a padded length."""
    inputs = make_inputs(2, 8, 45, 16, 2)
    if not with_bias:
        del inputs["delta_bias"]
    got = run(backend, inputs, softplus=softplus, device=device,
              **({"chunk_length": 16} if backend == "chunked" else {}))
    want = run("reference", inputs, dtype=torch.float64, softplus=softplus)
    for res in (got, want):
        res.setdefault("delta_bias", torch.zeros(8))
    assert_close(got, want, what=f"softplus={softplus} bias={with_bias}")


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_mamba_test_shape_long_sequence(backend, device):
    """mamba_ssm's own test case at its longest sequence: batch 2, dim 4, d_state 8, 2 groups, L = 4096."""
    inputs = make_inputs(2, 4, 4096, 8, 2)
    assert_close(run(backend, inputs, device=device), run("reference", inputs, dtype=torch.float64), what="L=4096")


@pytest.mark.parametrize("d_state", [1, 4], ids=["N1-channel-major", "N4-channel-last"])
@pytest.mark.parametrize("chunk_length, budget", [(1, 2**30), (7, 1), (16, 4096), (256, 2**30)])
def test_chunk_and_slab_settings_do_not_change_results(chunk_length, budget, d_state):
    """Tiny slab budgets force one chunk per slab (slabs inside a group row, the last one padded); T = 1 and T > L
    are edge cases; both slab layouts."""
    inputs = make_inputs(2, 8, 100, d_state, 2)
    got = run("chunked", inputs, chunk_length=chunk_length, slab_budget_bytes=budget)
    assert_close(got, run("reference", inputs, dtype=torch.float64), what=f"T={chunk_length} budget={budget}")


def test_interleaved_calls_share_the_workspace_safely():
    """Two chunked scans forward, then their backwards in reverse order (as two layers of a network): the
    per-thread workspace is reused by every call, so nothing a backward needs may live in it between calls."""
    first, second = make_inputs(2, 8, 100, 4, 2, seed=1), make_inputs(1, 16, 300, 16, None, seed=2)
    want = [run("chunked", first, chunk_length=8), run("chunked", second, chunk_length=16)]
    leaves = [{n: t.detach().clone().requires_grad_() for n, t in x.items()} for x in (first, second)]
    outs = [selective_scan_chunked(*(x[n] for n in NAMES[:5]), D=x["D"], z=x["z"], delta_bias=x["delta_bias"],
                                   delta_softplus=True, return_last_state=True, chunk_length=T)
            for x, T in zip(leaves, (8, 16))]
    for out, last in reversed(outs):
        gen = torch.Generator().manual_seed(1)  # the gradients run() uses
        torch.autograd.backward([out, last], [torch.randn(out.shape, generator=gen),
                                              torch.randn(last.shape, generator=gen)])
    for x, (out, _), w in zip(leaves, outs, want):
        torch.testing.assert_close(out.detach(), w["out"], rtol=0, atol=0)
        for n in NAMES:
            torch.testing.assert_close(x[n].grad, w[n], rtol=0, atol=0, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_strong_decay_stays_finite_and_exact(backend, device):
    inputs = make_inputs(2, 4, 512, 16, 1, strong_decay=True)
    got = run(backend, inputs, device=device)
    assert all(torch.isfinite(t).all() for t in got.values())
    assert_close(got, run("reference", inputs, dtype=torch.float64), what="strong decay")


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype, rtol, atol", [(torch.float16, 3e-3, 5e-3), (torch.bfloat16, 3e-2, 5e-2)])
def test_half_precision_inputs_accumulate_in_fp32(dtype, rtol, atol, backend, device):
    inputs = {n: t.to(device, dtype) for n, t in make_inputs(2, 8, 300, 16, 2).items()}
    leaves = [inputs[n] for n in NAMES[:5]]
    kw = dict(D=inputs["D"], z=inputs["z"], delta_bias=inputs["delta_bias"], delta_softplus=True)
    out = selective_scan(*leaves, backend=backend, **kw)
    assert out.dtype == dtype
    # the same (already rounded) inputs in float64: the only error left is the output rounding and fp32 sums
    want = selective_scan(*(t.cpu().double() for t in leaves), backend="reference",
                          **{k: (v.cpu().double() if torch.is_tensor(v) else v) for k, v in kw.items()})
    torch.testing.assert_close(out.cpu().double(), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_no_full_size_tensor_is_saved_for_backward(backend, device):
    batch, dim, length, d_state = 1, 16, 1024, 16
    inputs = make_inputs(batch, dim, length, d_state, 1)
    leaves = [inputs[n].to(device).requires_grad_() for n in NAMES[:5]]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = selective_scan(*leaves, delta_softplus=True, backend=backend)
    assert max(saved) < batch * dim * length * d_state / 8, f"largest saved tensor has {max(saved)} elements"
    out.sum().backward()


def test_auto_uses_the_fused_cpu_kernel_when_numba_imports_and_errors_are_clear():
    inputs = make_inputs(1, 4, 10, 3, 1)
    assert resolve_backend("auto", inputs["u"]) == ("numba" if numba_available() else "chunked")
    args = [inputs[n] for n in NAMES[:5]]
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        selective_scan(*args, backend="nope")
    with pytest.raises(RuntimeError, match="not available"):
        selective_scan(*args, backend="mamba_ssm")
    with pytest.raises(ValueError, match="argument 'A'.*expected \\(dim, d_state\\)"):
        selective_scan(args[0], args[1], args[2].T, *args[3:])
    with pytest.raises(ValueError, match="argument 'B'.*groups"):
        selective_scan(*args[:3], torch.randn(1, 3, 3, 10), args[4])
    with pytest.raises(ValueError, match="argument 'delta'"):
        selective_scan(args[0], args[1][..., :5], *args[2:])
    with pytest.raises(ValueError, match="argument 'D'"):
        selective_scan(*args, D=torch.ones(5))


@pytest.mark.parametrize("rows, nc, width", [(1, 37, 128), (2, 37, 1)], ids=["step-loop", "doubling"])
def test_chunk_linking_scan_matches_the_recurrence(rows, nc, width):
    """Both ways of linking chunks (one step per chunk where rows * width >= 3 nc, log-depth doubling below) against
    the recurrence E_c = decay_c E_{c-1} + x_c written out, in float64."""
    from mambaseg.ops._chunked import _scan_chunks

    gen = torch.Generator().manual_seed(0)
    decay, x = torch.rand(rows, nc, 1, width, generator=gen, dtype=torch.float64), torch.randn(
        rows, nc, 1, width, generator=gen, dtype=torch.float64)
    want, e = [], torch.zeros_like(x[:, 0])
    for c in range(nc):
        e = decay[:, c] * e + x[:, c]
        want.append(e)
    torch.testing.assert_close(_scan_chunks(decay, x), torch.stack(want, 1))


@pytest.mark.parametrize("dims", [(1,), (4,), (1, 2), (1, 2, 3)])
def test_memory_order_sum_matches_torch_sum_on_permuted_views(dims):
    """The chunked backend sums step-major views of channel-major slabs in memory order; any view, any axes."""
    from mambaseg.ops._chunked import _sum

    base = torch.randn(2, 5, 1, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    view = base.permute(0, 4, 3, 2, 1)  # (2, 3, 7, 1, 5): how a channel-major slab is seen step-major
    torch.testing.assert_close(_sum(view, dims), view.sum(dims))


@pytest.mark.parametrize("length", [24, 21])
def test_slab_outputs_land_in_place_and_padding_is_dropped(length):
    """Step-major slab values (bg, T, nc, c) written into a channel-major (bg, c, L) result: step s0 + c T + t of
    channel p gets values[:, t, c, p]; steps past L (padding of the last chunk) are dropped, nothing else changes."""
    from mambaseg.ops._chunked import _put_steps_

    T, nc, s0 = 4, 3, 8
    values = torch.randn(2, T, nc, 5, generator=torch.Generator().manual_seed(0))
    out = torch.full((2, 5, length), -1.0)
    _put_steps_(out, s0, values, length)
    want = torch.full((2, 5, length), -1.0)
    for c in range(nc):
        for t in range(T):
            if s0 + c * T + t < length:
                want[:, :, s0 + c * T + t] = values[:, t, c]
    torch.testing.assert_close(out, want, rtol=0, atol=0)


@pytest.mark.parametrize("d_state", [1, 4])
def test_chunked_scan_with_fresh_buffers_as_on_a_gpu(monkeypatch, d_state):
    """On a GPU the chunked backend takes fresh tensors instead of the per-thread CPU workspace: the same code path,
    forced here on the CPU, must give the same results (both slab layouts, padded last slab)."""
    import mambaseg.ops._chunked as chunked

    inputs = make_inputs(2, 8, 100, d_state, 2)
    want = run("chunked", inputs, chunk_length=16, slab_budget_bytes=4096)
    monkeypatch.setattr(chunked, "_workspace", lambda like, shapes: [torch.full(s, float("nan")) for s in shapes])
    got = run("chunked", inputs, chunk_length=16, slab_budget_bytes=4096)
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=lambda m, n=name: f"{n}: {m}")
