"""The Triton selective scan against the sequential specification, on CPU through Triton's interpreter.

The kernels run under Triton's interpreter (numpy) for CPU tensors, so shapes are tiny; the chunk length is set
below L so that the carried state (forward) and the carried adjoint (backward) are exercised, and L is not a
multiple of it. Tolerances (fp32): rtol 3e-4, atol 1e-3 for the output, the last state and all eight gradients
(tighter than mamba_ssm's own, see tests/ops/test_selective_scan.py). The GPU path is checked by compiling every
kernel for sm_90 (no GPU needed) and, when CUDA is present, by running it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest
import torch

if "triton" not in sys.modules and not torch.cuda.is_available():
    # Triton wraps its own standard library (tl.zeros, tl.sigmoid...) for the interpreter only when
    # TRITON_INTERPRET=1 at its first import; set it for that import alone, so that the other test files do not see
    # the Triton backend as available on CPU (the fixture below turns it on for each test here).
    _previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton  # noqa: F401
    except ImportError:
        pass
    finally:
        if _previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = _previous

pytest.importorskip("triton", reason="the Triton backend needs the triton package (pip install triton)")

from mambaseg.ops import _triton, selective_scan  # noqa: E402
from mambaseg.ops._triton import _kernels, selective_scan_triton, triton_available, triton_mode  # noqa: E402

INTERPRETED = triton_mode() == "interpret"
needs_interpreter = pytest.mark.skipif(
    not INTERPRETED, reason="triton was imported in compiled mode before this module (CUDA present, or another "
    "import came first): these tests run in a subprocess instead (test_interpreter_tests_in_a_subprocess)")

RTOL, ATOL = 3e-4, 1e-3
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


def make_inputs(batch, dim, length, d_state, groups, seed=0, strong_decay=False):
    """mamba_ssm's test distribution. ``groups``: None = shared (B, N, L), 0 = fixed (D, N), G = (B, G, N, L)."""
    g = torch.Generator().manual_seed(seed)
    u, z = torch.randn(batch, dim, length, generator=g), torch.randn(batch, dim, length, generator=g)
    delta = 0.5 * torch.rand(batch, dim, length, generator=g)
    A = -0.5 * torch.rand(dim, d_state, generator=g)
    if strong_decay:  # softplus(delta + bias) in [~4, ~10], S4D-real A: decays down to exp(-160) per step
        delta, A = 4 + 6 * torch.rand(batch, dim, length, generator=g), -torch.arange(1.0, d_state + 1).repeat(dim, 1)
    bc_shape = {None: (batch, d_state, length), 0: (dim, d_state)}.get(groups, (batch, groups, d_state, length))
    B, C = torch.randn(*bc_shape, generator=g), torch.randn(*bc_shape, generator=g)
    D, delta_bias = torch.randn(dim, generator=g), 0.5 * torch.rand(dim, generator=g)
    return dict(zip(NAMES, (u, delta, A, B, C, D, z, delta_bias)))


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    """Triton's CPU interpreter on for each test only (left on, it would make ``triton_available`` true on CPU
    for the other test files). The kernels for CPU tensors are wrapped for the interpreter whatever the variable
    says when they are first used (see ``_kernels``), so import order does not matter."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def run(fn, inputs, softplus=True, **kwargs):
    """Forward + backward with random output/last-state gradients; returns outputs and every input's gradient."""
    leaves = {n: t.detach().clone().requires_grad_() for n, t in inputs.items()}
    out, last = fn(*(leaves[n] for n in NAMES[:5]), D=leaves.get("D"), z=leaves.get("z"),
                   delta_bias=leaves.get("delta_bias"), delta_softplus=softplus, return_last_state=True, **kwargs)
    gen = torch.Generator().manual_seed(1)
    g_out, g_last = (torch.randn(t.shape, generator=gen).to(t.device, t.dtype) for t in (out, last))
    torch.autograd.backward([out, last], [g_out, g_last])
    res = {"out": out.detach(), "last": last.detach()}
    res.update({n: t.grad for n, t in leaves.items()})
    return {n: t.cpu() for n, t in res.items()}


def reference(*args, **kwargs):
    return selective_scan(*args, backend="reference", **kwargs)


def assert_matches(got, want, rtol=RTOL, atol=ATOL, what=""):
    assert set(got) == set(want)
    for name in want:
        assert got[name] is not None, f"{what}: no gradient for {name}"
        assert got[name].dtype == want[name].dtype, f"{what}: {name} has dtype {got[name].dtype}"
        torch.testing.assert_close(got[name].double(), want[name].double(), rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f"{what} {name}: {m}")


CASES = {  # id -> (batch, dim, length, d_state, groups (None shared, 0 fixed), chunk_length, block_d, options)
    "grouped_G2_L37_T16": (2, 4, 37, 4, 2, 16, 16, {}),
    "shared_N1_L40_T16": (1, 6, 40, 1, None, 16, 16, {}),
    "fixed_L33_T16": (2, 4, 33, 4, 0, 16, 16, {}),
    "grouped_G1_D8_L70_T32_blocks3": (1, 8, 70, 4, 1, 32, 4, {}),  # 2 channel blocks per group, 3 chunks
    "grouped_G2_D6_blocks2_masked": (1, 6, 21, 4, 2, 16, 2, {}),  # 3 channels per group in blocks of 2
    # the carry pass in its own tile: 6 channels per group in carry blocks of 4 (masked), gradient blocks of 2
    "grouped_G2_D12_carry_blocks_differ": (1, 12, 70, 4, 2, 16, 2, {"block_d_carry": 4}),
    # software-pipelined loops: the same results (the interpreter runs the loops as written; the GPU test and the
    # sm_90 compile check cover the pipelined code)
    "pipelined_G2_D12_L70": (1, 12, 70, 4, 2, 16, 2, {"launch": {"num_stages": 2, "num_stages_serial": 3}}),
    "plain_no_D_z_bias_softplus": (1, 4, 20, 4, 1, 16, 16, {"drop": ("D", "z", "delta_bias"), "softplus": False}),
    "bias_without_softplus": (1, 4, 18, 4, None, 16, 16, {"drop": ("z",), "softplus": False}),
    "single_step": (1, 2, 1, 4, 1, None, 16, {}),
}


@needs_interpreter
@pytest.mark.parametrize("forward, backward", [("two_pass", "chunk_parallel"), ("single_pass", "chunk_parallel"),
                                               ("single_pass", "single_pass")])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference_output_state_and_all_gradients(case, forward, backward):
    """Both forward and both backward kernels; the single-pass forward in tiles of 16 steps, so a tile ends inside,
    at and past a chunk."""
    batch, dim, length, d_state, groups, chunk, block_d, options = CASES[case]
    inputs = make_inputs(batch, dim, length, d_state, groups)
    for name in options.get("drop", ()):
        del inputs[name]
    softplus = options.get("softplus", True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        got = run(selective_scan_triton, inputs, softplus, chunk_length=chunk, block_d=block_d,
                  block_d_backward=block_d, block_d_carry=options.get("block_d_carry", block_d), forward=forward,
                  block_t=16, backward=backward, **options.get("launch", {}))
    n_chunks = -(-length // (chunk or 16))
    assert max(saved) == max(max(t.numel() for t in inputs.values()), batch * dim * n_chunks * d_state)
    assert_matches(got, run(reference, inputs, softplus), what=case)


@needs_interpreter
@pytest.mark.parametrize("block_t, chunk", [(32, 16), (64, 16)])
def test_single_pass_tile_spanning_several_chunks(block_t, chunk):
    """Forward tiles of 2 and 4 chunks (the GPU default: 128-step tiles, 64-step chunks): every chunk start inside
    a tile is saved for the backward, and the last tile runs past L = 70."""
    inputs = make_inputs(2, 4, 70, 4, 2)
    got = run(selective_scan_triton, inputs, chunk_length=chunk, forward="single_pass", block_t=block_t)
    assert_matches(got, run(reference, inputs), what=f"block_t={block_t} chunk={chunk}")


def combine_by_loop(local, sumdelta, A, init, reverse):
    """The chunk combine's specification, one chunk after another in float64."""
    batch, dim, n_chunks, n_state = local.shape
    out = torch.zeros(local.shape, dtype=torch.float64)
    s = init.double() if init is not None else torch.zeros(batch, dim, n_state, dtype=torch.float64)
    order = range(n_chunks - 1, -1, -1) if reverse else range(n_chunks)
    for step, c in enumerate(order):
        out[:, :, c] = s
        if step < n_chunks - 1:
            s = torch.exp(A.double() * sumdelta[:, :, c, None].double()) * s + local[:, :, c].double()
    return out


def check_combine(monkeypatch, reverse, block_c, n_chunks, device="cpu", stages=1, dim=5, n_state=3):
    """The combine, launched as the scan launches it with ``COMBINE_BLOCK_C = block_c``, against the loop."""
    monkeypatch.setattr(_triton, "COMBINE_BLOCK_C", block_c)
    g = torch.Generator().manual_seed(3)
    batch = 2
    local = torch.randn(batch, dim, n_chunks, n_state, generator=g)
    sumdelta = 4 * torch.rand(batch, dim, n_chunks, generator=g)
    A = -torch.rand(dim, n_state, generator=g)
    init = torch.randn(batch, dim, n_state, generator=g) if reverse else None
    launch = types.SimpleNamespace(batch=batch, dim=dim, n_state=n_state, n_chunks=n_chunks,
                                   kernels=_kernels(device == "cpu"), stages_serial=stages)
    on = [t.to(device) if t is not None else None for t in (local, sumdelta, A, init)]
    got = _triton._Launch.combine(launch, *on, reverse)
    tol = 1e-5 if device == "cpu" else 1e-4  # the GPU's exp2 is the approximate MUFU.EX2 (2 ulp)
    torch.testing.assert_close(got.double().cpu(), combine_by_loop(local, sumdelta, A, init, reverse), rtol=tol,
                               atol=tol)


@needs_interpreter
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("block_c, n_chunks, dim, n_state", [(2, 8, 5, 3), (4, 9, 5, 3), (128, 7, 5, 3),
                                                              (128, 2, 5, 3), (16, 40, 48, 16)])
def test_chunk_combine_matches_a_loop_over_chunks(monkeypatch, reverse, block_c, n_chunks, dim, n_state):
    """The combine scans the chunk axis in tiles of ``block_c`` links with the state carried between tiles: 7 links
    in tiles of 2 (the last one cut short), 8 in 2 full tiles of 4, one short tile of 128, a single link; 5 channels
    x 3 states = 15 pairs fill one program's pair axis unevenly (masked); 48 x 16 pairs at 64 per program take 12
    programs along the grid's pair axis, over 3 tiles of 16 (the last cut short)."""
    check_combine(monkeypatch, reverse, block_c, n_chunks, dim=dim, n_state=n_state)


@needs_interpreter
def test_scan_with_the_combine_in_tiles_of_two_chunks(monkeypatch):
    """Forward and backward through combines that carry their state over tiles (5 chunks: 4 links in 2 tiles)."""
    monkeypatch.setattr(_triton, "COMBINE_BLOCK_C", 2)
    inputs = make_inputs(1, 4, 70, 4, 2)
    got = run(selective_scan_triton, inputs, chunk_length=16, forward="two_pass")
    assert_matches(got, run(reference, inputs), what="combine tiles of 2")


@needs_interpreter
def test_mixed_layouts_shared_B_and_grouped_C():
    inputs = make_inputs(2, 4, 19, 4, 2)
    inputs["B"] = inputs["B"][:, 0].contiguous()  # (batch, N, L), read by both groups; its gradient sums them
    assert_matches(run(selective_scan_triton, inputs, chunk_length=16), run(reference, inputs), what="mixed")


@needs_interpreter
@pytest.mark.parametrize("backward", ["chunk_parallel", "single_pass"])
def test_strong_decay_is_exact_and_finite(backward):
    """Decays down to exp(-160) per step: no division by a decay anywhere (the backward uses h_t - x_t)."""
    inputs = make_inputs(1, 2, 40, 4, 1, strong_decay=True)
    got = run(selective_scan_triton, inputs, chunk_length=16, backward=backward)
    assert all(torch.isfinite(t).all() for t in got.values())
    want = run(reference, {n: t.double() for n, t in inputs.items()})
    assert_matches({n: t.double() for n, t in got.items()}, want, what="strong decay")


@needs_interpreter
@pytest.mark.parametrize("forward", ["two_pass", "single_pass"])
@pytest.mark.parametrize("K", [4, 3])
def test_packed_directions_in_one_launch(K, forward, monkeypatch):
    """K scan directions stacked along channels with B/C grouped by direction (VMamba SS2D: K = 4; SegMamba: 3):
    one launch per kernel, and each direction equals the reference run on that direction alone."""
    per_dir = 2
    inputs = make_inputs(1, K * per_dir, 24, 2, K)
    launches = []
    kernel_type = type(_kernels(True)._fwd_chunk_kernel)
    original = kernel_type.__getitem__
    monkeypatch.setattr(kernel_type, "__getitem__",
                        lambda self, grid: launches.append((self.fn.__name__, grid)) or original(self, grid))
    got = run(selective_scan_triton, inputs, chunk_length=16, forward=forward)
    per_chunk = [(name, grid) for name, grid in launches if name != "_chunk_combine_kernel"]
    # the forward (two passes, or one), the backward's carry pass and gradient pass: each one launch over all K
    # directions (channel blocks of one direction each, or for the single pass one program per channel)
    forward_kernels = (["_fwd_chunk_kernel", "_fwd_chunk_kernel"] if forward == "two_pass" else
                       ["_fwd_single_pass_kernel"])
    assert [name for name, _ in per_chunk] == forward_kernels + ["_bwd_chunk_carry_kernel", "_bwd_chunk_kernel"]
    assert all(grid[1] == (K * per_dir if name == "_fwd_single_pass_kernel" else K) for name, grid in per_chunk)
    assert_matches(got, run(reference, inputs), what=f"K={K}")
    for k in range(K):  # direction k alone: channels k*per_dir ... with group k of B/C
        rows = slice(k * per_dir, (k + 1) * per_dir)
        alone = reference(inputs["u"][:, rows], inputs["delta"][:, rows], inputs["A"][rows], inputs["B"][:, k],
                          inputs["C"][:, k], D=inputs["D"][rows], z=inputs["z"][:, rows],
                          delta_bias=inputs["delta_bias"][rows], delta_softplus=True)
        torch.testing.assert_close(got["out"][:, rows], alone, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shape, expected", [
    ((1, 48, 32768, 16, 1), ("two_pass", 2, 4)),  # 3D: few channels, long L (H200: two-pass 2x faster)
    ((1, 96, 4096, 16, 1), ("single_pass", 4, 4)),
    ((1, 192, 1024, 16, 1), ("single_pass", 4, 4)),
    ((1, 768, 4096, 16, 4), ("single_pass", 2, 2)),  # SS2D packed
    ((16, 96, 4096, 16, 1), ("single_pass", 2, 2)),
])
def test_default_launch_settings_follow_the_gpu_sweep(shape, expected):
    """The defaults reproduce the fastest settings of benchmarks/results/triton_tune_h200.md (or within 5 %)."""
    from mambaseg.ops._triton import _Launch

    b, d, length, n, g = shape
    u, A = torch.empty(b, d, length), torch.empty(d, n)
    B = torch.empty(b, n, length) if g == 1 else torch.empty(b, g, n, length)
    launch = _Launch(u, A, B, B, None, None, None, True, chunk_length=None, block_d=16, block_d_backward=8,
                     forward="auto", block_t=None, num_warps=None, num_warps_backward=None)
    assert (launch.forward, launch.num_warps, launch.num_warps_backward) == expected
    assert launch.block_t == (128 if b * d >= 384 else 256) and launch.T == 64


@needs_interpreter
@pytest.mark.parametrize("backward", ["chunk_parallel", "single_pass"])
def test_bf16_inputs_accumulate_in_fp32(backward):
    inputs = {n: t.to(torch.bfloat16) for n, t in make_inputs(1, 4, 24, 4, 2).items()}
    got = run(selective_scan_triton, inputs, chunk_length=16, backward=backward)
    assert got["out"].dtype == torch.bfloat16 and got["last"].dtype == torch.float32
    want = run(reference, {n: t.double() for n, t in inputs.items()})  # same rounded inputs, exact arithmetic
    assert_matches({n: t.double() for n, t in got.items()}, want, rtol=3e-2, atol=5e-2, what="bf16")


@needs_interpreter
def test_availability_and_errors(monkeypatch):
    u = torch.zeros(1, 2, 3)
    assert triton_available(u)
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not triton_available(u)  # CPU tensors without the interpreter
    inputs = make_inputs(1, 2, 3, 2, 1)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        selective_scan_triton(*(inputs[n] for n in NAMES[:5]))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    out = selective_scan_triton(*(inputs[n] for n in NAMES[:5]), D=inputs["D"])  # no last state asked: a tensor
    torch.testing.assert_close(out, reference(*(inputs[n] for n in NAMES[:5]), D=inputs["D"]), rtol=RTOL, atol=ATOL)
    with pytest.raises(ValueError, match="chunk_length must be a power of two"):
        selective_scan_triton(*(inputs[n] for n in NAMES[:5]), chunk_length=24)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="num_stages_serial must be a positive int"):
            selective_scan_triton(*(inputs[n] for n in NAMES[:5]), num_stages_serial=bad)
    with pytest.raises(ValueError, match="argument 'A'"):
        selective_scan_triton(*(inputs[n] for n in NAMES[:2]), inputs["A"][:1], inputs["B"], inputs["C"])


def _python(code: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True,
                          timeout=600)


def test_every_kernel_compiles_for_the_gpu():
    """Every kernel variant builds to an sm_90 (H100) cubin without a GPU: catches what the interpreter lets pass.
    In a subprocess, since compiling needs Triton imported in compiled mode."""
    code = ("from mambaseg.ops._triton import compile_for_gpu\n"
            "compiled = compile_for_gpu(90)\n"
            "assert len(compiled) == 12 and all('cubin' in c.asm for c in compiled.values())\n")
    result = _python(code)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.skipif(INTERPRETED, reason="ran in this process (Triton is in interpreter mode here)")
def test_interpreter_tests_in_a_subprocess():
    result = subprocess.run([sys.executable, "-m", "pytest", __file__, "-x", "-q", "-p", "no:cacheprovider",
                             "-k", "not subprocess and not compiles and not cuda"],
                            env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-1000:]


@pytest.mark.skipif(not torch.cuda.is_available() or INTERPRETED,
                    reason="needs a CUDA GPU and Triton in compiled mode (the compiled kernels, full grid)")
@pytest.mark.parametrize("stages", [1, 3], ids=["stages1", "pipelined"])
@pytest.mark.parametrize("forward, backward", [("two_pass", "chunk_parallel"), ("single_pass", "chunk_parallel"),
                                               ("single_pass", "single_pass")])
def test_cuda_forward_backward_full_grid(monkeypatch, forward, backward, stages):
    """Compiled kernels on the GPU, many programs per axis (batch, channel blocks, chunks) vs the reference; the
    single pass in tiles of 128 steps, each holding two chunks of 64, the last tile running past L = 1000; every
    loop as written and software-pipelined (what the interpreter cannot check)."""
    monkeypatch.delenv("TRITON_INTERPRET")
    inputs = {n: t.cuda() for n, t in make_inputs(2, 64, 1000, 16, 4).items()}
    assert triton_available(inputs["u"])
    got = run(selective_scan_triton, inputs, chunk_length=64, block_d=8, forward=forward, block_t=128,
              backward=backward, num_stages=stages, num_stages_serial=stages)
    assert_matches(got, run(reference, inputs), rtol=6e-4, atol=2e-3, what=f"cuda {forward} {backward} {stages}")


@pytest.mark.skipif(not torch.cuda.is_available() or INTERPRETED,
                    reason="needs a CUDA GPU and Triton in compiled mode")
@pytest.mark.parametrize("stages", [1, 3], ids=["stages1", "pipelined"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("block_c, n_chunks", [(16, 300), (128, 511)])
def test_cuda_chunk_combine_over_several_tiles(monkeypatch, reverse, block_c, n_chunks, stages):
    """The compiled combine carries its state over tiles of chunks (the full grid above fits one tile); 511 chunks
    in tiles of 128 is the 3D shape's launch (L = 32768 in chunks of 64), here with 48 channels x 16 states."""
    monkeypatch.delenv("TRITON_INTERPRET")
    check_combine(monkeypatch, reverse, block_c, n_chunks, device="cuda", stages=stages, dim=48, n_state=16)
